"""Gateway throughput and latency, durably (acknowledged after commit, synchronous_commit on).

Run by hand:  .venv/bin/python bench/gateway.py [--duration 10]
Needs wrk (Debian package `wrk`). Targets 127.0.0.1 only; every run is bounded in time.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import psutil
import psycopg2
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import WRITE_KEY, database, tree_rss_mb, workspace  # noqa: E402
from tests.support.procs import SluiceProcess, free_port, wait_for  # noqa: E402

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Basic %(auth)s"
local n = 0
request = function()
  n = n + 1
  local body = %(body)s
  return wrk.format(nil, "%(path)s", nil, body)
end
"""

TRACK = ('string.format(\'{"userId":"user-%d","event":"Order Completed","properties":{"revenue":%d,'
         '"currency":"EUR","plan":"pro"},"context":{"library":{"name":"bench"}},'
         '"timestamp":"2026-11-23T10:00:00.000Z"}\', n % 5000, n)')


def batch_body(size: int) -> str:
    """A Lua expression building a {"batch": [...]} body of `size` track events for request n."""
    return ("(function() local items = {} for i = 1, %d do items[i] = string.format("  # noqa: UP031 - Lua text is full of braces
            "'{\"type\":\"track\",\"userId\":\"user-%%d\",\"event\":\"Product Viewed\","
            "\"properties\":{\"sku\":\"sku-%%d\",\"price\":9.99},"
            "\"timestamp\":\"2026-11-23T10:00:00.000Z\"}', (n * %d + i) %% 5000, i) end "
            "return '{\"batch\":[' .. table.concat(items, ',') .. ']}' end)()") % (size, size)


def run_wrk(url: str, path: str, body_expr: str, connections: int, duration: int, threads: int = 2) -> dict:
    auth = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(LUA % {"auth": auth, "body": body_expr, "path": path})
        script = fh.name
    try:
        proc = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--latency",
                              "--timeout", "10s", "-s", script, url], capture_output=True, text=True,
                             timeout=duration + 60)
        if proc.returncode != 0 or proc.stderr.strip():
            raise SystemExit(f"wrk failed: {proc.stderr.strip() or proc.stdout}")
        out = proc.stdout
    finally:
        os.unlink(script)
    res = {"raw": out}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non2xx"] = int(m.group(1)) if m else 0
    for label, pct in (("p50", "50%"), ("p99", "99%")):
        m = re.search(rf"\s{re.escape(pct)}\s+([\d.]+)(us|ms|s)", out)
        if m:
            value, unit = float(m.group(1)), m.group(2)
            res[label] = value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    return res


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes and their children (gateway workers, Postgres backends)."""
    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for p in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    t = p.cpu_times()
                    total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def postgres_pids(dsn: str) -> list[int]:
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_postmaster_start_time()")
        cur.execute("SELECT setting FROM pg_settings WHERE name = 'data_directory'")
        data_dir = cur.fetchone()[0]
    pid_file = Path(data_dir) / "postmaster.pid"
    return [int(pid_file.read_text().split()[0])] if pid_file.exists() else []


def count_rows(dsn: str) -> int:
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM gw_jobs")
        return cur.fetchone()[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=32)
    ap.add_argument("--worker-class", default="gthread", choices=["gthread", "gevent"])
    ap.add_argument("--batch-size", type=int, default=100)
    args = ap.parse_args()
    with database() as dsn, tempfile.TemporaryDirectory() as tmp:
        config = workspace(Path(tmp) / "workspace.json")
        port = free_port()
        gw = SluiceProcess("gateway", {
            "SLUICE_DATABASE_URL": dsn, "SLUICE_PORT": str(port), "SLUICE_HOST": "127.0.0.1",
            "SLUICE_CONFIG": str(config), "SLUICE_GATEWAY_WORKERS": str(args.workers),
            "SLUICE_GATEWAY_THREADS": str(args.threads), "SLUICE_GATEWAY_WORKER_CLASS": args.worker_class,
            "SLUICE_LOG_LEVEL": "WARNING"}, Path(tmp))
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: requests.get(url + "/version", timeout=1).ok, 30, what="gateway")
            peak = {"mb": 0.0}
            stop = threading.Event()

            def sample():
                while not stop.is_set():
                    peak["mb"] = max(peak["mb"], tree_rss_mb(gw.pid))
                    stop.wait(0.2)

            threading.Thread(target=sample, daemon=True).start()
            shape = f"{args.workers} workers x {args.threads} threads" if args.worker_class == "gthread" else \
                f"{args.workers} workers"
            print(f"gateway: gunicorn {args.worker_class}, {shape}; "
                  f"Postgres synchronous_commit=on; {os.cpu_count()} cores shared by load generator, gateway and Postgres")
            results = []
            scenarios = [("single /v1/track", "/v1/track", TRACK, 32, 1),
                         ("single /v1/track", "/v1/track", TRACK, 128, 1),
                         (f"/v1/batch x{args.batch_size}", "/v1/batch", batch_body(args.batch_size), 32,
                          args.batch_size)]
            pg = postgres_pids(dsn)
            for name, path, body, conns, per_req in scenarios:
                before = count_rows(dsn)
                gw_cpu, pg_cpu = cpu_seconds([gw.pid]), cpu_seconds(pg)
                r = run_wrk(url, path, body, conns, args.duration)
                gw_cpu, pg_cpu = cpu_seconds([gw.pid]) - gw_cpu, cpu_seconds(pg) - pg_cpu
                stored = count_rows(dsn) - before
                ok = r["requests"] - r["non2xx"]
                r.update(name=name, conns=conns, events_s=r["rps"] * per_req, stored=stored, expected=ok * per_req)
                results.append(r)
                print(f"{name:<18} c={conns:<4} {r['rps']:>9.0f} req/s {r['events_s']:>9.0f} events/s  "
                      f"p50 {r.get('p50', 0):6.2f} ms  p99 {r.get('p99', 0):7.2f} ms  non-2xx {r['non2xx']}  "
                      f"stored {stored} (>= {ok * per_req} acknowledged)")
                if stored:
                    print(f"{'':<18} CPU per event: gateway {gw_cpu / stored * 1e6:.0f} us, "
                          f"Postgres {pg_cpu / stored * 1e6:.0f} us")
            stop.set()
            print(f"peak gateway memory (master + workers): {peak['mb']:.0f} MB")
            lost = [r for r in results if r["stored"] < r["expected"]]
            if lost:
                print("ERROR: fewer rows stored than acknowledged", json.dumps([(r["name"], r["stored"],
                                                                                 r["expected"]) for r in lost]))
                return 1
        finally:
            gw.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
