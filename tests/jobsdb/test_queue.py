"""The queue API against a real Postgres: COPY in, claims fenced by leases (waiting for locked rows, never skipping them), fenced acks, datasets."""

from __future__ import annotations

import contextlib
import json
import threading

import psycopg2
import pytest

from jobsdb import datasets
from jobsdb.leases import PartitionLeases
from jobsdb.migrate import migrate, migrations
from jobsdb.queue import (
    GatewayRow,
    ack_gw,
    claim_gw,
    enqueue_gw,
    new_token,
    partition_of,
    release,
    reset_part_claims,
)

ALL = list(range(16))
OWNER = "test-processor"


def hold(conn, parts=ALL, owner=OWNER) -> None:
    """Take the partition leases a claim is fenced by (as a processor's PartitionLeases would)."""
    with conn.cursor() as cur:
        cur.execute("INSERT INTO partition_leases (queue, scope, part, owner, expires_at) "
                    "SELECT 'gw', '', p, %s, now() + interval '1 hour' FROM unnest(%s::int[]) p "
                    "ON CONFLICT (queue, scope, part) DO UPDATE SET owner = excluded.owner, "
                    "expires_at = excluded.expires_at", (owner, list(parts)))
    conn.commit()


def claim(conn, parts, limit, lease_seconds, token):
    hold(conn)
    return claim_gw(conn, parts, limit, lease_seconds, token, OWNER)


def fill(conn, n: int, users: int = 10) -> None:
    rows = []
    for i in range(n):
        user = f"user-{i % users}"
        rows.append(GatewayRow(partition_of(user, 16), "src", user,
                               json.dumps({"type": "track", "userId": user, "event": f"e{i}", "messageId": f"m{i}"}),
                               "2026-01-01T00:00:00Z"))
    with conn.cursor() as cur:
        enqueue_gw(cur, rows)
    conn.commit()


def pending(conn) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM gw_jobs WHERE state = 0")
        n = cur.fetchone()[0]
    conn.commit()
    return n


def test_migrations_are_idempotent_and_versioned(dsn):
    assert migrate(dsn) == []  # the template already has them all
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute("SELECT version FROM sluice_migrations ORDER BY version")
        assert [r[0] for r in cur.fetchall()] == [v for v, _, _ in migrations()]


def test_copy_then_claim_in_order_and_ack(db):
    fill(db, 50)
    token = new_token()
    jobs = claim(db, ALL, 20, 30, token)
    assert len(jobs) == 20
    assert [j.job_id for j in jobs] == sorted(j.job_id for j in jobs)
    assert jobs[0].payload["event"] == "e0"
    with db.cursor() as cur:
        assert ack_gw(cur, [j.job_id for j in jobs], token) == 20
    db.commit()
    assert pending(db) == 30
    # Leased rows are not handed out twice; the rest come next, still in order.
    nxt = claim(db, ALL, 100, 30, new_token())
    assert [j.payload["event"] for j in nxt] == [f"e{i}" for i in range(20, 50)]


def test_payload_with_tabs_backslashes_and_unicode_survives_copy(db):
    tricky = {"type": "track", "userId": "u\t1", "event": "a\\b\nc", "properties": {"x": "é😀\r"}}
    with db.cursor() as cur:
        enqueue_gw(cur, [GatewayRow(0, "src", "u\t1", json.dumps(tricky, ensure_ascii=False), "2026-01-01T00:00:00Z")])
    db.commit()
    [job] = claim(db, ALL, 10, 30, new_token())
    assert job.payload == tricky and job.user_key == "u\t1"


def test_two_concurrent_claimers_never_get_the_same_job(dsn, db):
    fill(db, 3000, users=50)
    seen: dict[str, list[int]] = {"a": [], "b": []}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def worker(name: str) -> None:
        try:
            with contextlib.closing(psycopg2.connect(dsn)) as conn:
                start.wait()
                while True:
                    token = new_token()
                    jobs = claim(conn, ALL, 100, 60, token)
                    if not jobs:
                        return
                    seen[name].extend(j.job_id for j in jobs)
                    with conn.cursor() as cur:
                        assert ack_gw(cur, [j.job_id for j in jobs], token) == len(jobs)
                    conn.commit()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in seen]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert not set(seen["a"]) & set(seen["b"])
    assert len(seen["a"]) + len(seen["b"]) == 3000
    assert seen["a"] and seen["b"], "both claimers should have done some of the work"
    assert pending(db) == 0


def test_expired_lease_returns_jobs_and_fences_the_old_claimer(db):
    fill(db, 10)
    old = new_token()
    first = claim(db, ALL, 10, 0.01, old)  # the claimer "dies": its lease runs out
    assert len(first) == 10
    with db.cursor() as cur:
        cur.execute("SELECT pg_sleep(0.05)")  # let the 10 ms lease pass (server-side clock)
    db.commit()
    new = new_token()
    again = claim(db, ALL, 10, 30, new)
    assert [j.job_id for j in again] == [j.job_id for j in first]
    with db.cursor() as cur:
        assert ack_gw(cur, [j.job_id for j in first], old) == 0, "a stale claimer must not ack"
        assert ack_gw(cur, [j.job_id for j in again], new) == 10
    db.commit()
    assert pending(db) == 0


