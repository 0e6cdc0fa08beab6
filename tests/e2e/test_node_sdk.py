"""The real @segment/analytics-node client (run with node) against a real gateway process."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from datetime import UTC, datetime, timedelta

from tests.e2e.helpers import (
    E2E_DIR,
    NODE_MODULES,
    WEB_KEY,
    assert_enriched,
    by_message_id,
    parse_ts,
    wait_events,
)

SCRIPT = E2E_DIR / "send_segment_node.mjs"

def run_node(gateway_url: str, run: str, old_ts: str) -> list[dict]:
    assert shutil.which("node"), "node is required for the end-to-end tests"
    assert (NODE_MODULES / "@segment" / "analytics-node").is_dir(), "run `make test-deps` (npm ci in tests/e2e)"
    proc = subprocess.run(["node", str(SCRIPT), gateway_url, WEB_KEY, run, old_ts], cwd=E2E_DIR,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"node failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def test_segment_node_all_types(gateway, db):
    run = uuid.uuid4().hex[:8]
    start = datetime.now(UTC)
    old_ts = (start - timedelta(hours=2)).replace(microsecond=456000)
    lines = run_node(gateway.url, run, old_ts.isoformat().replace("+00:00", "Z"))
    end = datetime.now(UTC)

    errors = [ln for ln in lines if ln["kind"] == "error"]
    assert not errors, errors
    requests_ = [ln for ln in lines if ln["kind"] == "request"]
    responses = [ln for ln in lines if ln["kind"] == "response"]
    assert requests_ and len(responses) == len(requests_)
    assert [r["status"] for r in responses] == [200] * len(responses), responses
    for r in requests_:
        assert r["url"] == gateway.url + "/v1/batch"
        assert r["headers"]["Authorization"].startswith("Basic ")
        assert r["body"]["writeKey"] == WEB_KEY

    sent = {}
    for r in requests_:
        for msg in r["body"]["batch"]:
            sent[msg["messageId"]] = (msg, r["body"]["sentAt"])
    (done,) = [ln for ln in lines if ln["kind"] == "done"]
    assert sorted(done["delivered"]) == sorted(sent), "every callback reports a delivered event"
    assert sorted(m["type"] for m, _ in sent.values()) == sorted(
        ["track", "identify", "page", "screen", "group", "alias"])

    events = by_message_id(wait_events(db, len(sent)))
    assert set(events) == set(sent)
    for mid, (msg, sent_at) in sent.items():
        assert mid.startswith("node-next-")
        assert_enriched(events[mid], sent=msg, sent_at=sent_at, library="@segment/analytics-node", window=(start, end))

    by_type = {ev["type"]: ev for ev in events.values()}
    track = by_type["track"]
    assert track["userId"] == f"node-user-{run}" and track["event"] == "Order Completed"
    assert track["properties"] == {"orderId": "o-1", "revenue": 99.5, "items": [{"sku": "x", "qty": 2}]}
    assert parse_ts(track["originalTimestamp"]) == old_ts
    assert timedelta(hours=1, minutes=59) < parse_ts(track["receivedAt"]) - parse_ts(track["timestamp"]) \
        < timedelta(hours=2, minutes=1)
    assert by_type["identify"]["traits"] == {"email": "grace@example.com", "plan": "team"}
    page = by_type["page"]
    assert page["anonymousId"] == f"node-anon-{run}" and "userId" not in page
    assert page["name"] == "Pricing" and page["properties"]["path"] == "/pricing"
    assert by_type["screen"]["name"] == "Settings"
    assert by_type["group"]["groupId"] == "org-7" and by_type["group"]["traits"]["seats"] == 10
    assert by_type["alias"]["previousId"] == f"node-anon-{run}"
    assert by_type["alias"]["userId"] == f"node-user-{run}"
    assert all(ev["_metadata"]["jsRuntime"] == "node" for ev in events.values())
