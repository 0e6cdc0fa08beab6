"""The group committer against a real Postgres: rejection records Postgres refuses never cost the
accepted rows their commit, and while Postgres is unreachable a request fails at once (503), it does
not wait out the reconnect backoff."""

from __future__ import annotations

import json

import pytest

from gateway.group_commit import DatabaseUnavailable, GroupCommitter
from jobsdb.queue import GatewayRow
from tests.conftest import gw_events
from tests.gateway.conftest import fetch
from tests.support.procs import free_port


def row(mid: str) -> GatewayRow:
    payload = json.dumps({"type": "track", "userId": "u", "event": "E", "messageId": mid})
    return GatewayRow(0, "src-web", "u", payload, "2026-01-01T00:00:00.000Z")


def rejected(reason: str, event_json: str | None = None, status=400) -> tuple:
    return ("src-web", "key", "127.0.0.1", "/v1/batch", status, reason, event_json, None)


@pytest.fixture
def committer(dsn):
    c = GroupCommitter(dsn, heartbeat_seconds=60).start()
    yield c
    c.stop()


def test_refused_rejection_records_are_degraded_then_dropped_never_the_commit(committer, dsn, db):
    # Not JSON: jsonb refuses it, the record is kept without its event.
    committer.submit([row("m1")], [rejected("bad json kept degraded", "{not json")])
    assert fetch(dsn, "SELECT reason, event FROM gw_rejected") == [("bad json kept degraded", None)]
    # Not even degraded can it be stored (status is no integer): dropped, the rows still commit.
    committer.submit([row("m2")], [rejected("unstorable", status="not a number")])
    assert [e["messageId"] for e in gw_events(db)] == ["m1", "m2"]
    assert [r[0] for r in fetch(dsn, "SELECT reason FROM gw_rejected ORDER BY id")] == ["bad json kept degraded"]
    # A NUL, had it slipped through: psycopg2 refuses it before sending; the rows commit regardless.
    committer.submit([row("m3")], [rejected("nul \x00 reason")])
    assert [e["messageId"] for e in gw_events(db)] == ["m1", "m2", "m3"]


def test_unreachable_postgres_fails_the_request_at_once():
    c = GroupCommitter(f"postgresql://nobody@127.0.0.1:{free_port()}/none", wait_timeout=120,
                       connect_grace=0.2).start()
    try:
        with pytest.raises(DatabaseUnavailable, match="unreachable"):  # not "timed out waiting"
            c.submit([row("m")])
        assert c.state()["online"] is False
    finally:
        c.stop()
