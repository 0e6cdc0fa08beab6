"""A router round fits in its partition lease: with a destination that answers just inside the timeout and
a short lease, two routers never deliver one user's events at the same time, nor twice, and order holds —
also when one router freezes mid-round (SIGSTOP) and its leases move to the other."""

from __future__ import annotations

import json
import os
import signal
from collections import defaultdict

from tests.router.conftest import enqueue, rt_states, track, wait_for
from tests.support import workspace as ws
from tests.support.fake_destination import FakeDestination, Reply

HOOK = "http://hooks.invalid"  # never reached: each router's endpoint override sends it to its own fake
TIMEOUT = 2.0
LEASE = 4.5
SLOW = TIMEOUT - 1  # the destination answers after router_timeout - 1 s


def deliveries(*fakes: FakeDestination) -> list[tuple[str, int, float, float, str]]:
    """(user, seq, arrived, answered, which fake) for every 2xx answer, in arrival order."""
    out = []
    for fake in fakes:
        for r in list(fake.delivered):
            body = r.json()
            out.append((body["userId"], body["properties"]["seq"], r.at, r.at + SLOW, fake.url))
    return sorted(out, key=lambda d: d[2])


def assert_no_overlap_and_in_order(ds) -> None:
    by_user = defaultdict(list)
    for user, seq, start, end, _ in ds:
        by_user[user].append((start, end, seq))
    for user, items in by_user.items():
        items.sort()
        for (_s1, e1, q1), (s2, _e2, q2) in zip(items, items[1:], strict=False):
            assert s2 >= e1 - 0.05, f"{user}: seq {q2} was sent while seq {q1} was still in flight"
            assert q2 >= q1, f"{user}: seq {q2} arrived after seq {q1}"


def test_a_round_never_outlives_its_lease(harness, db):
    harness.config([ws.webhook("dst-hook", HOOK + "/hook")])
    with FakeDestination() as fa, FakeDestination() as fb:
        for fake in (fa, fb):
            fake.respond(lambda r: Reply(hang=SLOW))
        users = [f"user-{i}" for i in range(4)]
        enqueue(db, "dst-hook", "WEBHOOK", {"webhookUrl": HOOK + "/hook"},
                [track(u, seq) for seq in range(4) for u in users])
        settings = {"lease_seconds": LEASE, "router_timeout": TIMEOUT, "router_min_backoff": 0.2}
        a = harness.start(fa, overrides={HOOK: fa.url}, router_workers=1, **settings)
        first = wait_for(lambda: list(fa.received), 30, interval=0.005, what="router A's first request")
        os.kill(a.pid, signal.SIGSTOP)  # frozen while its request is in flight
        stopped_with = len(fa.received)
        try:
            b = harness.start(fb, overrides={HOOK: fb.url}, router_workers=4, **settings)
            wait_for(lambda: set(rt_states(db).values()) == {1}, 90, what="router B to deliver everything")
        finally:
            os.kill(a.pid, signal.SIGCONT)
        # A wakes up after its leases expired: it finishes the request it had in flight, starts nothing
        # more, and its round's outcomes are refused.
        wait_for(lambda: "lost a partition lease during a round" in a.output(), 30, what="router A's round refused")
        assert len(fa.received) == stopped_with == len(first), "a router that lost its lease sent no more"
        got_b = deliveries(fb)
        assert sorted((u, s) for u, s, *_ in got_b) == sorted((u, s) for u in users for s in range(4))
        assert_no_overlap_and_in_order(deliveries(fa, fb))

        # Both routers at work on more events, the destination as slow as before: every round fits in
        # its lease, so no event is sent twice and none overtakes another of its user.
        before = len(a.output().split("lost a partition lease during a round"))
        enqueue(db, "dst-hook", "WEBHOOK", {"webhookUrl": HOOK + "/hook"},
                [track(u, seq) for seq in range(4, 10) for u in users])
        wait_for(lambda: set(rt_states(db).values()) == {1}, 120, what="the second wave delivered")
        later = [d for d in deliveries(fa, fb) if d[1] >= 4]
        assert sorted((u, s) for u, s, *_ in later) == sorted((u, s) for u in users for s in range(4, 10)), \
            "each event of the second wave delivered exactly once"
        assert_no_overlap_and_in_order(later)
        assert len(a.output().split("lost a partition lease during a round")) == before
        assert "lost a partition lease" not in b.output()
        for proc in (a, b):
            assert proc.alive(), proc.output()[-3000:]
        assert all(json.loads(r.body)["userId"] in users for r in fa.received + fb.received)