def test_release_gives_jobs_back_at_once(db):
    fill(db, 5)
    token = new_token()
    jobs = claim(db, ALL, 5, 300, token)
    assert claim(db, ALL, 5, 300, new_token()) == []
    release(db, "gw_jobs", [j.job_id for j in jobs], token)
    assert len(claim(db, ALL, 5, 300, new_token())) == 5


def test_claim_only_touches_owned_parts(db):
    fill(db, 200, users=40)
    parts = [0, 1, 2]
    jobs = claim(db, parts, 1000, 30, new_token())
    assert jobs and all(j.part in parts for j in jobs)
    assert all(partition_of(j.user_key, 16) == j.part for j in jobs)


def test_partition_leases_share_parts_and_take_over_from_a_dead_owner(dsn):
    with contextlib.closing(psycopg2.connect(dsn)) as c1, contextlib.closing(psycopg2.connect(dsn)) as c2:
        a = PartitionLeases("gw", "", 16, "owner-a", ttl=30)
        assert a.refresh(c1) == set(range(16))
        b = PartitionLeases("gw", "", 16, "owner-b", ttl=30)
        assert b.refresh(c2) == set(), "parts held by a live owner are not taken"
        assert len(a.refresh(c1)) == 8, "a newcomer is seen, so the incumbent gives back its extra share"
        assert len(b.refresh(c2)) == 8
        assert a.owned.isdisjoint(b.owned)
        # a dies: its leases and presence expire, and b takes everything.
        with c1.cursor() as cur:
            cur.execute("UPDATE partition_leases SET expires_at = now() - interval '1 second' WHERE owner = 'owner-a'")
            cur.execute("UPDATE lease_owners SET expires_at = now() - interval '1 second' WHERE owner = 'owner-a'")
        c1.commit()
        assert b.refresh(c2) == set(range(16))
        b.release_all(c2)
        assert a.refresh(c1) == set(range(16))


def test_datasets_are_created_ahead_and_finished_ones_dropped(dsn):
    with contextlib.closing(psycopg2.connect(dsn)) as conn:
        with conn.cursor() as cur:
            cur.execute("UPDATE sluice_settings SET value = '100' WHERE key = 'jobs_per_dataset'")
            cur.execute("TRUNCATE gw_jobs")
            for n in datasets.existing(cur, "gw_jobs"):
                cur.execute(f"DROP TABLE gw_jobs_{n}")
        conn.commit()
        datasets.ensure(conn, "gw_jobs")
        fill(conn, 250)  # spills over three datasets of 100
        datasets.ensure(conn, "gw_jobs")
        with conn.cursor() as cur:
            have = datasets.existing(cur, "gw_jobs")
        conn.commit()
        assert have[:3] == [0, 1, 2] and len(have) >= 5
        token = new_token()
        jobs = claim(conn, ALL, 150, 30, token)
        with conn.cursor() as cur:
            ack_gw(cur, [j.job_id for j in jobs], token)
        conn.commit()
        dropped = datasets.drop_finished(conn, "gw_jobs", retention_hours=0)
        assert dropped == ["gw_jobs_0"], "only the fully finished dataset goes; dataset 1 still has pending jobs"
        assert pending(conn) == 100


def test_claim_queries_use_the_pending_indexes(db):
    """STYLE: the claims must keep using their partial indexes, never walk finished rows."""
    from jobsdb.queries import query
    from jobsdb.queue import DeliveryRow, enqueue_delivery

    fill(db, 2000)
    with db.cursor() as cur:
        enqueue_delivery(cur, "rt_jobs", [DeliveryRow(i % 16, f"d{i % 4}", "src", f"u{i % 50}", f"m{i}", {"i": i})
                                          for i in range(4000)])
        cur.execute("UPDATE rt_jobs SET state = 1 WHERE job_id < 3000")
        cur.execute("UPDATE gw_jobs SET state = 1 WHERE job_id < 1500")
        cur.execute("ANALYZE gw_jobs")
        cur.execute("EXPLAIN " + query("claim_gw"), {"token": 1, "lease": 60, "parts": ALL, "limit": 100,
                                                     "owner": OWNER})
        plan = "\n".join(r[0] for r in cur.fetchall())
        cur.execute("ANALYZE rt_jobs")
        cur.execute("EXPLAIN " + query("rt_ready", table="rt_jobs"),
                    {"parts": ALL, "limit": 100, "dest": "d1", "blocked": []})
        rt_plan = "\n".join(r[0] for r in cur.fetchall())
    db.rollback()
    # The selection of pending rows (the part that grows with the backlog) walks the partial index.
    assert "gw_jobs_0_job_id_part_idx" in plan, plan
    assert "rt_jobs_0_destination_id_job_id" in rt_plan, rt_plan


