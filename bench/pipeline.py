"""End to end: load generator → gateway → processor → router → a local sink, all on this machine.

Run by hand:  .venv/bin/python bench/pipeline.py [--dest AM|WEBHOOK] [--events 50000] [--rate 6000]
                                                [--admin-page]
Prints events/s delivered end to end and the latency from acceptance at the gateway to arrival at the
sink (p50/p99). Postgres runs with synchronous_commit on. Traffic goes to 127.0.0.1 only, bounded.
With --admin-page, `sluice admin` runs too with its page open (overview reloaded every 10 s, the live tail
streaming): the admin's CPU and the statements it ran are printed (bench/admin_page.py compares).
SLUICE_BENCH_PAGE_PARTS=overview or =live opens one part of the page alone, to see what each costs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import WRITE_KEY, database, postgres_cpu, tree_rss_mb  # noqa: E402
from bench.gateway import cpu_seconds  # noqa: E402
from tests.support.admin_client import open_page  # noqa: E402
from tests.support.procs import SluiceProcess, free_port, wait_for  # noqa: E402


def sink_main(port: int, out: mp.Queue, ready: mp.Event) -> None:
    """A destination stand-in: answers 200 and reports (event send time, arrival time) per event."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *a):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            now = time.time()
            try:
                doc = json.loads(body)
                events = doc.get("events") if isinstance(doc, dict) and "events" in doc else [doc]
                stamps = []
                for e in events:
                    props = e.get("event_properties") or e.get("properties") or {}
                    if "t0" in props:
                        stamps.append(props["t0"])
                out.put((stamps, now))
            except ValueError:
                pass
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    ready.set()
    server.serve_forever()


def workspace(path: Path, dest: str, sink: str) -> Path:
    if dest == "AM":
        d = {"id": "dst-am", "name": "Amplitude", "enabled": True, "config": {"apiKey": "bench-key"},
             "destinationDefinition": {"name": "AM", "displayName": "Amplitude",
                                       "config": {"supportedMessageTypes": ["track", "identify", "page"]}}}
    else:
        d = {"id": "dst-hook", "name": "Webhook", "enabled": True, "config": {"webhookUrl": sink + "/hook"},
             "destinationDefinition": {"name": "WEBHOOK", "displayName": "Webhook"}}
    path.write_text(json.dumps({"workspaceId": "bench", "sources": [{
        "id": "src-bench", "name": "bench", "writeKey": WRITE_KEY, "enabled": True,
        "sourceDefinition": {"name": "HTTP"}, "destinations": [d]}]}))
    return path


