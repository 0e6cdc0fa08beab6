"""Shared checks for the real-client end-to-end tests: what every queued event must look like."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.conftest import gw_events
from tests.support.procs import wait_for
from tests.support.workspace import WEB_KEY

E2E_DIR = Path(__file__).resolve().parent
NODE_MODULES = E2E_DIR / "node_modules"
WEB_SOURCE_ID = "src-web"  # the source of WEB_KEY in tests/support/workspace.py
LOCAL_IP = "127.0.0.1"
MS = timedelta(milliseconds=1)

__all__ = ["WEB_KEY", "WEB_SOURCE_ID", "LOCAL_IP", "E2E_DIR", "NODE_MODULES", "parse_ts", "trunc_ms",
           "wait_events", "by_message_id", "assert_enriched", "assert_skew_corrected", "decode_body"]


def parse_ts(value: str) -> datetime:
    """ISO-8601 (with Z or an offset) to an aware UTC datetime."""
    assert isinstance(value, str) and value, f"not a timestamp: {value!r}"
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert dt.tzinfo is not None, f"timestamp without a zone: {value!r}"
    return dt.astimezone(UTC)


def trunc_ms(dt: datetime) -> datetime:
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)


def wait_events(conn, count: int, timeout: float = 15.0) -> list[dict]:
    """Poll the gateway queue until it holds at least `count` events; return them all."""
    def enough():
        events = gw_events(conn)
        return events if len(events) >= count else None

    return wait_for(enough, timeout=timeout, what=f"{count} events in gw_jobs")


def by_message_id(events: list[dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for ev in events:
        assert ev["messageId"] not in out, f"messageId {ev['messageId']} queued twice"
        out[ev["messageId"]] = ev
    return out


def decode_body(body: bytes | str | None, headers) -> dict:
    """The JSON a client put on the wire (gunzipped when it said Content-Encoding: gzip)."""
    if isinstance(body, str):
        body = body.encode()
    if (headers.get("Content-Encoding") or "").lower() == "gzip":
        body = gzip.decompress(body)
    return json.loads(body)


def assert_skew_corrected(ev: dict) -> None:
    """timestamp = receivedAt - (sentAt - originalTimestamp), to the millisecond (each field is ms-truncated)."""
    received, sent = parse_ts(ev["receivedAt"]), parse_ts(ev["sentAt"])
    original, ts = parse_ts(ev["originalTimestamp"]), parse_ts(ev["timestamp"])
    expected = received - (sent - original)
    assert abs(ts - expected) <= 2 * MS, (
        f"timestamp {ev['timestamp']} != receivedAt {ev['receivedAt']} - (sentAt {ev['sentAt']} - "
        f"originalTimestamp {ev['originalTimestamp']}) = {expected.isoformat()}")


def assert_enriched(ev: dict, *, sent: dict, sent_at: str | None, library: str, window: tuple[datetime, datetime],
                    source_id: str = WEB_SOURCE_ID) -> None:
    """`ev` is the queued form of the client message `sent` (as it was on the wire)."""
    mid = sent["messageId"]
    assert ev["messageId"] == mid
    assert ev["type"] == sent["type"], mid
    for key in ("userId", "anonymousId"):
        if sent.get(key) is not None:
            assert ev[key] == sent[key], (mid, key)
    assert ev.get("userId") or ev.get("anonymousId"), mid
    assert ev["_source_id"] == source_id, mid
    assert ev["_user_key"] == (sent.get("userId") or sent.get("anonymousId")), mid
    assert ev["request_ip"] == LOCAL_IP, mid
    assert ev["context"]["library"]["name"] == library, mid
    assert "writeKey" not in ev, f"{mid}: writeKey must not be queued with the event"

    received = parse_ts(ev["receivedAt"])
    start, end = window
    assert trunc_ms(start) - MS <= received <= end + MS, f"{mid}: receivedAt {ev['receivedAt']} outside the test"

    client_ts = sent.get("originalTimestamp") or sent.get("timestamp")
    assert client_ts, f"{mid}: the client sent no timestamp"
    assert parse_ts(ev["originalTimestamp"]) == trunc_ms(parse_ts(client_ts)), (
        f"{mid}: originalTimestamp {ev['originalTimestamp']} is not the client's timestamp {client_ts}")
    client_sent_at = sent.get("sentAt") or sent_at
    assert client_sent_at, f"{mid}: the client sent no sentAt"
    assert parse_ts(ev["sentAt"]) == trunc_ms(parse_ts(client_sent_at)), (
        f"{mid}: sentAt {ev['sentAt']} is not the client's sentAt {client_sent_at}")
    assert_skew_corrected(ev)

    for key in ("properties", "traits"):
        if sent.get(key):
            assert ev[key] == sent[key], (mid, key)
    for key in ("event", "name", "category", "groupId", "previousId"):
        if sent.get(key) is not None:
            assert ev[key] == sent[key], (mid, key)
    if (sent.get("context") or {}).get("traits"):
        assert ev["context"]["traits"] == sent["context"]["traits"], mid
