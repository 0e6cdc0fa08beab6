"""Warehouse loading: the batch router's rows/s from a pre-filled queue next to a plain COPY into the same
server, and the whole pipeline's events/s with a POSTGRES destination next to GA4 and Amplitude.

Run by hand:  .venv/bin/python bench/warehouse.py [--events 50000] [--pipeline-events 30000]
Everything on this machine (the warehouse is a second database on the same embedded Postgres);
destination traffic goes to a local sink on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing as mp
import sys
import tempfile
import threading
import time
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import WRITE_KEY, database  # noqa: E402
from bench.pipeline import sink_main  # noqa: E402
from jobsdb import datasets  # noqa: E402
from jobsdb.queue import DeliveryRow, enqueue_delivery, partition_of  # noqa: E402
from tests.support.procs import SluiceProcess, free_port, wait_for  # noqa: E402

PROPS = 10


def event(n: int) -> dict:
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"type": "track", "event": "Product Viewed", "userId": f"user-{n % 1000}", "anonymousId": f"a-{n % 1000}",
            "messageId": f"m-{n}", "receivedAt": now, "timestamp": now, "originalTimestamp": now, "sentAt": now,
            "channel": "server", "context": {"library": {"name": "bench", "version": "1"}, "ip": "10.0.0.1"},
            "properties": {f"p{k}": (n * k if k % 2 else f"v{k}-{n}") for k in range(PROPS)}}


def warehouse_db(dsn: str, name: str) -> tuple[str, dict]:
    with contextlib.closing(psycopg2.connect(dsn)) as conn:
        conn.autocommit = True
        conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.cursor().execute(f'CREATE DATABASE "{name}"')
    parts = urllib.parse.urlsplit(dsn)
    config = {"host": parts.hostname, "port": str(parts.port), "database": name, "user": parts.username,
              "password": parts.password or "", "namespace": "bench", "sslMode": "disable"}
    return urllib.parse.urlunsplit(parts._replace(path="/" + name)), config


def workspace(path: Path, destinations: list[dict]) -> Path:
    path.write_text(json.dumps({"workspaceId": "bench", "sources": [{
        "id": "src-bench", "name": "bench", "writeKey": WRITE_KEY, "enabled": True,
        "sourceDefinition": {"name": "HTTP"}, "destinations": destinations}]}))
    return path


def pg_dest(config: dict) -> dict:
    return {"id": "dst-pg", "name": "Warehouse", "enabled": True, "config": config,
            "destinationDefinition": {"name": "POSTGRES", "displayName": "PostgreSQL"}}


def plain_copy(wh_dsn: str, n: int) -> float:
    """Rows/s of one COPY of n rows of the same width (common + context + property columns) into a plain table."""
    cols = [f"c{i}" for i in range(30)]
    with contextlib.closing(psycopg2.connect(wh_dsn)) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE plain_copy (" + ", ".join(f"{c} text" for c in cols) + ")")
        buf = io.StringIO("".join("\t".join(f"value-{i}-{c}" for c in cols) + "\n" for i in range(n)))
        started = time.monotonic()
        cur.copy_expert("COPY plain_copy FROM STDIN", buf)
        conn.commit()
        return n / (time.monotonic() - started)


def bench_loader(dsn: str, tmp: Path, n: int) -> None:
    wh_dsn, config = warehouse_db(dsn, "bench_wh_loader")
    conf = workspace(tmp / "loader.json", [pg_dest(config)])
    with contextlib.closing(psycopg2.connect(dsn)) as conn:
        datasets.ensure(conn, "batch_rt_jobs")
        for start in range(0, n, 5000):
            rows = [DeliveryRow(partition_of(e["userId"], 16), "dst-pg", "src-bench", e["userId"], e["messageId"],
                                {"event": e, "requests": None, "dest_type": "POSTGRES", "source_id": "src-bench",
                                 "destination_id": "dst-pg"})
                    for e in (event(i) for i in range(start, min(n, start + 5000)))]
            with conn.cursor() as cur:
                enqueue_delivery(cur, "batch_rt_jobs", rows)
            conn.commit()
            datasets.ensure(conn, "batch_rt_jobs")
    env = {"SLUICE_DATABASE_URL": dsn, "SLUICE_CONFIG": str(conf), "SLUICE_LOG_LEVEL": "WARNING",
           "SLUICE_WAREHOUSE_SYNC_SECONDS": "0.2", "SLUICE_WAREHOUSE_BATCH_SIZE": "20000"}
    router = SluiceProcess("router", env, tmp)
    started = time.monotonic()
    try:
        def done() -> bool:
            with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM batch_rt_jobs WHERE state = 0")
                return cur.fetchone()[0] == 0
        wait_for(done, 600, interval=0.2, what="the queue loaded")
        elapsed = time.monotonic() - started
    finally:
        router.stop()
    with contextlib.closing(psycopg2.connect(wh_dsn)) as conn, conn.cursor() as cur:
        cur.execute("SELECT (SELECT count(*) FROM bench.tracks) + (SELECT count(*) FROM bench.product_viewed)")
        rows = cur.fetchone()[0]
    copy_rate = plain_copy(wh_dsn, rows)
    print(f"batch router: {n} events -> {rows} rows in {elapsed:.1f} s: {n / elapsed:,.0f} events/s, "
          f"{rows / elapsed:,.0f} rows/s (start-up included)")
    print(f"plain COPY of {rows} rows of 30 text columns into the same server: {copy_rate:,.0f} rows/s "
          f"(the loader reaches {rows / elapsed / copy_rate:.0%} of it)")


def bench_pipeline(dsn: str, tmp: Path, n: int, rate: float, with_warehouse: bool) -> float:
    sink_port = free_port()
    q: mp.Queue = mp.Queue()
    ready = mp.Event()
    sink = mp.Process(target=sink_main, args=(sink_port, q, ready), daemon=True)
    sink.start()
    ready.wait(10)
    sink_url = f"http://127.0.0.1:{sink_port}"
    dests = [
        {"id": "dst-am", "name": "Amplitude", "enabled": True, "config": {"apiKey": "k"},
         "destinationDefinition": {"name": "AM", "displayName": "Amplitude"}},
        {"id": "dst-ga4", "name": "GA4", "enabled": True,
         "config": {"apiSecret": "s", "measurementId": "G-BENCH", "typesOfClient": "gtag"},
         "destinationDefinition": {"name": "GA4", "displayName": "Google Analytics 4"}},
    ]
    if with_warehouse:
        _, config = warehouse_db(dsn, "bench_wh_pipeline")
        dests.append(pg_dest(config))
    conf = workspace(tmp / f"pipeline-{with_warehouse}.json", dests)
    port = free_port()
    env = {"SLUICE_DATABASE_URL": dsn, "SLUICE_PORT": str(port), "SLUICE_HOST": "127.0.0.1", "SLUICE_CONFIG": str(conf),
           "SLUICE_LOG_LEVEL": "WARNING", "SLUICE_WAREHOUSE_SYNC_SECONDS": "5",
           "SLUICE_ENDPOINT_OVERRIDES": json.dumps({"https://api2.amplitude.com": sink_url,
                                                    "https://www.google-analytics.com": sink_url})}
    procs = [SluiceProcess(role, env, tmp) for role in ("gateway", "processor", "router")]
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(url + "/version", timeout=1).ok, 30, what="gateway")
        started = time.monotonic()
        per_thread, threads, batch = n // 4, 4, 100
        interval = batch * threads / rate

        def client(tid: int) -> None:
            s = requests.Session()
            s.auth = (WRITE_KEY, "")
            next_at = time.monotonic()
            for k in range(0, per_thread, batch):
                body = {"batch": [{"type": "track", "userId": f"u-{tid}-{i % 300}", "event": "Product Viewed",
                                   "messageId": f"m-{tid}-{k + i}", "properties": {"sku": "s1", "price": 9.5, "n": i}}
                                  for i in range(batch)]}
                s.post(url + "/v1/batch", json=body, timeout=30)
                next_at += interval
                time.sleep(max(0.0, next_at - time.monotonic()))

        ts = [threading.Thread(target=client, args=(t,)) for t in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

        def drained() -> bool:
            with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
                cur.execute("SELECT (SELECT count(*) FROM gw_jobs WHERE state = 0) + (SELECT count(*) FROM rt_jobs "
                            "WHERE state = 0) + (SELECT count(*) FROM batch_rt_jobs WHERE state = 0)")
                return cur.fetchone()[0] == 0
        wait_for(drained, 600, interval=0.2, what="every queue drained")
        return n / (time.monotonic() - started)
    finally:
        for p in procs:
            p.stop()
        sink.terminate()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=50_000, help="events pre-filled for the loader")
    ap.add_argument("--pipeline-events", type=int, default=30_000)
    ap.add_argument("--rate", type=float, default=3000, help="offered load for the pipeline runs, events/s")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        with database() as dsn:
            bench_loader(dsn, Path(tmp), args.events)
        for with_warehouse in (False, True):
            with database() as dsn:
                rate = bench_pipeline(dsn, Path(tmp), args.pipeline_events, args.rate, with_warehouse)
            label = "GA4 + Amplitude + POSTGRES" if with_warehouse else "GA4 + Amplitude"
            print(f"pipeline, {label}: {rate:,.0f} events/s end to end (offered {args.rate:,.0f}/s, "
                  f"{args.pipeline_events} events, until every queue is empty)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
