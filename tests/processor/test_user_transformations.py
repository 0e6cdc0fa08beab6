"""User transformations inside a running processor: modify, drop, fan out, throw, run forever,
allocate without end, fail to compile — the failures land in failed_jobs with the JavaScript error and
the original event, and everything else goes on."""

from __future__ import annotations

from tests.processor.support import (
    drain,
    event,
    failed_jobs,
    filtered,
    hook,
    insert_gw,
    per_destination,
    rt_jobs,
    start_processor,
    with_transformation,
    workspace_file,
)
from tests.support.procs import wait_for

MODIFY = """
export function transformEvent(event, metadata) {
  const m = metadata(event);
  event.properties = Object.assign({}, event.properties, {
    seenBy: m.destinationId, source: m.sourceId, original: m.messageId, tid: m.transformationId });
  log("modified", m.messageId, "for", m.destinationId);
  return event;
}
"""
DROP = """
export function transformEvent(event) {
  return event.event === "Drop Me" ? null : event;
}
"""
FAN_OUT = """
export function transformEvent(event) {
  const copy = Object.assign({}, event, { event: event.event + " (copy)" });
  const own = Object.assign({}, event, { event: event.event + " (own id)", messageId: "own-" + event.messageId });
  return [event, copy, own];
}
"""
THROW = """
export function transformEvent(event) {
  if (event.event === "Boom") throw new Error("boom for " + event.messageId);
  return event;
}
"""
BATCH = """
export function transformBatch(events, metadata) {
  return events.filter(e => e.event !== "Drop Me").map(e => Object.assign(e, { batched: true }));
}
"""


def test_modify_drop_fan_out_throw(dsn, tmp_path):
    config = workspace_file(tmp_path, [
        with_transformation(hook("modify"), MODIFY, "tr-modify"),
        with_transformation(hook("drop"), DROP, "tr-drop"),
        with_transformation(hook("fan"), FAN_OUT, "tr-fan"),
        with_transformation(hook("throw"), THROW, "tr-throw"),
        with_transformation(hook("batch"), BATCH, "tr-batch"),
        hook("plain"),
    ])
    keep, drop, boom = event("Clicked"), event("Drop Me"), event("Boom")
    insert_gw(dsn, [keep, drop, boom])
    proc = start_processor(dsn, config, tmp_path)
    try:
        drain(dsn, proc)
    finally:
        proc.stop()
    k, d, b = keep["messageId"], drop["messageId"], boom["messageId"]
    every = {k, d, b}
    assert per_destination(dsn) == {
        **{("modify", m): 1 for m in every},
        ("drop", k): 1, ("drop", b): 1,
        **{("fan", m): 1 for x in every for m in (x, f"{x}-1", f"own-{x}")},
        ("throw", k): 1, ("throw", d): 1,
        ("batch", k): 1, ("batch", b): 1,
        **{("plain", m): 1 for m in every},
    }
    jobs = rt_jobs(dsn)
    modified = next(j for j in jobs if j["destination_id"] == "modify" and j["message_id"] == k)
    assert modified["payload"]["event"]["properties"] == {"seenBy": "modify", "source": "src-web", "original": k,
                                                         "tid": "tr-modify"}
    plain = next(j for j in jobs if j["destination_id"] == "plain" and j["message_id"] == k)
    assert plain["payload"]["event"] == keep  # other destinations see the event untouched
    # The destination transformer ran on the transformed event.
    assert modified["payload"]["requests"][0]["body"]["JSON"]["properties"]["seenBy"] == "modify"
    fanned = [j["payload"]["event"]["event"] for j in jobs if j["destination_id"] == "fan" and
              j["payload"]["gw_job_id"] == modified["payload"]["gw_job_id"]]
    assert fanned == ["Clicked", "Clicked (copy)", "Clicked (own id)"]
    assert next(j for j in jobs if j["destination_id"] == "batch")["payload"]["event"]["batched"] is True

    [failed] = failed_jobs(dsn)
    assert failed["stage"] == "user_transform" and failed["destination_id"] == "throw"
    assert failed["reason"].startswith(f"Error: boom for {b}\n    at transformEvent (base transformation:")
    assert failed["event"] == boom and failed["message_id"] == b
    assert filtered(dsn) == {("src-web", "drop", "user_transform"): 1, ("src-web", "batch", "user_transform"): 1}
    # log() reaches our logs with the transformation and destination, never the payload.
    lines = [ln for ln in proc.log_path.read_text().splitlines() if "modified " + k in ln]
    assert len(lines) == 1 and '"transformation_id": "tr-modify"' in lines[0] and '"destination_id": "modify"' in lines[0]


LOOP = """
export function transformEvent(event) {
  if (event.event === "Loop") { while (true) {} }
  return event;
}
"""
HOARD = """
export function transformEvent(event) {
  const hoard = [];
  if (event.event === "Hoard") { while (true) hoard.push({ n: Math.random(), s: "x" + Math.random() }); }
  return event;
}
"""