@pytest.mark.parametrize("user", ["alice", "bob@example.com", "", "ü"])
def test_partition_of_is_stable(user):
    assert partition_of(user, 16) == partition_of(user, 16)
    assert 0 <= partition_of(user, 16) < 16


def test_claims_are_fenced_by_the_partition_lease(db):
    """A processor that lost (or never had) a part's lease claims nothing there."""
    fill(db, 40, users=40)
    mine = [p for p in ALL if p % 2 == 0]
    hold(db, ALL, owner="someone-else")
    assert claim_gw(db, ALL, 100, 30, new_token(), OWNER) == []
    hold(db, mine)
    jobs = claim_gw(db, ALL, 100, 30, new_token(), OWNER)
    assert jobs and {j.part for j in jobs} <= set(mine)
    with db.cursor() as cur:  # the lease expires: the next claim gets nothing
        cur.execute("UPDATE partition_leases SET expires_at = now() - interval '1 second'")
    db.commit()
    assert claim_gw(db, ALL, 100, 30, new_token(), OWNER) == []


def test_claims_count_attempts_and_handing_back_does_not(db):
    from jobsdb.queue import release_gw

    fill(db, 3)
    token = new_token()
    jobs = claim(db, ALL, 10, 300, token)
    assert [j.attempts for j in jobs] == [1, 1, 1]
    release_gw(db, [j.job_id for j in jobs], token, count_attempt=False)  # handed back unused
    token = new_token()
    jobs = claim(db, ALL, 10, 300, token)
    assert [j.attempts for j in jobs] == [1, 1, 1]
    release_gw(db, [j.job_id for j in jobs], token, count_attempt=True)  # the batch failed
    assert [j.attempts for j in claim(db, ALL, 10, 300, new_token())] == [2, 2, 2]


def test_a_takeover_never_lets_a_users_later_jobs_overtake_a_batch_being_acked(dsn):
    """The old owner's ack runs into the new owner's voiding of its claims: the ack updates nothing, but
    Postgres keeps those rows locked by the ack's transaction until it rolls back. A claim that skipped
    locked rows took the user's later jobs first (seen in the long run: one batch of a user's events
    delivered after the next five). The claim must wait for those rows instead."""
    part = partition_of("user-7", 16)
    old, new, acker = (psycopg2.connect(dsn) for _ in range(3))
    try:
        fill_user(old, "user-7", 6)
        hold(old, [part], "owner-old")
        first = claim_gw(old, [part], 3, 60, 111, "owner-old")
        assert [j.attempts for j in first] == [1, 1, 1]
        ids = [j.job_id for j in first]
        # The new owner takes the part over and voids the old claims (its transaction still open) ...
        hold(new, [part], "owner-new")
        with new.cursor() as cur:
            assert reset_part_claims(cur, "gw_jobs", [part]) == 3
        # ... while the old owner's commit acks its batch: it waits for those rows.
        acked: list[int] = []
        ack = threading.Thread(target=lambda: acked.append(ack_gw(acker.cursor(), ids, 111)))
        ack.start()
        wait_for_lock_wait(dsn)
        new.commit()
        ack.join(10)
        assert acked == [0], "the old owner's ack found nothing of its own (it will roll back)"
        # The ack's transaction is still open: the new owner's claim must not pass its rows by.
        claimed: list = []
        claimer = threading.Thread(target=lambda: claimed.append(claim_gw(new, [part], 10, 60, 222, "owner-new")))
        claimer.start()
        claimer.join(1.0)
        acker.rollback()
        claimer.join(10)
        assert [j.job_id for j in claimed[0]] == sorted(ids + [j for j in all_ids(new, "user-7") if j not in ids])
    finally:
        for conn in (old, new, acker):
            conn.close()


def fill_user(conn, user: str, n: int) -> None:
    with conn.cursor() as cur:
        enqueue_gw(cur, [GatewayRow(partition_of(user, 16), "src", user,
                                    json.dumps({"type": "track", "userId": user, "event": f"e{i}"}),
                                    "2026-01-01T00:00:00Z") for i in range(n)])
    conn.commit()


def all_ids(conn, user: str) -> list[int]:
    with conn.cursor() as cur:
        cur.execute("SELECT job_id FROM gw_jobs WHERE user_key = %s ORDER BY job_id", (user,))
        ids = [r[0] for r in cur.fetchall()]
    conn.commit()
    return ids


def wait_for_lock_wait(dsn: str, timeout: float = 10) -> None:
    import time

    deadline = time.monotonic() + timeout
    with contextlib.closing(psycopg2.connect(dsn)) as conn:
        conn.autocommit = True
        while time.monotonic() < deadline:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                            "AND datname = current_database()")
                if cur.fetchone()[0]:
                    return
            time.sleep(0.02)
    raise AssertionError("nothing waited for a lock")
