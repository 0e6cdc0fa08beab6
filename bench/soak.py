"""The long run: a million events through gateway → processor → router → a local sink, with the default
settings, watching what a short benchmark cannot see — throughput over time, the queue's size on disk
over time (flat once finished datasets are dropped), memory, and the gateway's latency while the janitor
drops datasets.

Run by hand:  .venv/bin/python bench/soak.py [--events 1000000] [--rate 5000] [--retention-hours 0]
The one setting changed from the defaults is the retention (0 h instead of 24 h), so that datasets are
dropped within the run; everything else (100,000 jobs per dataset, leases, batch sizes) is as shipped.
Traffic goes to 127.0.0.1 only, paced and bounded.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import psycopg2
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import WRITE_KEY, database, tree_rss_mb  # noqa: E402
from bench.pipeline import sink_main, workspace  # noqa: E402
from tests.support.procs import SluiceProcess, free_port, wait_for  # noqa: E402

WINDOW = 10.0  # seconds per line of the time series


def load(url: str, total: int, rate: float, batch: int, threads: int, calls: list, stop: threading.Event) -> None:
    """Send `total` events in batches at about `rate` events/s; record (send time, latency, status) per call."""
    per_thread = total // threads
    interval = batch * threads / rate

    def run(tid: int) -> None:
        s = requests.Session()
        s.auth = (WRITE_KEY, "")
        n = 0
        next_at = time.monotonic()
        while n < per_thread and not stop.is_set():
            k = min(batch, per_thread - n)
            t0 = time.time()
            body = json.dumps({"batch": [
                {"type": "track", "userId": f"user-{tid}-{(n + i) % 500}", "event": "Product Viewed",
                 "messageId": f"m-{tid}-{n + i}", "properties": {"t0": t0, "seq": n + i, "sku": "s1"}}
                for i in range(k)]})
            started = time.monotonic()
            r = s.post(url + "/v1/batch", data=body, headers={"Content-Type": "application/json"}, timeout=30)
            calls.append((t0, time.monotonic() - started, r.status_code, k))
            if r.status_code == 200:
                n += k
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))

    ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def queue_bytes(conn) -> tuple[int, int]:
    """On-disk bytes of the queue tables (all their datasets, indexes included) and the dataset count."""
    with conn.cursor() as cur:
        cur.execute("SELECT coalesce(sum(pg_total_relation_size(i.inhrelid)), 0), count(*) FROM pg_inherits i "
                    "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname IN ('gw_jobs', 'rt_jobs', 'batch_rt_jobs')")
        size, n = cur.fetchone()
    return int(size), int(n)


def drop_times(procs: list[SluiceProcess]) -> list[float]:
    """When the janitor dropped datasets (from the processes' JSON logs), as Unix times."""
    out = []
    for p in procs:
        for line in p.output().splitlines():
            if '"dropped finished dataset"' in line:
                out.append(datetime.fromisoformat(json.loads(line)["ts"].replace("Z", "+00:00")).timestamp())
    return sorted(out)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--rate", type=float, default=5000, help="offered load, events/s")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--retention-hours", type=float, default=0.0)
    args = ap.parse_args()
    sink_port = free_port()
    arrivals: mp.Queue = mp.Queue()
    ready = mp.Event()
    sink = mp.Process(target=sink_main, args=(sink_port, arrivals, ready), daemon=True)
    sink.start()
    ready.wait(10)
    sink_url = f"http://127.0.0.1:{sink_port}"
    with database() as dsn, tempfile.TemporaryDirectory() as tmp:
        config = workspace(Path(tmp) / "workspace.json", "AM", sink_url)
        port = free_port()
        env = {"SLUICE_DATABASE_URL": dsn, "SLUICE_PORT": str(port), "SLUICE_HOST": "127.0.0.1",
               "SLUICE_CONFIG": str(config), "SLUICE_LOG_LEVEL": "INFO",
               "SLUICE_RETENTION_HOURS": str(args.retention_hours),
               "SLUICE_ENDPOINT_OVERRIDES": json.dumps({"https://api2.amplitude.com": sink_url})}
        procs = [SluiceProcess(role, env, Path(tmp)) for role in ("gateway", "processor", "router")]
        url = f"http://127.0.0.1:{port}"
        stop = threading.Event()
        try:
            wait_for(lambda: requests.get(url + "/version", timeout=1).ok, 30, what="gateway")
            arrived: list[tuple[float, int]] = []  # (arrival time, events)
            series: list[tuple[float, int, int, float]] = []  # (time, queue bytes, datasets, RSS MB)

            def drain() -> None:
                while not stop.is_set() or not arrivals.empty():
                    try:
                        stamps, now = arrivals.get(timeout=0.2)
                    except Exception:  # noqa: BLE001 - queue.Empty
                        continue
                    arrived.append((now, len(stamps)))

            def monitor() -> None:
                conn = psycopg2.connect(dsn)
                conn.autocommit = True
                while not stop.is_set():
                    size, n = queue_bytes(conn)
                    series.append((time.time(), size, n, sum(tree_rss_mb(p.pid) for p in procs)))
                    stop.wait(5.0)
                conn.close()

            threading.Thread(target=drain, daemon=True).start()
            threading.Thread(target=monitor, daemon=True).start()
            calls: list[tuple[float, float, int, int]] = []
            start = time.time()
            load(url, args.events, args.rate, args.batch, args.threads, calls, stop)
            accepted = sum(k for _, _, status, k in calls if status == 200)
            deadline = time.monotonic() + 600
            while sum(n for _, n in arrived) < accepted and time.monotonic() < deadline:
                time.sleep(0.5)
            settle = time.monotonic() + 90  # the janitor's last rounds: finished datasets go
            while time.monotonic() < settle and (not series or series[-1][2] > 9):
                time.sleep(1)
            stop.set()
            time.sleep(1)
            delivered = sum(n for _, n in arrived)
            end = max((t for t, _ in arrived), default=time.time())
            print(f"{accepted} events accepted, {delivered} delivered in {end - start:.0f} s "
                  f"({delivered / (end - start):.0f} events/s end to end; offered {args.rate:.0f}/s)")
            print(f"peak RSS of gateway + processor + router: {max((s[3] for s in series), default=0):.0f} MB")
            drops = drop_times(procs)
            print(f"datasets dropped: {len(drops)}")
            lat = [d for _, d, status, _ in calls if status == 200]
            near = [d for t, d, status, _ in calls if status == 200 and any(abs(t - x) < 1.0 for x in drops)]
            print(f"gateway latency per 100-event request: p50 {percentile(lat, .5) * 1000:.0f} ms, "
                  f"p99 {percentile(lat, .99) * 1000:.0f} ms overall; p99 {percentile(near, .99) * 1000:.0f} ms "
                  f"within 1 s of a dataset drop ({len(near)} requests)")
            errors = sum(1 for _, _, status, _ in calls if status != 200)
            print(f"requests not answered 200: {errors}")
            print(f"{'t (s)':>6} {'delivered/s':>12} {'queue MB':>9} {'datasets':>9} {'RSS MB':>7}")
            t = start
            while t < end + WINDOW:
                n = sum(k for a, k in arrived if t <= a < t + WINDOW)
                snap = [s for s in series if t <= s[0] < t + WINDOW]
                if snap:
                    print(f"{t - start:>6.0f} {n / WINDOW:>12.0f} {snap[-1][1] / 1e6:>9.0f} {snap[-1][2]:>9} "
                          f"{snap[-1][3]:>7.0f}")
                t += WINDOW
            if delivered < accepted:
                print(f"ERROR: {accepted - delivered} accepted events not delivered")
                return 1
        finally:
            stop.set()
            for proc in procs:
                proc.stop()
            sink.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
