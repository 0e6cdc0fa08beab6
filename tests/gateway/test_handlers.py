"""Gateway pieces without a server or a database: one handler called directly (the Blueprint's
module-level functions), enrichment's timestamp fallback and depth limit, and rejection records."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from config.settings import load_settings
from config.workspace import load_workspace
from gateway import ingest
from gateway.app import create_app
from gateway.enrich import MAX_EVENT_DEPTH, InvalidEvent, enrich, parse_body
from gateway.rejections import RejectionLog, clean_text, excerpt
from gateway.state import Reject
from tests.support.workspace import WEB_KEY, basic_workspace, write


class FakeCommitter:
    def __init__(self):
        self.submitted: list = []
        self.recorded: list = []

    def submit(self, rows, rejected=()):
        self.submitted.append((list(rows), list(rejected)))

    def record_rejected(self, rows):
        self.recorded.extend(rows)

    def state(self):
        return {"commits": 0, "rows": 0, "online": True, "lastOkAgeS": None, "lastError": None}

    def stop(self):
        pass


@pytest.fixture
def app(tmp_path):
    class Holder:
        current = load_workspace(write(tmp_path / "workspace.json", basic_workspace()))

    settings = load_settings({"database_url": "postgresql://nowhere/none"}, env={})
    return create_app(settings, Holder(), FakeCommitter())


def auth(key: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def test_batch_handler_called_directly(app):
    committer = app.extensions["sluice"].committer
    body = {"batch": [{"type": "track", "userId": "u", "event": "E", "messageId": "m1"}, {"type": "track"}]}
    with app.test_request_context("/v1/batch", method="POST", data=json.dumps(body), headers=auth(WEB_KEY)):
        resp = ingest.batch()
    assert resp.status_code == 200 and resp.json["accepted"] == 1, resp.get_data(as_text=True)
    [(rows, rejected)] = committer.submitted
    assert [json.loads(r.payload_json)["messageId"] for r in rows] == ["m1"]
    assert len(rejected) == 1 and rejected[0][4] == 400 and rejected[0][0] == "src-web"

    with app.test_request_context("/v1/batch", method="POST", data=json.dumps(body), headers=auth("\x00nope")), \
            pytest.raises(Reject) as refused:
        ingest.batch()
    assert refused.value.status == 401


def event_times(**times) -> dict:
    event = {"type": "track", "userId": "u", "event": "E", **times}
    received = datetime(2026, 1, 1, tzinfo=UTC)
    enriched, _key, _payload = enrich(event, event_type=None, received_at=received, request_ip=None)
    return {k: enriched[k] for k in ("originalTimestamp", "sentAt", "timestamp", "receivedAt")}


@pytest.mark.parametrize("times, kept", [
    ({"timestamp": "9999-12-31T23:59:59-14:00"}, ("originalTimestamp", "9999-12-31T23:59:59-14:00")),
    ({"originalTimestamp": "0001-01-01T00:00:00+14:00"}, ("originalTimestamp", "0001-01-01T00:00:00+14:00")),
    ({"sentAt": "9999-12-31T23:59:59-14:00"}, ("sentAt", "9999-12-31T23:59:59-14:00")),
    ({"timestamp": "not a time"}, ("originalTimestamp", "not a time")),
])
def test_unusable_client_times_are_kept_and_timestamp_is_received_at(times, kept):
    out = event_times(**times)
    assert out[kept[0]] == kept[1]
    assert out["timestamp"] == out["receivedAt"] == "2026-01-01T00:00:00.000Z"


def test_skew_correction_out_of_range_falls_back():
    out = event_times(originalTimestamp="0001-01-02T00:00:00Z", sentAt="9999-12-30T00:00:00Z")
    assert out["timestamp"] == out["receivedAt"]


def deep(levels: int) -> bytes:
    """An event whose properties make it `levels` deep in all."""
    inner = "[" * (levels - 1) + "]" * (levels - 1)
    return f'{{"type":"track","userId":"u","event":"E","properties":{{"p":{inner[1:-1] or "1"}}}}}'.encode()


def test_depth_limit_and_bodies_deeper_than_any_parser():
    received = datetime(2026, 1, 1, tzinfo=UTC)
    for levels in (3, MAX_EVENT_DEPTH, MAX_EVENT_DEPTH + 1, 1000, 5000):
        event, exact = parse_body(deep(levels))
        if levels <= MAX_EVENT_DEPTH:
            enrich(event, event_type=None, received_at=received, request_ip=None, exact=exact)
        else:
            with pytest.raises(InvalidEvent, match="nested more than"):
                enrich(event, event_type=None, received_at=received, request_ip=None, exact=exact)


def test_rejection_records_are_storable_and_capped():
    assert clean_text("a\x00b\ud800", 100) == "ab\ufffd"
    assert len(clean_text("é" * 3000, 2048).encode()) <= 2048
    nested: list = []
    for _ in range(100_000):
        nested = [nested]
    text = excerpt({"k": nested, "s": "\x00\ud800", "n": 10 ** 3000}, 500)
    assert len(text) <= 500 and text.isascii()
    log = RejectionLog(per_minute=2, unauthenticated_bytes=100, clock=lambda: 0.0)
    rows = [log.record(source_id=None, write_key="k\x00", request_ip="ip", endpoint="/v1/t", status=401,
                       reason="invalid write key", body=b"x" * 5000) for _ in range(3)]
    assert rows[2] is None
    assert rows[0][1] == "k" and len(rows[0][7]) == 100 and rows[0][6] is None
