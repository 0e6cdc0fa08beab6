"""Router throughput: fill rt_jobs with N jobs made by the real destination transformers, time one
`sluice router` draining them into a local sink.

Run by hand:  .venv/bin/python bench/router.py [--jobs 20000] [--dest AM|WEBHOOK]
Targets 127.0.0.1 only; bounded by --timeout.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import database  # noqa: E402
from bench.gateway import cpu_seconds  # noqa: E402
from bench.pipeline import sink_main  # noqa: E402
from tests.router.conftest import enqueue, track  # noqa: E402
from tests.support import workspace as ws  # noqa: E402
from tests.support.procs import SluiceProcess, free_port  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=20_000)
    ap.add_argument("--dest", choices=["AM", "WEBHOOK"], default="AM")
    ap.add_argument("--users", type=int, default=500)
    ap.add_argument("--timeout", type=float, default=300)
    args = ap.parse_args()
    port = free_port()
    arrivals: mp.Queue = mp.Queue()
    ready = mp.Event()
    sink = mp.Process(target=sink_main, args=(port, arrivals, ready), daemon=True)
    sink.start()
    ready.wait(10)
    url = f"http://127.0.0.1:{port}"
    with database() as dsn, tempfile.TemporaryDirectory() as tmp:
        conn = psycopg2.connect(dsn)
        if args.dest == "AM":
            config = {"apiKey": "bench-key"}
            dest = ws.destination("dst", "AM", "Amplitude", config)
        else:
            config = {"webhookUrl": url + "/hook"}
            dest = ws.webhook("dst", url + "/hook")
        ws.write(Path(tmp) / "workspace-config.json", ws.basic_workspace([dest]))
        events = [track(f"u{i % args.users}", i) for i in range(args.jobs)]
        for k in range(0, len(events), 5000):
            enqueue(conn, "dst", args.dest, config, events[k:k + 5000])
        env = {"SLUICE_DATABASE_URL": dsn, "SLUICE_CONFIG": str(Path(tmp) / "workspace-config.json"),
               "SLUICE_LOG_LEVEL": "WARNING",
               "SLUICE_ENDPOINT_OVERRIDES": json.dumps({"https://api2.amplitude.com": url})}
        start = time.time()
        router = SluiceProcess("router", env, Path(tmp))
        try:
            while time.time() - start < args.timeout:
                with conn.cursor() as cur:
                    cur.execute("SELECT count(*) FROM rt_jobs WHERE state = 0")
                    left = cur.fetchone()[0]
                conn.commit()
                if left == 0:
                    break
                time.sleep(0.2)
            elapsed = time.time() - start
            cpu = cpu_seconds([router.pid])
            print(f"{args.dest}: {args.jobs - left} of {args.jobs} jobs delivered in {elapsed:.1f}s -> "
                  f"{(args.jobs - left) / elapsed:.0f} jobs/s; router CPU {cpu / max(args.jobs - left, 1) * 1e6:.0f} us/job "
                  f"(start-up included)")
        finally:
            router.stop()
            sink.terminate()
    return 0 if left == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