def _limit_test(dsn, tmp_path, code: str, bad_name: str, reason: str, whole_chunk: bool, **settings):
    config = workspace_file(tmp_path, [with_transformation(hook("js"), code), hook("plain")])
    events = [event(bad_name if i == 2 else "Fine", user=f"u{i}") for i in range(10)]
    insert_gw(dsn, events)
    proc = start_processor(dsn, config, tmp_path, transform_batch_size=5, **settings)
    try:
        drain(dsn, proc, timeout=90)
        # The processor keeps going after the failure.
        later = event("Later")
        insert_gw(dsn, [later])
        drain(dsn, proc)
    finally:
        proc.stop()
    ids = [e["messageId"] for e in events]
    # A timeout fails the chunk holding the bad event (one V8 call, events 0-4); the next chunk
    # passes. A memory-limit hit is retried event by event, so only the bad event fails.
    failing = ids[:5] if whole_chunk else [ids[2]]
    assert per_destination(dsn) == {**{("plain", m): 1 for m in ids},
                                    **{("js", m): 1 for m in ids if m not in failing},
                                    ("plain", later["messageId"]): 1, ("js", later["messageId"]): 1}
    failed = failed_jobs(dsn)
    assert [f["message_id"] for f in failed] == failing
    assert {f["reason"] for f in failed} == {reason}
    assert [f["event"] for f in failed] == [e for e in events if e["messageId"] in failing]
    assert {f["stage"] for f in failed} == {"user_transform"}


def test_a_transformation_that_never_ends_hits_the_time_limit(dsn, tmp_path):
    _limit_test(dsn, tmp_path, LOOP, "Loop", "Timed out: the transformation ran longer than 300 ms", True,
                transform_time_limit_ms=300)


def test_a_transformation_that_allocates_without_end_hits_the_memory_limit(dsn, tmp_path):
    _limit_test(dsn, tmp_path, HOARD, "Hoard", "Memory limit exceeded: the transformation used more than 32 MB",
                False, transform_memory_limit_mb=32, transform_time_limit_ms=30000)


def test_a_transformation_that_does_not_compile_fails_its_events(dsn, tmp_path):
    config = workspace_file(tmp_path, [with_transformation(hook("js"), "export function transformEvent(e) { return e; "),
                                       hook("plain")])
    events = [event() for _ in range(3)]
    insert_gw(dsn, events)
    proc = start_processor(dsn, config, tmp_path)
    try:
        drain(dsn, proc)
    finally:
        proc.stop()
    assert per_destination(dsn) == {("plain", e["messageId"]): 1 for e in events}
    failed = failed_jobs(dsn)
    assert len(failed) == 3 and all(f["reason"].startswith("SyntaxError") for f in failed)


def _applied(proc) -> int:
    """How many new configs the processor's watcher has applied (it logs each one)."""
    return sum(1 for ln in proc.output().splitlines() if '"sluice.config"' in ln and " applied (" in ln)


def _version_of(dsn, message_id):
    [job] = [j for j in rt_jobs(dsn) if j["message_id"] == message_id]
    return job["payload"]["event"]["properties"].get("version")


def test_a_transformation_edited_in_the_config_applies_without_restart(dsn, tmp_path):
    code = "export function transformEvent(e) { e.properties = {version: %d}; return e; }"
    dest = with_transformation(hook("js"), code % 1, version="v1")
    config = workspace_file(tmp_path, [dest])
    first = event()
    insert_gw(dsn, [first])
    proc = start_processor(dsn, config, tmp_path)
    try:
        drain(dsn, proc)
        assert _version_of(dsn, first["messageId"]) == 1

        # A new version of the transformation, written the way an operator would: the whole file.
        workspace_file(tmp_path, [with_transformation(hook("js"), code % 2, version="v2")])
        wait_for(lambda: _applied(proc) >= 1, timeout=30, what="the processor to apply the new config")
        second = event()
        insert_gw(dsn, [second])
        drain(dsn, proc)
        assert _version_of(dsn, second["messageId"]) == 2

        # An edit of the code under the same versionId (a file beside the config) is picked up too.
        transformations = tmp_path / "transformations"
        transformations.mkdir()
        (transformations / "v3.js").write_text(code % 3)
        dest = hook("js")
        dest["transformations"] = [{"id": "tr-1", "versionId": "v3", "config": {}}]
        workspace_file(tmp_path, [dest])
        wait_for(lambda: _applied(proc) >= 2, timeout=30, what="the second config change")
        third = event()
        insert_gw(dsn, [third])
        drain(dsn, proc)
        assert _version_of(dsn, third["messageId"]) == 3
        (transformations / "v3.js").write_text(code % 4)
        wait_for(lambda: _applied(proc) >= 3, timeout=30, what="the edited transformation file")
        fourth = event()
        insert_gw(dsn, [fourth])
        drain(dsn, proc)
        assert _version_of(dsn, fourth["messageId"]) == 4
    finally:
        proc.stop()