def load(url: str, total: int, rate: float, batch: int, threads: int, sent: list) -> None:
    """Send `total` events in batches, paced to about `rate` events/s, from a few threads."""
    per_thread = total // threads
    interval = batch * threads / rate

    def run(tid: int) -> None:
        s = requests.Session()
        s.auth = (WRITE_KEY, "")
        n = 0
        next_at = time.monotonic()
        while n < per_thread:
            k = min(batch, per_thread - n)
            t0 = time.time()
            body = {"batch": [{"type": "track", "userId": f"user-{tid}-{(n + i) % 500}", "event": "Product Viewed",
                               "messageId": f"m-{tid}-{n + i}", "properties": {"t0": t0, "seq": n + i, "sku": "s1"}}
                              for i in range(k)]}
            r = s.post(url + "/v1/batch", data=json.dumps(body), headers={"Content-Type": "application/json"},
                       timeout=30)
            if r.status_code == 200:
                sent.append(k)
                n += k
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))

    ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dest", choices=["AM", "WEBHOOK"], default="AM")
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--rate", type=float, default=6000, help="offered load, events/s")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--admin-page", action="store_true",
                    help="also run sluice admin with its page open (overview reloads, live tail)")
    args = ap.parse_args()
    sink_port = free_port()
    arrivals: mp.Queue = mp.Queue()
    ready = mp.Event()
    sink = mp.Process(target=sink_main, args=(sink_port, arrivals, ready), daemon=True)
    sink.start()
    ready.wait(10)
    sink_url = f"http://127.0.0.1:{sink_port}"
    with database() as dsn, tempfile.TemporaryDirectory() as tmp:
        config = workspace(Path(tmp) / "workspace.json", args.dest, sink_url)
        port = free_port()
        env = {"SLUICE_DATABASE_URL": dsn, "SLUICE_PORT": str(port), "SLUICE_HOST": "127.0.0.1",
               "SLUICE_CONFIG": str(config), "SLUICE_LOG_LEVEL": "WARNING",
               "SLUICE_ENDPOINT_OVERRIDES": json.dumps({"https://api2.amplitude.com": sink_url})}
        roles = ["gateway", "processor", "router"]
        if args.admin_page:
            admin_port = free_port()
            env.update({"SLUICE_ADMIN_TOKEN": "bench-admin-token-0123456789", "SLUICE_ADMIN_PORT": str(admin_port)})
            roles.append("admin")
        procs = [SluiceProcess(role, env, Path(tmp)) for role in roles]
        url = f"http://127.0.0.1:{port}"
        page_cm = contextlib.nullcontext()
        try:
            wait_for(lambda: requests.get(url + "/version", timeout=1).ok, 30, what="gateway")
            if args.admin_page:
                parts = tuple(os.environ.get("SLUICE_BENCH_PAGE_PARTS", "overview,live").split(","))
                page_cm = open_page(f"http://127.0.0.1:{admin_port}", env["SLUICE_ADMIN_TOKEN"], parts=parts)
            page = page_cm.__enter__()
            stats_before = page.stats() if page else None
            sent: list[int] = []
            latencies: list[float] = []
            arrived_at: list[float] = []
            stop = threading.Event()
            peak = {"mb": 0.0}

            def drain() -> None:
                while not stop.is_set() or not arrivals.empty():
                    try:
                        stamps, now = arrivals.get(timeout=0.2)
                    except Exception:  # noqa: BLE001 - queue.Empty
                        continue
                    latencies.extend(now - t for t in stamps)
                    arrived_at.extend([now] * len(stamps))
                    peak["mb"] = max(peak["mb"], sum(tree_rss_mb(p.pid) for p in procs))

            collector = threading.Thread(target=drain, daemon=True)
            collector.start()
            depths: list[tuple[float, int, int]] = []

            def monitor() -> None:
                import psycopg2

                conn = psycopg2.connect(dsn)
                conn.autocommit = True
                while not stop.is_set():
                    with conn.cursor() as cur:
                        cur.execute("SELECT (SELECT count(*) FROM gw_jobs WHERE state = 0), "
                                    "(SELECT count(*) FROM rt_jobs WHERE state = 0)")
                        gw, rt = cur.fetchone()
                    depths.append((time.time() - t_start, gw, rt))
                    stop.wait(2.0)
                conn.close()

            t_start = time.time()
            cpu_before = {p.role: cpu_seconds([p.pid]) for p in procs}
            pg_before = postgres_cpu(dsn)
            threading.Thread(target=monitor, daemon=True).start()
            start = time.time()
            load(url, args.events, args.rate, args.batch, args.threads, sent)
            load_done = time.time()
            total = sum(sent)
            deadline = time.monotonic() + 300
            while len(latencies) < total and time.monotonic() < deadline:
                time.sleep(0.2)
            stop.set()
            collector.join(5)
            pg_cpu = postgres_cpu(dsn) - pg_before
            delivered = len(latencies)
            span = (max(arrived_at) - start) if arrived_at else float("nan")
            lat = sorted(latencies)
            p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")  # noqa: E731
            print(f"destination {args.dest}: {total} events accepted in {load_done - start:.1f}s "
                  f"(offered {args.rate:.0f}/s, {args.batch}-event batches, {args.threads} client threads)")
            print(f"delivered {delivered} events; end-to-end {delivered / span:.0f} events/s over {span:.1f}s")
            print(f"acceptance-to-delivery latency: p50 {p(0.5):.0f} ms, p99 {p(0.99):.0f} ms")
            print(f"peak memory of gateway + processor + router: {peak['mb']:.0f} MB")
            cpu = {p.role: cpu_seconds([p.pid]) - cpu_before[p.role] for p in procs}
            print("CPU seconds used: " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items())
                  + "; per delivered event: " + ", ".join(f"{k} {v / max(delivered, 1) * 1e6:.0f} us"
                                                         for k, v in cpu.items()))
            print(f"Postgres CPU seconds: {pg_cpu:.1f}; per delivered event {pg_cpu / max(delivered, 1) * 1e6:.0f} us")
            if page:
                stats_after = page.stats()
                statements = stats_after["statements"]["statements"] - stats_before["statements"]["statements"]
                print(f"admin page: {statements} statements in {span:.1f}s = {statements / span:.1f} statements/s; "
                      f"admin CPU {cpu['admin']:.1f}s = {cpu['admin'] / span * 100:.1f}% of a core; "
                      f"live tail received {page.items} items, {page.sampled} not shown (sampled); "
                      f"{page.overviews} overview loads; errors: {page.errors[:3] or 'none'}")
            print("pending (s: gw, rt): " + "  ".join(f"{t:.0f}: {g}, {r}" for t, g, r in depths[::3]))
            if delivered < total:
                print(f"ERROR: {total - delivered} accepted events not delivered within the deadline")
                return 1
        finally:
            page_cm.__exit__(None, None, None)
            for proc in procs:
                proc.stop()
            sink.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
