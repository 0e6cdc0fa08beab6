"""Helpers for processor tests: gateway rows written straight into gw_jobs, real `sluice processor`
processes, and readers of what they wrote."""

from __future__ import annotations

import contextlib
import datetime
import itertools
import json
import uuid
from collections import Counter
from pathlib import Path

import psycopg2

from jobsdb.queue import GW_PARTITIONS, GatewayRow, enqueue_gw, partition_of
from tests.support import workspace as ws
from tests.support.procs import SluiceProcess, wait_for

_seq = itertools.count()


def event(name: str = "Clicked", user: str = "u1", kind: str = "track", **extra) -> dict:
    """An event as the gateway stores it (enriched)."""
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    e = {"type": kind, "messageId": extra.pop("messageId", f"m-{uuid.uuid4()}"), "userId": user,
         "anonymousId": f"anon-{user}", "receivedAt": now, "timestamp": now, "originalTimestamp": now,
         "sentAt": now, "context": {"library": {"name": "test"}}, "properties": {}}
    if kind == "track":
        e["event"] = name
    e.update(extra)
    return e


def insert_gw(dsn: str, events: list[dict], source_id: str = "src-web", part: int | None = None) -> None:
    """Put events into the gateway queue as the gateway would (one transaction, COPY)."""
    rows = []
    for e in events:
        user_key = str(e.get("userId") or e.get("anonymousId") or "")
        p = partition_of(user_key, GW_PARTITIONS) if part is None else part
        rows.append(GatewayRow(p, source_id, user_key, json.dumps(e), e.get("receivedAt", "now")))
    with contextlib.closing(psycopg2.connect(dsn)) as conn:
        with conn.cursor() as cur:
            enqueue_gw(cur, rows)
        conn.commit()


def query(dsn: str, sql: str, args=None) -> list[tuple]:
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def pending_gw(dsn: str) -> int:
    return query(dsn, "SELECT count(*) FROM gw_jobs WHERE state = 0")[0][0]


def rt_jobs(dsn: str, table: str = "rt_jobs") -> list[dict]:
    rows = query(dsn, f"SELECT job_id, part, destination_id, source_id, user_key, message_id, payload FROM {table} "
                      "ORDER BY job_id")
    keys = ("job_id", "part", "destination_id", "source_id", "user_key", "message_id", "payload")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def per_destination(dsn: str, table: str = "rt_jobs") -> Counter:
    """(destination_id, message_id) -> number of delivery jobs."""
    return Counter((r[0], r[1]) for r in query(dsn, f"SELECT destination_id, message_id FROM {table}"))


def failed_jobs(dsn: str) -> list[dict]:
    rows = query(dsn, "SELECT stage, source_id, destination_id, destination_type, message_id, event, payload, reason, "
                      "attempts, original_job_id, original_queue FROM failed_jobs ORDER BY id")
    keys = ("stage", "source_id", "destination_id", "destination_type", "message_id", "event", "payload", "reason",
            "attempts", "original_job_id", "original_queue")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def filtered(dsn: str) -> dict[tuple[str, str, str], int]:
    return {(s, d, r): n for s, d, r, n in query(dsn, "SELECT source_id, destination_id, rule, count "
                                                     "FROM filtered_counts")}


def start_processor(dsn: str, config: Path, log_dir: Path, **settings) -> SluiceProcess:
    env = {"SLUICE_DATABASE_URL": dsn, "SLUICE_CONFIG": str(config), "SLUICE_CONFIG_POLL_INTERVAL": "0.1",
           "SLUICE_PROCESSOR_IDLE_SLEEP": "0.02", "SLUICE_LOG_LEVEL": "DEBUG"}
    env.update({f"SLUICE_{k.upper()}": str(v) for k, v in settings.items()})
    return SluiceProcess("processor", env, log_dir)


def drain(dsn: str, *procs: SluiceProcess, timeout: float = 60) -> None:
    def done():
        for p in procs:
            assert p.alive(), f"processor exited:\n{p.output()[-5000:]}"
        return pending_gw(dsn) == 0

    wait_for(done, timeout=timeout, what="the gateway queue to drain")


def workspace_file(tmp_path: Path, destinations: list[dict]) -> Path:
    return ws.write(tmp_path / "workspace-config.json", ws.basic_workspace(destinations))


def with_transformation(dest: dict, code: str, tid: str = "tr-1", version: str = "v1") -> dict:
    dest["transformations"] = [{"id": tid, "versionId": version, "name": tid, "code": code, "config": {}}]
    return dest


def ga4(dest_id: str, **extra) -> dict:
    return ws.destination(dest_id, "GA4", "Google Analytics 4",
                          {"measurementId": "G-TEST123", "apiSecret": "secret", "typesOfClient": "gtag"},
                          message_types=["track", "group", "page"], **extra)


def postgres(dest_id: str, **extra) -> dict:
    return ws.destination(dest_id, "POSTGRES", "Postgres",
                          {"host": "localhost", "port": "5432", "database": "wh", "user": "wh", "password": "x",
                           "namespace": "analytics", "sslMode": "disable"}, **extra)


def hook(dest_id: str, display: str = "Webhook", config: dict | None = None, **extra) -> dict:
    config = {"webhookUrl": f"http://127.0.0.1:9/{dest_id}", "webhookMethod": "POST", **(config or {})}
    return ws.destination(dest_id, "WEBHOOK", display, config, **extra)
