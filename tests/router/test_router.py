"""The router against fake destinations: classification, retries, the per-user barrier, batching, isolation."""

from __future__ import annotations

import json
from collections import defaultdict

from tests.router.conftest import enqueue, failed, rt_states, track
from tests.support import workspace as ws
from tests.support.fake_destination import Reply
from tests.support.procs import wait_for


def seqs_by_user(received, key=lambda r: r.json()) -> dict[str, list[int]]:
    out = defaultdict(list)
    for r in received:
        body = key(r)
        out[body["userId"]].append(body["properties"]["seq"])
    return out


def test_webhook_delivers_every_event_in_order_per_user(harness, fake, db):
    harness.config([ws.webhook("dst-hook", fake.url + "/hook")])
    events = [track(f"u{i % 5}", i) for i in range(60)]
    enqueue(db, "dst-hook", "WEBHOOK", {"webhookUrl": fake.url + "/hook", "webhookMethod": "POST"}, events)
    harness.start(fake)
    wait_for(lambda: len(fake.delivered) >= 60, 30, what="60 deliveries")
    wait_for(lambda: set(rt_states(db).values()) == {1}, 10, what="all jobs marked delivered")
    got = seqs_by_user(fake.delivered)
    for user, seqs in got.items():
        assert seqs == sorted(seqs), f"{user} out of order: {seqs}"
    assert sum(len(s) for s in got.values()) == 60
    assert fake.delivered[0].path == "/hook"


def test_outage_keeps_per_user_order_and_recovers(harness, fake, db):
    harness.config([ws.webhook("dst-hook", fake.url + "/hook")])
    state = {"down": True}
    fake.respond(lambda r: Reply(503, "down") if state["down"] else Reply(200))
    enqueue(db, "dst-hook", "WEBHOOK", {"webhookUrl": fake.url + "/hook"}, [track(f"u{i % 3}", i) for i in range(30)])
    harness.start(fake, router_max_attempts=100)
    wait_for(lambda: len(fake.received) >= 6, 20, what="deliveries to be tried during the outage")
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM rt_jobs WHERE state = 0 AND attempts > 0")
        assert cur.fetchone()[0] >= 1, "failed tries are counted on the held job"
    db.commit()
    state["down"] = False
    wait_for(lambda: set(rt_states(db).values()) == {1}, 30, what="everything delivered after the outage")
    got = seqs_by_user(fake.delivered)
    assert {u: s for u, s in got.items()} == {u: sorted(s) for u, s in got.items()}
    assert sorted(x for s in got.values() for x in s) == list(range(30)), "each event delivered exactly once"
    assert failed(db) == []


def test_one_failing_user_does_not_block_others_and_is_aborted_after_its_budget(harness, fake, db):
    harness.config([ws.webhook("dst-hook", fake.url + "/hook")])
    fake.respond(lambda r: Reply(500, '{"error":"boom"}') if r.json()["userId"] == "bad" else Reply(200))
    events = [track("bad", 0)] + [track(f"good{i % 4}", i) for i in range(1, 21)] + [track("bad", 21)]
    enqueue(db, "dst-hook", "WEBHOOK", {"webhookUrl": fake.url + "/hook"}, events)
    harness.start(fake, router_max_attempts=3, router_retry_window_seconds=0)
    wait_for(lambda: len([r for r in fake.delivered]) == 20, 20, what="the good users' events")
    dead = wait_for(lambda: [f for f in failed(db) if f["message_id"] == "bad-0"], 30, what="bad-0 aborted")[0]
    assert dead["stage"] == "router" and dead["status_code"] == 500 and dead["attempts"] == 3
    assert "retry budget exhausted after 3 attempts" in dead["reason"] and "boom" in dead["response"]
    assert dead["event"]["messageId"] == "bad-0"
    # bad-21 was held behind bad-0 (never sent before bad-0 was given up), then tried in its turn.
    bad_tries = [r.json()["properties"]["seq"] for r in fake.received if r.json()["userId"] == "bad"]
    assert bad_tries[:3] == [0, 0, 0]
    wait_for(lambda: len(failed(db)) == 2, 30, what="bad-21 aborted too")


def test_client_error_aborts_at_once_with_the_destination_answer(harness, fake, db):
    harness.config([ws.webhook("dst-hook", fake.url + "/hook")])
    fake.respond(lambda r: Reply(400, '{"error":"invalid field plan"}') if r.json()["properties"]["seq"] == 1
                 else Reply(200))
    enqueue(db, "dst-hook", "WEBHOOK", {"webhookUrl": fake.url + "/hook"}, [track("u", i) for i in range(3)])
    harness.start(fake)
    wait_for(lambda: len(fake.delivered) == 2, 20, what="the two good events")
    [dead] = wait_for(lambda: failed(db), 10, what="the rejected event in failed_jobs")
    assert dead["status_code"] == 400 and dead["attempts"] == 1 and "invalid field plan" in dead["response"]
    assert [r.json()["properties"]["seq"] for r in fake.received] == [0, 1, 2], "a 4xx is not retried"
    assert rt_states(db) == {"u-0": 1, "u-1": 2, "u-2": 1}


