"""Replay end to end, with real processes: a destination refuses events because of a bad config value (400,
aborted at once into failed_jobs); the operator fixes the config and replays; the destination then gets
every event, in the original order per user, and the dead letters are marked, not deleted."""

from __future__ import annotations

from collections import defaultdict

from tests.conftest import start_gateway
from tests.ops.conftest import (
    failed_rows,
    sluice_json,
    sql,
    start_processor,
    start_router,
    wait_config_applied,
)
from tests.support import workspace as ws
from tests.support.fake_destination import Reply
from tests.support.procs import wait_for

GOOD_KEY = "good-key-0123456789"


def hook(dest_id: str, url: str, api_key: str, transformation: str | None = None) -> dict:
    d = ws.destination(dest_id, "WEBHOOK", "Webhook", {
        "webhookUrl": f"{url}/{dest_id}", "webhookMethod": "POST", "headers": [{"from": "X-Api-Key", "to": api_key}]})
    if transformation is not None:
        d["transformations"] = [{"id": f"tr-{dest_id}", "versionId": f"tr-{dest_id}-v1", "name": "t",
                                 "code": transformation, "config": {}}]
    return d


def key_checker(received):
    if received.headers.get("x-api-key") != GOOD_KEY:
        return Reply(400, '{"error":"invalid api key"}')
    return Reply(200)


def test_a_400_aborts_the_config_is_fixed_replay_delivers_in_order(dsn, tmp_path, fake):
    fake.respond(key_checker)
    config = ws.write(tmp_path / "workspace-config.json", ws.basic_workspace([hook("hook", fake.url, "bad-key")]))
    gateway = start_gateway(dsn, config, tmp_path)
    processor = start_processor(dsn, config, tmp_path)
    router = start_router(dsn, config, tmp_path)
    try:
        users = ["alice", "bob", "carol"]
        batch = [{"type": "track", "event": "Step", "userId": u, "messageId": f"{u}-{i}", "properties": {"seq": i}}
                 for i in range(5) for u in users]
        assert gateway.post("/v1/batch", {"batch": batch}).status_code == 200

        # A 400 is not retried: every event lands in failed_jobs at once, with the destination's answer.
        wait_for(lambda: len(failed_rows(dsn)) == len(batch), timeout=60, what="every event to fail with 400")
        dead = failed_rows(dsn)
        assert {(r["stage"], r["destination_id"], r["status_code"]) for r in dead} == {("router", "hook", 400)}
        assert all("invalid api key" in (r[0] or "") for r in sql(dsn, "SELECT response FROM failed_jobs"))
        assert sql(dsn, "SELECT DISTINCT attempts FROM failed_jobs") == [(1,)]
        assert fake.delivered == []

        # The operator fixes the API key; the running processes pick the file up.
        ws.write(config, ws.basic_workspace([hook("hook", fake.url, GOOD_KEY)]))
        wait_config_applied(config, processor, router)

        plan = sluice_json(dsn, "replay", "--destination", "hook", "--dry-run")
        assert plan["count"] == len(batch) and len(failed_rows(dsn)) == len(batch)
        assert all(r["replayed_at"] is None for r in failed_rows(dsn))  # a dry run changes nothing

        out = sluice_json(dsn, "replay", "--destination", "hook", "--yes")
        assert out["replayed"] == len(batch)
        assert out["targets"] == [{"queue": "rt_jobs", "enters": "router", "destination_id": "hook",
                                   "count": len(batch)}]

        wait_for(lambda: len(fake.delivered) >= len(batch), timeout=60, what="the replayed events to arrive")
        wait_for(lambda: sql(dsn, "SELECT count(*) FROM rt_jobs WHERE state = 0")[0][0] == 0, timeout=30,
                 what="the router queue to settle")
        per_user = defaultdict(list)
        for r in fake.delivered:
            body = r.json()
            assert r.headers["x-api-key"] == GOOD_KEY
            per_user[body["userId"]].append(body["properties"]["seq"])
        assert dict(per_user) == {u: list(range(5)) for u in users}

        # Marked, not deleted; nothing failed again; a second replay selects nothing.
        after = failed_rows(dsn)
        assert [r["id"] for r in after] == [r["id"] for r in dead]
        assert all(r["replayed_at"] is not None and r["replay_count"] == 1 and r["replayed_into"] == "rt_jobs"
                   and r["replayed_by"].startswith("cli") for r in after)
        again = sluice_json(dsn, "replay", "--destination", "hook", "--yes")
        assert again["replayed"] == 0
        assert len(fake.received) == 2 * len(batch)
    finally:
        for p in (router, processor, gateway.proc):
            p.stop()


