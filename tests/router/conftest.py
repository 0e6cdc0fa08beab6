"""Router test helpers: delivery jobs made by the real destination transformers, a real `sluice router`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from jobsdb.queue import DeliveryRow, enqueue_delivery, partition_of
from tests.support import workspace as ws
from tests.support.fake_destination import FakeDestination
from tests.support.procs import SluiceProcess, wait_for
from transformers import destinations

PARTITIONS = 16


def track(user: str, seq: int, event: str = "Clicked", **props) -> dict:
    return {"type": "track", "userId": user, "event": event, "messageId": f"{user}-{seq}",
            "properties": {"seq": seq, **props}, "timestamp": "2026-11-23T10:00:00.000Z",
            "originalTimestamp": "2026-11-23T10:00:00.000Z", "receivedAt": "2026-11-23T10:00:00.000Z",
            "context": {"library": {"name": "test"}}}


def enqueue(conn, dest_id: str, dest_type: str, config: dict, events: list[dict], source_id: str = "src-web") -> None:
    """What the processor stores: the event and its delivery requests, one row per (event, destination)."""
    now = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    rows = []
    for e in events:
        user = e.get("userId") or e.get("anonymousId")
        rows.append(DeliveryRow(partition_of(user, PARTITIONS), dest_id, source_id, user, e["messageId"], {
            "event": e, "requests": destinations.transform(dest_type, e, config, now), "dest_type": dest_type,
            "source_id": source_id, "destination_id": dest_id}))
    with conn.cursor() as cur:
        enqueue_delivery(cur, "rt_jobs", rows)
    conn.commit()


def rt_states(conn) -> dict[str, int]:
    with conn.cursor() as cur:
        cur.execute("SELECT message_id, state FROM rt_jobs")
        out = dict(cur.fetchall())
    conn.commit()
    return out


def failed(conn) -> list[dict]:
    with conn.cursor() as cur:
        cur.execute("SELECT stage, destination_id, message_id, reason, status_code, response, attempts, event "
                    "FROM failed_jobs ORDER BY id")
        cols = [d[0] for d in cur.description]
        rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    conn.commit()
    return rows


class RouterHarness:
    def __init__(self, dsn: str, tmp: Path):
        self.dsn, self.tmp = dsn, tmp
        self.procs: list[SluiceProcess] = []

    def config(self, destinations_: list[dict]) -> Path:
        return ws.write(self.tmp / "workspace-config.json", ws.basic_workspace(destinations_))

    def start(self, fake: FakeDestination, overrides: dict | None = None, **settings) -> SluiceProcess:
        env = {"SLUICE_DATABASE_URL": self.dsn, "SLUICE_CONFIG": str(self.tmp / "workspace-config.json"),
               "SLUICE_CONFIG_POLL_INTERVAL": "0.2", "SLUICE_LEASE_SECONDS": "6", "SLUICE_ROUTER_MIN_BACKOFF": "0.2",
               "SLUICE_ROUTER_MAX_BACKOFF": "0.5", "SLUICE_ROUTER_TIMEOUT": "2", "SLUICE_LOG_LEVEL": "INFO",
               "SLUICE_ENDPOINT_OVERRIDES": json.dumps(overrides or {
                   "https://api2.amplitude.com": fake.url, "https://api.eu.amplitude.com": fake.url,
                   "https://www.google-analytics.com": fake.url, "https://region1.google-analytics.com": fake.url})}
        env.update({f"SLUICE_{k.upper()}": str(v) for k, v in settings.items()})
        proc = SluiceProcess("router", env, self.tmp)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for p in self.procs:
            p.stop()


@pytest.fixture
def harness(dsn, tmp_path):
    h = RouterHarness(dsn, tmp_path)
    yield h
    h.stop_all()


@pytest.fixture
def fake():
    with FakeDestination() as f:
        yield f


__all__ = ["track", "enqueue", "rt_states", "failed", "wait_for"]
