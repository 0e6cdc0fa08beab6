"""Real Python SDKs (segment-analytics-python, rudder-sdk-python) against a real gateway process.

Every call type goes through the unmodified client; the test reads the exact request bodies the client put
on the wire (a requests hook on the client's own session) and checks each event in gw_jobs against them.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
import segment.analytics as segment
import segment.analytics.request as segment_request

from tests.e2e.helpers import (
    WEB_KEY,
    assert_enriched,
    by_message_id,
    decode_body,
    parse_ts,
    wait_events,
)

# rudder-sdk-python calls load_dotenv() on import: keep a stray .env from leaking into this process
# (and into the gateway processes it starts).
_env_before = dict(os.environ)
import rudderstack.analytics as rudder  # noqa: E402
import rudderstack.analytics.request as rudder_request  # noqa: E402

for _k in set(os.environ) - set(_env_before):
    del os.environ[_k]
os.environ.update(_env_before)

PROPS = {"plan": "pro", "price": 12.5, "tags": ["a", "b"], "nested": {"deep": True, "n": None}}
TRAITS = {"email": "ada@example.com", "name": "Ada", "logins": 3, "address": {"city": "Paris"}}


@pytest.fixture
def wire():
    """Every request the Python SDKs send: (status, headers, decoded JSON body)."""
    seen: list[tuple[int, dict, dict]] = []

    def hook(resp, *args, **kwargs):
        seen.append((resp.status_code, dict(resp.request.headers), decode_body(resp.request.body, resp.request.headers)))

    sessions = (segment_request._session, rudder_request._session)
    for s in sessions:
        s.hooks["response"].append(hook)
    yield seen
    for s in sessions:
        s.hooks["response"].remove(hook)


def sent_messages(wire) -> dict[str, tuple[dict, str]]:
    """messageId -> (message as sent, the batch sentAt)."""
    out = {}
    for status, _headers, body in wire:
        assert status == 200, body
        for msg in body["batch"]:
            out[msg["messageId"]] = (msg, body["sentAt"])
    return out


def send_all(client, user: str, anon: str, old_ts: datetime) -> list[dict]:
    """One call of each type; returns the messages as the client built them."""
    calls = [
        client.track(user_id=user, event="Signed Up", properties=PROPS, timestamp=old_ts),
        client.identify(user_id=user, traits=TRAITS),
        client.page(anonymous_id=anon, category="Docs", name="Install", properties={"path": "/docs/install"}),
        client.screen(user_id=user, name="Home", properties={"tab": "feed"}),
        client.group(user_id=user, group_id="acme", traits={"name": "Acme", "employees": 42}),
        client.alias(previous_id=anon, user_id=user),
        client.track(anonymous_id=anon, event="Anonymous Click", properties={"button": "buy"}),
    ]
    messages = []
    for ok, msg in calls:
        assert ok, msg
        messages.append(msg)
    return messages


def check_queue(db, wire, messages, *, library: str, start: datetime, old_ts: datetime):
    end = datetime.now(UTC)
    events = by_message_id(wait_events(db, len(messages)))
    on_wire = sent_messages(wire)
    assert len(events) == len(messages) == len(on_wire)
    for msg in messages:
        assert msg["messageId"] in events, f"{msg['type']} {msg['messageId']} not queued"
        sent, sent_at = on_wire[msg["messageId"]]
        assert_enriched(events[msg["messageId"]], sent=sent, sent_at=sent_at, library=library, window=(start, end))

    # The back-dated track: originalTimestamp is the client's clock, timestamp is corrected by the
    # client's sentAt -> receivedAt delay, so it stays about an hour before receivedAt.
    old = events[messages[0]["messageId"]]
    assert parse_ts(old["originalTimestamp"]) == old_ts.replace(microsecond=old_ts.microsecond // 1000 * 1000)
    # Worked example, at the precision stored (the gateway computes from the full-precision values, so
    # the stored, ms-truncated fields may differ from the result by a millisecond or two).
    received, sent = parse_ts(old["receivedAt"]), parse_ts(old["sentAt"])
    skew = sent - parse_ts(old["originalTimestamp"])
    assert abs(parse_ts(old["timestamp"]) - (received - skew)) <= timedelta(milliseconds=2)
    assert timedelta(minutes=59) < skew < timedelta(minutes=61)
    assert timedelta(minutes=59) < received - parse_ts(old["timestamp"]) < timedelta(minutes=61)
    return events


def old_timestamp() -> datetime:
    return (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=123000)


def test_segment_python_sync_mode(gateway, db, wire):
    start, old_ts = datetime.now(UTC), old_timestamp()
    errors = []
    client = segment.Client(WEB_KEY, host=gateway.url, sync_mode=True, on_error=lambda e, b: errors.append((e, b)))
    messages = send_all(client, "py-seg-user", "py-seg-anon", old_ts)
    assert not errors
    # sync_mode: one request per call, each answered 200 before the call returned.
    assert len(wire) == len(messages)
    for _status, headers, body in wire:
        assert headers["Authorization"].startswith("Basic ")
        assert body["writeKey"] == WEB_KEY
    events = check_queue(db, wire, messages, library="analytics-python", start=start, old_ts=old_ts)
    ident = events[messages[1]["messageId"]]
    assert ident["traits"] == TRAITS and ident["userId"] == "py-seg-user"
    page = events[messages[2]["messageId"]]
    assert page["anonymousId"] == "py-seg-anon" and page.get("userId") is None
    assert page["name"] == "Install" and page["category"] == "Docs"
    assert events[messages[4]["messageId"]]["groupId"] == "acme"
    alias = events[messages[5]["messageId"]]
    assert alias["previousId"] == "py-seg-anon" and alias["userId"] == "py-seg-user"


def test_segment_python_batched_gzip(gateway, db, wire):
    start, old_ts = datetime.now(UTC), old_timestamp()
    errors = []
    client = segment.Client(WEB_KEY, host=gateway.url, gzip=True, upload_size=100, upload_interval=0.2,
                            on_error=lambda e, b: errors.append((e, b)))
    try:
        messages = send_all(client, "py-gz-user", "py-gz-anon", old_ts)
        client.flush()
    finally:
        client.shutdown()
    assert not errors, errors
    assert wire, "the client sent nothing"
    assert all(h.get("Content-Encoding") == "gzip" for _s, h, _b in wire)
    check_queue(db, wire, messages, library="analytics-python", start=start, old_ts=old_ts)


def test_rudder_python_gzip_default(gateway, db, wire):
    start, old_ts = datetime.now(UTC), old_timestamp()
    errors = []
    client = rudder.Client(WEB_KEY, host=gateway.url, upload_interval=0.2,
                           on_error=lambda e, b: errors.append((e, b)))
    try:
        messages = send_all(client, "py-rs-user", "py-rs-anon", old_ts)
        client.flush()
    finally:
        client.shutdown() if hasattr(client, "shutdown") else client.join()
    assert not errors, errors
    assert wire and all(h.get("Content-Encoding") == "gzip" for _s, h, _b in wire)
    assert all("writeKey" not in b for _s, _h, b in wire)  # Basic auth only
    events = check_queue(db, wire, messages, library="analytics-python", start=start, old_ts=old_ts)
    ident = events[messages[1]["messageId"]]
    assert ident["context"]["traits"] == TRAITS  # rudder puts identify traits in context.traits
    assert all(ev.get("channel") == "server" for ev in events.values())


def test_rudder_python_module_config(gateway, db, wire):
    """The documented module-level setup: rudder.write_key / rudder.dataPlaneUrl."""
    errors = []
    saved = (rudder.write_key, rudder.dataPlaneUrl, rudder.on_error, rudder.default_client)
    rudder.write_key, rudder.dataPlaneUrl = WEB_KEY, gateway.url
    rudder.on_error = lambda e, b: errors.append((e, b))
    rudder.default_client = None
    try:
        rudder.track(user_id="py-rs-mod", event="Module Track", properties={"k": "v"})
        rudder.flush()
    finally:
        if rudder.default_client is not None:
            rudder.default_client.join()
        rudder.write_key, rudder.dataPlaneUrl, rudder.on_error, rudder.default_client = saved
    assert not errors, errors
    (ev,) = wait_events(db, 1)
    assert ev["event"] == "Module Track" and ev["userId"] == "py-rs-mod" and ev["properties"] == {"k": "v"}
    assert ev["_source_id"] == "src-web" and ev["request_ip"] == "127.0.0.1"
