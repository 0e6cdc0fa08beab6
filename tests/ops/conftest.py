"""Helpers for the operator tests: dead letters written as the stages write them, `sluice` run as a real
subprocess, and readers of the queues replay writes into."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import psycopg2
import pytest

from config.workspace import load_workspace
from jobsdb.processing import FailedRow, insert_failed
from tests.support.fake_destination import FakeDestination
from tests.support.procs import ROOT, SluiceProcess, wait_for


def sql(dsn: str, statement: str, args=None) -> list[tuple]:
    with contextlib.closing(psycopg2.connect(dsn)) as conn:
        with conn.cursor() as cur:
            cur.execute(statement, args)
            rows = cur.fetchall() if cur.description else []
        conn.commit()
    return rows


def add_failed(dsn: str, *rows: FailedRow, failed_at: datetime | None = None) -> list[int]:
    """Insert dead letters; returns their ids in insertion order."""
    with contextlib.closing(psycopg2.connect(dsn)) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT coalesce(max(id), 0) FROM failed_jobs")
            before = cur.fetchone()[0]
            insert_failed(cur, rows)
            if failed_at is not None:
                cur.execute("UPDATE failed_jobs SET failed_at = %s, first_failed_at = %s WHERE id > %s",
                            (failed_at, failed_at, before))
            cur.execute("SELECT id FROM failed_jobs WHERE id > %s ORDER BY id", (before,))
            ids = [r[0] for r in cur.fetchall()]
        conn.commit()
    return ids


def ev(user: str, seq: int, name: str = "Clicked") -> dict:
    return {"type": "track", "event": name, "userId": user, "messageId": f"{user}-{seq}",
            "properties": {"seq": seq}, "receivedAt": "2026-11-23T10:00:00.000Z",
            "timestamp": "2026-11-23T10:00:00.000Z", "context": {"library": {"name": "test"}}}


def router_failure(dest: str, user: str, seq: int, status: int = 400, reason: str | None = None,
                   dest_type: str = "WEBHOOK", source: str = "src-web") -> FailedRow:
    e = ev(user, seq)
    return FailedRow(stage="router", source_id=source, destination_id=dest, destination_type=dest_type,
                     user_key=user, message_id=e["messageId"], event=e,
                     reason=reason or f"destination answered {status}: bad request", payload=[{"old": "request"}],
                     status_code=status, attempts=1, original_job_id=seq, original_queue="rt_jobs")


def transform_failure(dest: str, user: str, seq: int, stage: str = "user_transform", reason: str = "Error: boom",
                      source: str = "src-web") -> FailedRow:
    e = ev(user, seq, "Boom")
    return FailedRow(stage=stage, source_id=source, destination_id=dest, destination_type="WEBHOOK",
                     user_key=user, message_id=e["messageId"], event=e, reason=reason, attempts=1,
                     original_job_id=seq, original_queue="gw_jobs")


def failed_rows(dsn: str) -> list[dict]:
    rows = sql(dsn, "SELECT id, stage, destination_id, message_id, status_code, reason, replayed_at, replay_count, "
                    "replayed_into, replayed_by FROM failed_jobs ORDER BY id")
    keys = ("id", "stage", "destination_id", "message_id", "status_code", "reason", "replayed_at", "replay_count",
            "replayed_into", "replayed_by")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def queue_rows(dsn: str, table: str) -> list[dict]:
    assert table in ("gw_jobs", "rt_jobs", "batch_rt_jobs")
    cols = ("job_id", "part", "user_key", "payload", "state") + (
        ("destination_id", "message_id") if table != "gw_jobs" else ("source_id",))
    rows = sql(dsn, f"SELECT {', '.join(cols)} FROM {table} ORDER BY job_id")
    return [dict(zip(cols, r, strict=True)) for r in rows]


def sluice(dsn: str, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`sluice ARGS` as a real subprocess, with no terminal on stdin."""
    full_env = {**os.environ, "SLUICE_DATABASE_URL": dsn, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "ops.cli", *args], cwd=ROOT, env=full_env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def sluice_json(dsn: str, *args: str, env: dict | None = None):
    done = sluice(dsn, *args, "--json", env=env)
    assert done.returncode == 0, f"sluice {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)


def wait_config_applied(config: Path, *procs: SluiceProcess, timeout: float = 30) -> None:
    """Wait until every process logged that it applied this exact config file (its fingerprint)."""
    fingerprint = load_workspace(config).fingerprint[:12]

    def applied():
        for p in procs:
            assert p.alive(), f"{p.role} exited:\n{p.output()[-3000:]}"
        return all(f"applied ({fingerprint})" in p.output() for p in procs)

    wait_for(applied, timeout=timeout, what=f"every process to apply config {fingerprint}")


@pytest.fixture
def fake():
    with FakeDestination() as f:
        yield f


def start_router(dsn: str, config: Path, log_dir: Path, overrides: dict | None = None) -> SluiceProcess:
    """A real `sluice router` with short backoffs (the environment tests/router uses)."""
    env = {"SLUICE_DATABASE_URL": dsn, "SLUICE_CONFIG": str(config), "SLUICE_CONFIG_POLL_INTERVAL": "0.2",
           "SLUICE_LEASE_SECONDS": "6", "SLUICE_ROUTER_MIN_BACKOFF": "0.2", "SLUICE_ROUTER_MAX_BACKOFF": "0.5",
           "SLUICE_ROUTER_TIMEOUT": "2", "SLUICE_LOG_LEVEL": "INFO",
           "SLUICE_ENDPOINT_OVERRIDES": json.dumps(overrides or {})}
    return SluiceProcess("router", env, log_dir)


def start_processor(dsn: str, config: Path, log_dir: Path) -> SluiceProcess:
    env = {"SLUICE_DATABASE_URL": dsn, "SLUICE_CONFIG": str(config), "SLUICE_CONFIG_POLL_INTERVAL": "0.2",
           "SLUICE_PROCESSOR_IDLE_SLEEP": "0.02", "SLUICE_LOG_LEVEL": "INFO"}
    return SluiceProcess("processor", env, log_dir)