THROWS = """
export function transformEvent(event) {
  if (event.event === "Boom") throw new Error("cannot handle " + event.messageId);
  return event;
}
"""
FIXED = """
export function transformEvent(event) {
  event.properties = Object.assign({}, event.properties, { fixed: true });
  return event;
}
"""


def test_transformation_failures_reenter_the_processor_for_their_destination_only(dsn, tmp_path, fake):
    fake.respond(lambda r: Reply(200))

    def workspace(code: str) -> dict:
        return ws.basic_workspace([hook("transformed", fake.url, GOOD_KEY, code), hook("plain", fake.url, GOOD_KEY)])

    config = ws.write(tmp_path / "workspace-config.json", workspace(THROWS))
    gateway = start_gateway(dsn, config, tmp_path)
    processor = start_processor(dsn, config, tmp_path)
    router = start_router(dsn, config, tmp_path)
    try:
        names = ["Clicked", "Boom", "Viewed", "Boom", "Left"]
        batch = [{"type": "track", "event": n, "userId": "dave", "messageId": f"dave-{i}", "properties": {"seq": i}}
                 for i, n in enumerate(names)]
        assert gateway.post("/v1/batch", {"batch": batch}).status_code == 200

        def paths():
            return [(r.path, r.json()["messageId"]) for r in fake.delivered]

        wait_for(lambda: len(paths()) == 8 and len(failed_rows(dsn)) == 2, timeout=60,
                 what="8 deliveries and 2 transformation failures")
        dead = failed_rows(dsn)
        assert [(r["stage"], r["destination_id"], r["message_id"]) for r in dead] == [
            ("user_transform", "transformed", "dave-1"), ("user_transform", "transformed", "dave-3")]
        assert all("cannot handle" in r["reason"] for r in dead)

        ws.write(config, workspace(FIXED))
        wait_config_applied(config, processor, router)
        out = sluice_json(dsn, "replay", "--stage", "user_transform", "--reason", "CANNOT HANDLE", "--yes")
        assert out["replayed"] == 2
        assert out["targets"] == [{"queue": "gw_jobs", "enters": "processor", "destination_id": "transformed",
                                   "count": 2}]

        wait_for(lambda: len(paths()) == 10, timeout=60, what="the replayed events to be delivered")
        wait_for(lambda: sql(dsn, "SELECT count(*) FROM gw_jobs WHERE state = 0")[0][0] == 0
                 and sql(dsn, "SELECT count(*) FROM rt_jobs WHERE state = 0")[0][0] == 0, timeout=30,
                 what="the queues to settle")
        replayed = [r for r in fake.delivered[8:]]
        assert [(r.path, r.json()["messageId"]) for r in replayed] == [("/transformed", "dave-1"),
                                                                       ("/transformed", "dave-3")]
        assert all(r.json()["properties"]["fixed"] is True for r in replayed)  # the fixed transformation ran
        assert "_sluice_replay" not in replayed[0].json()
        # The other destination of the source already had these events: it does not get them again.
        assert sorted(m for p, m in paths() if p == "/plain") == [f"dave-{i}" for i in range(5)]
        assert len(failed_rows(dsn)) == 2 and all(r["replayed_into"] == "gw_jobs" for r in failed_rows(dsn))
    finally:
        for p in (router, processor, gateway.proc):
            p.stop()