def test_429_retry_after_is_honoured_and_not_counted(harness, fake, db):
    harness.config([ws.webhook("dst-hook", fake.url + "/hook")])
    calls = {"n": 0}

    def reply(r):
        calls["n"] += 1
        return Reply(429, "slow down", {"Retry-After": "2"}) if calls["n"] == 1 else Reply(200)

    fake.respond(reply)
    enqueue(db, "dst-hook", "WEBHOOK", {"webhookUrl": fake.url + "/hook"}, [track("u", 0), track("u", 1)])
    harness.start(fake)
    wait_for(lambda: rt_states(db) == {"u-0": 1, "u-1": 1}, 20, what="delivery after the throttle")
    first, second = fake.received[0], fake.received[1]
    assert second.json()["properties"]["seq"] == 0, "the throttled event goes first when retried"
    assert second.at - first.at >= 1.9, "Retry-After: 2 was honoured"
    with db.cursor() as cur:
        cur.execute("SELECT attempts, last_status FROM rt_jobs WHERE message_id = 'u-0'")
        assert cur.fetchone() == (1, 200), "the 429 did not count as an attempt"


def test_timeout_is_retried(harness, fake, db):
    harness.config([ws.webhook("dst-hook", fake.url + "/hook")])
    calls = {"n": 0}

    def reply(r):
        calls["n"] += 1
        return Reply(200, hang=5) if calls["n"] == 1 else Reply(200)

    fake.respond(reply)
    enqueue(db, "dst-hook", "WEBHOOK", {"webhookUrl": fake.url + "/hook"}, [track("u", 0)])
    harness.start(fake, router_timeout=1)
    wait_for(lambda: rt_states(db) == {"u-0": 1}, 20, what="delivery after a timed-out try")
    assert len(fake.received) >= 2


def test_amplitude_batches_and_a_rejected_batch_is_split_to_find_the_bad_event(harness, fake, db):
    config = {"apiKey": "am-key", "residencyServer": "standard"}
    harness.config([ws.destination("dst-am", "AM", "Amplitude", config)])

    def reply(r):
        events = r.json().get("events", [])
        if any(e.get("event_type") == "Poison" for e in events):
            return Reply(400, '{"code":400,"error":"Invalid field values on some events"}')
        return Reply(200, '{"code":200}')

    fake.respond(reply)
    events = [track(f"u{i % 7}", i) for i in range(40)]
    events[17] = track("u3", 17, event="Poison")
    enqueue(db, "dst-am", "AM", config, events)
    harness.start(fake)
    wait_for(lambda: len([s for s in rt_states(db).values() if s != 0]) == 40, 30, what="all 40 jobs settled")
    delivered = [e for r in fake.delivered for e in r.json()["events"]]
    assert sorted(e["insert_id"] for e in delivered) == sorted(f"u{i % 7}-{i}" for i in range(40) if i != 17)
    assert len(fake.delivered) < 40, "events were batched"
    assert {r.path for r in fake.received} <= {"/batch", "/2/httpapi"}
    assert sum(len(r.json()["events"]) for r in fake.delivered if r.path == "/batch") >= 30
    [dead] = failed(db)
    assert dead["message_id"] == "u3-17" and dead["status_code"] == 400
    per_user = defaultdict(list)
    for e in delivered:
        per_user[e["user_id"]].append(int(e["insert_id"].split("-")[1]))
    assert all(v == sorted(v) for v in per_user.values())


def test_disabled_destination_jobs_go_to_failed_jobs(harness, fake, db):
    dest = ws.webhook("dst-hook", fake.url + "/hook")
    dest["enabled"] = False
    harness.config([dest])
    enqueue(db, "dst-hook", "WEBHOOK", {"webhookUrl": fake.url + "/hook"}, [track("u", i) for i in range(5)])
    harness.start(fake)
    rows = wait_for(lambda: len(failed(db)) == 5 and failed(db), 20, what="pending jobs drained to failed_jobs")
    assert {r["reason"] for r in rows} == {"destination disabled"}
    assert fake.received == []
    assert set(rt_states(db).values()) == {2}


def test_deleted_destination_jobs_go_to_failed_jobs(harness, fake, db):
    harness.config([])
    enqueue(db, "dst-gone", "WEBHOOK", {"webhookUrl": fake.url + "/hook"}, [track("u", 0)])
    harness.start(fake)
    [row] = wait_for(lambda: failed(db), 20, what="the job of a deleted destination in failed_jobs")
    assert row["reason"] == "destination deleted from the workspace config"


