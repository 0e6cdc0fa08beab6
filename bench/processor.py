"""Processor throughput: pre-fill the gateway queue with N events, time one processor draining it.

Run by hand:  .venv/bin/python bench/processor.py [--events 20000] [--dest-types WEBHOOK,GA4,AM]

Scenarios: {no transformation, a small transformation on every destination} x {1, 3 destinations per
source}. The processor runs in this process (the same Processor class `sluice processor` runs), one
claim → pipeline → commit loop, dedup on, durable commits. Prints events/s (gateway jobs drained per
second) and delivery jobs written per second.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import database, workspace  # noqa: E402
from config.settings import load_settings  # noqa: E402
from config.workspace import WorkspaceWatcher  # noqa: E402
from jobsdb.migrate import migrate  # noqa: E402
from jobsdb.queue import GW_PARTITIONS, GatewayRow, enqueue_gw, partition_of  # noqa: E402
from processor.run import Processor  # noqa: E402

SMALL_TRANSFORMATION = """
export function transformEvent(event, metadata) {
  const m = metadata(event);
  event.properties = event.properties || {};
  event.properties.plan_tier = (event.properties.plan || "free").toUpperCase();
  event.context = event.context || {};
  event.context.sluice = { source: m.sourceId, destination: m.destinationId };
  if (event.event === "Internal Ping") return null;
  return event;
}
"""

CONFIGS = {
    "WEBHOOK": ("Webhook", {"webhookUrl": "http://127.0.0.1:9/hook", "webhookMethod": "POST"}),
    "GA4": ("Google Analytics 4", {"measurementId": "G-BENCH", "apiSecret": "s", "typesOfClient": "gtag"}),
    "AM": ("Amplitude", {"apiKey": "bench-key"}),
    "GA": ("Google Analytics", {"trackingID": "UA-1-1"}),
}


def destinations(types: list[str], count: int, transformation: bool) -> list[dict]:
    out = []
    for i in range(count):
        kind = types[i % len(types)]
        display, config = CONFIGS[kind]
        d = {"id": f"dest-{i}", "name": f"{kind} {i}", "enabled": True, "config": config,
             "destinationDefinition": {"name": kind, "displayName": display}, "transformations": []}
        if transformation:
            d["transformations"] = [{"id": f"tr-{i}", "versionId": f"tr-{i}-v1", "code": SMALL_TRANSFORMATION}]
        out.append(d)
    return out


def fill(dsn: str, n: int) -> None:
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    with contextlib.closing(psycopg2.connect(dsn)) as conn:
        for start in range(0, n, 10_000):
            rows = []
            for i in range(start, min(n, start + 10_000)):
                user = f"user-{i % 5000}"
                event = {"type": "track", "event": "Product Viewed", "userId": user, "anonymousId": f"anon-{i % 5000}",
                         "messageId": str(uuid.uuid4()), "properties": {"sku": f"sku-{i % 100}", "price": 9.99,
                                                                        "plan": "pro"},
                         "context": {"library": {"name": "bench"}, "ip": "10.0.0.1"},
                         "timestamp": now, "originalTimestamp": now, "sentAt": now, "receivedAt": now,
                         "request_ip": "10.0.0.1"}
                rows.append(GatewayRow(partition_of(user, GW_PARTITIONS), "src-bench", user, json.dumps(event), now))
            with conn.cursor() as cur:
                enqueue_gw(cur, rows)
            conn.commit()


def fresh_database(admin_dsn: str, name: str) -> str:
    with contextlib.closing(psycopg2.connect(admin_dsn)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
            cur.execute(f'CREATE DATABASE "{name}"')
    dsn = psycopg2.extensions.make_dsn(admin_dsn, dbname=name)
    migrate(dsn)
    return dsn


def run_scenario(admin_dsn: str, tmp: Path, n: int, types: list[str], dests: int, transformation: bool,
                 batch_size: int, transform_batch_size: int | None = None) -> dict:
    dsn = fresh_database(admin_dsn, f"bench_processor_{dests}_{int(transformation)}")
    config = workspace(tmp / f"ws-{dests}-{int(transformation)}.json", destinations(types, dests, transformation))
    fill(dsn, n)
    settings = dataclasses.replace(load_settings(env={}), database_url=dsn, config=str(config),
                                   processor_batch_size=batch_size)
    if transform_batch_size is not None:
        settings = dataclasses.replace(settings, transform_batch_size=transform_batch_size)
    watcher = WorkspaceWatcher(config, poll_interval=3600)
    processor = Processor(settings, watcher)
    try:
        # Warm-up outside the timing: connect, take the leases, compile the transformations.
        processor.leases.refresh(processor.db.get())
        source = watcher.current.source_by_id("src-bench")
        for dest in source.destinations:
            if dest.transformation is not None:
                processor.user_js.compile(source.workspace_id, dest.transformation.version_id,
                                          dest.transformation.code)
        started = time.perf_counter()
        processor.run(until_idle=True)
        elapsed = time.perf_counter() - started
    finally:
        processor.user_js.close()
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FILTER (WHERE state = 0), count(*) FROM gw_jobs")
        pending, total = cur.fetchone()
        cur.execute("SELECT count(*) FROM rt_jobs")
        rt = cur.fetchone()[0]
        cur.execute("SELECT count(*) FROM failed_jobs")
        failed = cur.fetchone()[0]
    assert pending == 0 and total == n, (pending, total)
    return {"events": n, "destinations": dests, "transformation": transformation, "seconds": elapsed,
            "events_per_s": n / elapsed, "jobs_per_s": rt / elapsed, "rt_jobs": rt, "failed": failed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--transform-batch-size", type=int, default=None,
                        help="events per V8 call (default: the setting's default)")
    parser.add_argument("--dest-types", default="WEBHOOK",
                        help="comma-separated destination types used round-robin (WEBHOOK, GA4, AM, GA)")
    args = parser.parse_args()
    types = [t.strip().upper() for t in args.dest_types.split(",") if t.strip()]
    results = []
    with database() as admin_dsn, tempfile.TemporaryDirectory(prefix="sluice-bench-proc-") as tmp:
        for transformation in (False, True):
            for dests in (1, 3):
                r = run_scenario(admin_dsn, Path(tmp), args.events, types, dests, transformation, args.batch_size,
                                 args.transform_batch_size)
                results.append(r)
                label = f"{'small transformation' if transformation else 'no transformation':<21} x {dests} dest"
                print(f"{label}: {r['events_per_s']:>8,.0f} events/s  {r['jobs_per_s']:>8,.0f} delivery jobs/s  "
                      f"({r['events']} events in {r['seconds']:.2f}s, {r['failed']} failed)", flush=True)
    print(f"destination types: {','.join(types)}; batch size {args.batch_size}; "
          f"transform batch size {args.transform_batch_size or load_settings(env={}).transform_batch_size}; "
          "one processor process")
    return 0


if __name__ == "__main__":
    sys.exit(main())
