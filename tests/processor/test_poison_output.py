"""Poison output end to end: a transformation returns what Postgres cannot store — a NUL character, a lone
surrogate, an object whose toJSON returns undefined, a 2 MB and a 50 MB event — each in a batch with good events,
sent through a real gateway, processor and router. The good events are delivered, NUL is stripped, the
bad ones are in failed_jobs with the reason, and no process exits (nor is the batch retried forever)."""

from __future__ import annotations

import pytest

from tests.conftest import start_gateway
from tests.ops.conftest import failed_rows, sql, start_processor, start_router
from tests.support import workspace as ws
from tests.support.fake_destination import FakeDestination
from tests.support.procs import wait_for

POISON = r"""
export function transformEvent(event) {
  const kind = event.properties.kind;
  if (kind === "nul") event.properties.text = "a" + String.fromCharCode(0) + "b";
  if (kind === "surrogate") event.properties.text = "x\uD800y";
  if (kind === "tojson") event.properties.weird = { toJSON: () => undefined, also: 1 };
  if (kind === "tojson-event") event.toJSON = () => undefined;
  if (kind === "huge") event.properties.big = "x".repeat(50 * 1024 * 1024);
  if (kind === "big") event.properties.big = "y".repeat(2 * 1024 * 1024);
  event.properties.transformed = true;
  return event;
}
"""
KINDS = ["nul", "surrogate", "tojson-event", "huge", "big"]


@pytest.fixture
def fake():
    with FakeDestination() as f:
        yield f


def test_poison_output_fails_alone(dsn, tmp_path, fake):
    dest = ws.webhook("hook", fake.url + "/hook")
    dest["transformations"] = [{"id": "tr-poison", "versionId": "tr-poison-v1", "name": "poison", "code": POISON}]
    config = ws.write(tmp_path / "workspace-config.json", ws.basic_workspace([dest]))
    gateway = start_gateway(dsn, config, tmp_path)
    processor = start_processor(dsn, config, tmp_path)
    router = start_router(dsn, config, tmp_path)
    try:
        for n, kind in enumerate(KINDS):
            batch = [{"type": "track", "event": "Step", "userId": f"u{i}", "messageId": f"{kind}-good-{i}",
                      "properties": {"kind": "good", "seq": i}} for i in range(5)]
            batch.insert(2, {"type": "track", "event": "Step", "userId": "u9", "messageId": f"{kind}-bad",
                             "properties": {"kind": kind, "seq": 100 + n}})
            assert gateway.post("/v1/batch", {"batch": batch}).status_code == 200

        def settled():
            for p in (processor, router, gateway.proc):
                assert p.alive(), f"{p.role} exited:\n{p.output()[-3000:]}"
            gw, rt = sql(dsn, "SELECT (SELECT count(*) FROM gw_jobs WHERE state = 0), "
                              "(SELECT count(*) FROM rt_jobs WHERE state = 0)")[0]
            return gw == 0 and rt == 0 and len(fake.delivered) >= 26

        wait_for(settled, 120, what="every good event delivered and the poison dealt with")
        delivered = {r.json()["messageId"]: r.json() for r in fake.delivered}
        for kind in KINDS:
            assert all(f"{kind}-good-{i}" in delivered for i in range(5)), f"good neighbours of {kind}"
            assert all(delivered[f"{kind}-good-{i}"]["properties"]["transformed"] for i in range(5))
        assert delivered["nul-bad"]["properties"]["text"] == "ab", "NUL is stripped, the event goes on"
        dead = {r["message_id"]: r for r in failed_rows(dsn)}
        assert set(dead) == {"surrogate-bad", "tojson-event-bad", "huge-bad", "big-bad"}, dead.keys()
        assert "more than the limit of 1048576" in dead["big-bad"]["reason"]
        assert "lone surrogate" in dead["surrogate-bad"]["reason"]
        assert "JSON" in dead["tojson-event-bad"]["reason"] or "object" in dead["tojson-event-bad"]["reason"]
        assert "bytes" in dead["huge-bad"]["reason"] or "memory limit" in dead["huge-bad"]["reason"].lower()
        assert all(r["stage"] == "user_transform" for r in dead.values())
        assert "Traceback" not in processor.output()
    finally:
        for p in (router, processor, gateway.proc):
            p.stop()