def test_kill9_mid_delivery_loses_nothing(harness, fake, db, dsn):
    harness.config([ws.webhook("dst-hook", fake.url + "/hook")])
    fake.respond(lambda r: Reply(200, hang=0.02))
    events = [track(f"u{i % 10}", i) for i in range(300)]
    enqueue(db, "dst-hook", "WEBHOOK", {"webhookUrl": fake.url + "/hook"}, events)
    first = harness.start(fake, router_workers=2)
    wait_for(lambda: len(fake.delivered) >= 40, 30, what="some deliveries before the kill")
    first.kill9()
    harness.start(fake, router_workers=4)
    wait_for(lambda: set(rt_states(db).values()) == {1}, 60, what="everything delivered after the restart")
    got = {r.json()["messageId"] for r in fake.delivered}
    assert got == {e["messageId"] for e in events}, "at-least-once: every event delivered"


def test_two_routers_never_deliver_one_users_events_out_of_order(harness, fake, db):
    harness.config([ws.webhook("dst-hook", fake.url + "/hook")])
    fake.respond(lambda r: Reply(200, hang=0.01))
    events = [track(f"u{i % 25}", i) for i in range(600)]
    enqueue(db, "dst-hook", "WEBHOOK", {"webhookUrl": fake.url + "/hook"}, events)
    a = harness.start(fake, router_workers=2)
    b = harness.start(fake, router_workers=2)
    wait_for(lambda: set(rt_states(db).values()) == {1}, 60, what="all 600 delivered by two routers")
    got = seqs_by_user(fake.delivered)
    for user, seqs in got.items():
        assert seqs == sorted(seqs), f"{user} out of order: {seqs}"
    assert sum(len(s) for s in got.values()) == 600, "no duplicates without a crash"
    counts = []
    for proc in (a, b):
        proc.stop()
        [line] = [json.loads(x) for x in proc.log_path.read_text().splitlines() if '"router stopped"' in x]
        counts.append(line["delivered"])
    assert sum(counts) == 600 and min(counts) > 0, f"both routers shared the work: {counts}"


def test_endpoint_overrides_and_ga4_request(harness, fake, db):
    config = {"apiSecret": "secret", "measurementId": "G-TEST", "typesOfClient": "gtag"}
    harness.config([ws.destination("dst-ga4", "GA4", "Google Analytics 4", config)])
    ev = track("u", 1, event="Product Added", product_id="p1", price=3.5, quantity=2)
    ev["anonymousId"] = "anon-1"
    enqueue(db, "dst-ga4", "GA4", config, [ev])
    harness.start(fake)
    [req] = wait_for(lambda: fake.delivered, 20, what="the GA4 request")
    assert req.path == "/mp/collect"
    assert req.query["measurement_id"] == "G-TEST" and req.query["api_secret"] == "secret"
    body = json.loads(req.body)
    assert body["events"][0]["name"] == "add_to_cart"


def test_rate_limit_spaces_deliveries(harness, fake, db):
    """5 events/s with a burst of 5: ten events cannot all arrive within one second (a lower bound only)."""
    harness.config([ws.webhook("dst-hook", fake.url + "/hook")])
    enqueue(db, "dst-hook", "WEBHOOK", {"webhookUrl": fake.url + "/hook"}, [track(f"u{i}", i) for i in range(10)])
    harness.start(fake, router_rate_limits=json.dumps({"WEBHOOK": 5}))
    wait_for(lambda: set(rt_states(db).values()) == {1}, 30, what="all ten delivered")
    times = sorted(r.at for r in fake.delivered)
    assert len(times) == 10
    assert times[-1] - times[0] >= 0.9, "the sixth to tenth events waited for tokens"


def test_rate_limit_holds_across_two_routers(harness, fake, db):
    """5 events/s for the destination, shared through Postgres: two routers together still send at most
    about 5 per second (a lower bound on the spread only)."""
    harness.config([ws.webhook("dst-hook", fake.url + "/hook")])
    limits = json.dumps({"WEBHOOK": 5})
    a = harness.start(fake, router_rate_limits=limits)
    b = harness.start(fake, router_rate_limits=limits)

    def owners() -> int:
        with db.cursor() as cur:
            cur.execute("SELECT count(DISTINCT owner) FROM partition_leases "
                        "WHERE queue = 'rt' AND scope = 'dst-hook' AND expires_at > now()")
            n = cur.fetchone()[0]
        db.commit()
        return n

    wait_for(lambda: owners() == 2, 30, what="both routers holding parts of the destination")
    enqueue(db, "dst-hook", "WEBHOOK", {"webhookUrl": fake.url + "/hook"}, [track(f"u{i}", i) for i in range(20)])
    wait_for(lambda: set(rt_states(db).values()) == {1}, 60, what="all twenty delivered")
    times = sorted(r.at for r in fake.delivered)
    assert len(times) == 20
    # A burst of 5, then 15 more at 5/s: at least 3 s, whatever the number of routers.
    assert times[-1] - times[0] >= 2.8, "the two routers shared one budget"
    assert a.alive() and b.alive()
