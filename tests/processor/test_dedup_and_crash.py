"""Exactly-once output from at-least-once input: SDK retries of a message fan out once even when two
processor processes race on them, and kill -9 at any moment neither loses nor duplicates a job."""

from __future__ import annotations

import contextlib
import random
from collections import Counter

import psycopg2

from tests.processor.support import (
    drain,
    event,
    failed_jobs,
    filtered,
    hook,
    insert_gw,
    per_destination,
    postgres,
    query,
    rt_jobs,
    start_processor,
    with_transformation,
    workspace_file,
)
from tests.support.procs import wait_for


def _lease_split(dsn) -> list[int]:
    return sorted(n for _, n in query(dsn, "SELECT owner, count(*) FROM partition_leases "
                                          "WHERE queue = 'gw' AND expires_at > now() GROUP BY owner"))


def test_retries_of_a_message_fan_out_once_across_two_processors(dsn, tmp_path):
    config = workspace_file(tmp_path, [hook("wh-1"), hook("wh-2")])
    a = start_processor(dsn, config, tmp_path, processor_batch_size=50)
    b = start_processor(dsn, config, tmp_path, processor_batch_size=50)
    try:
        # Both processors hold half of the gateway queue's partitions before any event arrives.
        wait_for(lambda: _lease_split(dsn) == [8, 8], timeout=30, what="two processors sharing the partitions")
        owners = dict(query(dsn, "SELECT part, owner FROM partition_leases WHERE queue = 'gw'"))
        events = [event(user=f"user-{i % 7}") for i in range(400)]
        # Each message arrives twice, in partitions owned by different processors, interleaved.
        other = {p: next(q for q in range(16) if owners[q] != owners[p]) for p in range(16)}
        for chunk in range(0, 400, 50):
            batch = events[chunk:chunk + 50]
            parts = [random.randrange(16) for _ in batch]
            for e, p in zip(batch, parts, strict=True):
                insert_gw(dsn, [e], part=p)
                insert_gw(dsn, [e], part=other[p])
        drain(dsn, a, b)

        ids = [e["messageId"] for e in events]
        assert per_destination(dsn) == {(d, m): 1 for d in ("wh-1", "wh-2") for m in ids}
        assert filtered(dsn) == {("src-web", "", "duplicate"): 400}

        # A later SDK retry within the window is still a duplicate ...
        insert_gw(dsn, events[:10])
        drain(dsn, a, b)
        assert len(rt_jobs(dsn)) == 800
        assert filtered(dsn) == {("src-web", "", "duplicate"): 410}
        # ... and once the window has passed for a key, the message is new again.
        with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
            cur.execute("UPDATE dedup_keys SET seen_at = now() - interval '2 hours' WHERE message_id = %s", (ids[0],))
            conn.commit()
        insert_gw(dsn, events[:1])
        drain(dsn, a, b)
        assert per_destination(dsn)[("wh-1", ids[0])] == 2
    finally:
        a.stop()
        b.stop()
    logs = [a.log_path.read_text(), b.log_path.read_text()]
    assert all('"msg": "batch"' in text for text in logs), "both processors should have processed batches"


SLOW = """
export function transformEvent(event) {
  const until = Date.now() + 1;
  while (Date.now() < until) {}
  event.properties = Object.assign({}, event.properties, { slow: true });
  return [event, Object.assign({}, event, { event: "Copy" })];
}
"""


def _done(dsn) -> int:
    return query(dsn, "SELECT count(*) FROM gw_jobs WHERE state = 1")[0][0]


def test_kill_9_mid_batch_loses_and_duplicates_nothing(dsn, tmp_path):
    config = workspace_file(tmp_path, [with_transformation(hook("slow"), SLOW), hook("plain"), postgres("pg")])
    events = [event(user=f"user-{i % 11}", properties={"n": i}) for i in range(3000)]
    insert_gw(dsn, events)
    # Batches of 100 take ~100 ms of JavaScript each: a kill lands inside one most of the time.
    settings = {"processor_batch_size": 100, "transform_batch_size": 100}
    marks = [400, 1300, 2200]
    killed_mid_batch = 0
    for mark in marks:
        proc = start_processor(dsn, config, tmp_path, **settings)
        try:
            wait_for(lambda m=mark: _done(dsn) >= m, timeout=60, what=f"{mark} gateway jobs processed")
        finally:
            proc.kill9()
        assert proc.proc.returncode == -9
        claimed = query(dsn, "SELECT count(*) FROM gw_jobs WHERE state = 0 AND claimed_until > now()")[0][0]
        killed_mid_batch += claimed > 0
        # No restart yet: every committed batch is complete, nothing half-written.
        done = _done(dsn)
        assert len(rt_jobs(dsn, "batch_rt_jobs")) == done
    assert _done(dsn) < len(events), "the processor should not have finished before the last kill"
    assert killed_mid_batch, "at least one kill should land between a claim and its commit"
    # The restarted processor takes the dead one's partitions over at once (same host, pid gone).
    proc = start_processor(dsn, config, tmp_path, **settings)
    try:
        drain(dsn, proc, timeout=60)
    finally:
        proc.stop()

    ids = [e["messageId"] for e in events]
    expected = Counter()
    for m in ids:
        expected.update({("slow", m): 1, ("slow", f"{m}-1"): 1, ("plain", m): 1})
    assert per_destination(dsn) == expected
    assert per_destination(dsn, "batch_rt_jobs") == Counter({("pg", m): 1 for m in ids})
    assert failed_jobs(dsn) == []
    # Per (destination, user), the delivery queue is in gateway order.
    jobs = rt_jobs(dsn)
    order = {m: i for i, m in enumerate(ids)}
    for dest in ("slow", "plain"):
        for user in {e["userId"] for e in events}:
            seen = [order[j["payload"]["event"]["messageId"].removesuffix("-1")] for j in jobs
                    if j["destination_id"] == dest and j["user_key"] == user]
            assert seen == sorted(seen)
