"""`sluice transform`: a local preview of a user transformation or a destination payload, per input line."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.procs import ROOT

EVENTS = [
    {"type": "track", "event": "Clicked", "messageId": "m1", "userId": "u1", "anonymousId": "a1", "properties": {"n": 1}},
    {"type": "track", "event": "Drop Me", "messageId": "m2", "userId": "u1"},
    {"type": "track", "event": "Boom", "messageId": "m3", "userId": "u1"},
    {"type": "track", "event": "Twice", "messageId": "m4", "userId": "u1"},
]
CODE = """
export function transformEvent(event, metadata) {
  log("saw", metadata(event).messageId);
  if (event.event === "Drop Me") return null;
  if (event.event === "Boom") throw new Error("boom");
  if (event.event === "Twice") return [event, event];
  event.properties.changed = true;
  return event;
}
"""


def sluice(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ops.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def _write_events(tmp_path, extra_lines=()):
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join([json.dumps(e) for e in EVENTS] + list(extra_lines)) + "\n")
    return path


def test_user_transformation_preview(tmp_path):
    (tmp_path / "t.js").write_text(CODE)
    events = _write_events(tmp_path, ["{not json"])
    done = sluice("transform", "--transformation", str(tmp_path / "t.js"), "--events", str(events))
    assert done.returncode == 1, "an event threw and a line was not JSON"
    assert "2 of 5 events failed" in done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == 5
    assert lines[0] == {"index": 0, "messageId": "m1",
                        "outputs": [{**EVENTS[0], "properties": {"n": 1, "changed": True}}]}
    assert lines[1] == {"index": 1, "messageId": "m2", "dropped": True}
    assert lines[2]["error"].startswith("Error: boom\n    at transformEvent (base transformation:")
    assert len(lines[3]["outputs"]) == 2
    assert lines[4]["index"] == 4 and lines[4]["error"].startswith("invalid JSON")
    assert "saw m1" in done.stderr


def test_destination_preview(tmp_path):
    config = tmp_path / "ga4.json"
    config.write_text(json.dumps({"measurementId": "G-PREVIEW", "apiSecret": "s", "typesOfClient": "gtag"}))
    events = tmp_path / "events.jsonl"
    good = {**EVENTS[0], "timestamp": "2024-05-01T10:00:00Z"}
    bad = {"type": "track", "event": "Order Completed", "messageId": "m9", "userId": "u1",
           "timestamp": "2024-05-01T10:00:00Z", "properties": {}}
    events.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    done = sluice("transform", "--destination-type", "GA4", "--config", str(config), "--events", str(events),
                  "--now", "2024-05-01T12:00:00Z")
    assert done.returncode == 1, "the second event errors"
    first, second = (json.loads(line) for line in done.stdout.splitlines())
    assert first["index"] == 0 and first["messageId"] == "m1"
    [request] = first["requests"]
    assert request["params"]["measurement_id"] == "G-PREVIEW"
    assert request["body"]["JSON"]["events"][0]["name"] == "Clicked"
    assert second["index"] == 1 and "order_id" in second["error"] and second["status"] == 400


def test_transform_needs_one_mode(tmp_path):
    events = _write_events(tmp_path)
    done = sluice("transform", "--events", str(events))
    assert done.returncode != 0 and "exactly one" in done.stderr
    done = sluice("transform", "--destination-type", "NOPE", "--events", str(events))
    assert done.returncode != 0 and "unknown destination type" in done.stderr


def test_a_workspace_destination_end_to_end_with_exit_codes(tmp_path):
    """--destination takes the destination's config and transformation from the example workspace, as
    the processor would apply them; the exit code says whether every event went through."""
    good = [{"type": "track", "event": "Signed Up", "messageId": "g1", "userId": "u1", "anonymousId": "a1",
             "properties": {"plan": "pro"}},
            {"type": "identify", "messageId": "g2", "userId": "u1", "traits": {"email": "a@example.com"}}]
    path = tmp_path / "good.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in good) + "\n")
    done = sluice("transform", "--destination", "dst-web-ga4", "--workspace", str(ROOT / "workspace-config.json"),
                  "--events", str(path))
    assert done.returncode == 0, done.stderr
    first, second = (json.loads(x) for x in done.stdout.splitlines())
    [request] = first["requests"]
    assert request["params"]["measurement_id"] == "G-EXAMPLE0001"
    assert request["body"]["JSON"]["events"][0]["params"]["routed_by"] == "sluice", "its transformation ran"
    assert second["filtered"] == ["supported_message_types"], "GA4 takes no identify in the example"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"type": "track", "event": "No ids", "messageId": "b1", "userId": "u2"}) + "\n")
    done = sluice("transform", "--destination", "dst-web-ga4", "--workspace", str(ROOT / "workspace-config.json"),
                  "--events", str(bad))
    assert done.returncode == 1
    assert "anonymousId" in json.loads(done.stdout)["error"] and "1 of 1 events failed" in done.stderr
    missing = sluice("transform", "--destination", "nope", "--workspace", str(ROOT / "workspace-config.json"),
                     "--events", str(path))
    assert missing.returncode != 0 and "no destination 'nope'" in missing.stderr and "dst-web-ga4" in missing.stderr


def test_the_workspace_file_as_a_destination_config_is_explained(tmp_path):
    path = _write_events(tmp_path)
    done = sluice("transform", "--destination-type", "GA4", "--config", str(ROOT / "workspace-config.json"),
                  "--events", str(path))
    assert done.returncode != 0 and "use --destination ID" in done.stderr


def test_metadata_carries_the_processors_fields(tmp_path):
    code = tmp_path / "t.js"
    code.write_text("export function transformEvent(event, metadata) { event.meta = metadata(event); return event; }")
    path = tmp_path / "e.jsonl"
    path.write_text(json.dumps(EVENTS[0]) + "\n")
    done = sluice("transform", "--transformation", str(code), "--events", str(path))
    assert done.returncode == 0, done.stderr
    meta = json.loads(done.stdout)["outputs"][0]["meta"]
    assert {"sourceId", "destinationId", "destinationType", "workspaceId", "messageId", "jobId", "eventName",
            "eventType", "transformationVersionId"} <= set(meta)
    assert meta["messageId"] == "m1" and meta["eventName"] == "Clicked"
