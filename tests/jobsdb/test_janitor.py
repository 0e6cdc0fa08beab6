"""The janitor against a real Postgres: datasets leave without racing writers, one janitor at a time,
retention of every table, and recovery from a drop interrupted half-way."""

from __future__ import annotations

import contextlib
import json
import threading
from datetime import UTC, datetime

import psycopg2
import pytest

from jobsdb import datasets, janitor
from jobsdb.queue import GatewayRow, enqueue_gw, partition_of
from tests.support.procs import wait_for

SIZE = 100


def connect(dsn, autocommit=False, name="sluice-test"):
    conn = psycopg2.connect(dsn, application_name=name)
    conn.autocommit = autocommit
    return conn


def small_datasets(dsn) -> None:
    """Datasets of 100 jobs, starting from empty."""
    with contextlib.closing(connect(dsn)) as conn:
        with conn.cursor() as cur:
            cur.execute("UPDATE sluice_settings SET value = %s WHERE key = 'jobs_per_dataset'", (str(SIZE),))
            for table in ("gw_jobs", "rt_jobs", "batch_rt_jobs"):
                cur.execute(f"TRUNCATE {table}")
                for n in datasets.existing(cur, table):
                    cur.execute(f"DROP TABLE {table}_{n}")
        conn.commit()
        for table in ("gw_jobs", "rt_jobs", "batch_rt_jobs"):
            datasets.ensure(conn, table)


def fill(conn, n: int) -> None:
    rows = [GatewayRow(partition_of(f"u{i % 7}", 16), "src", f"u{i % 7}",
                       json.dumps({"type": "track", "userId": f"u{i % 7}", "event": "e", "messageId": f"m{i}"}),
                       datetime.now(UTC).isoformat()) for i in range(n)]
    for start in range(0, n, 50):  # slices, with a dataset check between them, as the writers do
        datasets.ensure(conn, "gw_jobs")
        with conn.cursor() as cur:
            enqueue_gw(cur, rows[start:start + 50])
        conn.commit()


def finish(conn, below: int) -> None:
    with conn.cursor() as cur:
        cur.execute("UPDATE gw_jobs SET state = 1 WHERE job_id < %s", (below,))
    conn.commit()


def have(conn, table="gw_jobs") -> list[int]:
    with conn.cursor() as cur:
        out = datasets.existing(cur, table)
    conn.commit()
    return out


def scalar(conn, statement, args=None):
    with conn.cursor() as cur:
        cur.execute(statement, args)
        value = cur.fetchone()[0]
    conn.commit()
    return value


def test_finished_datasets_go_and_the_rest_stay(dsn):
    small_datasets(dsn)
    with contextlib.closing(connect(dsn)) as conn, contextlib.closing(connect(dsn, True)) as jc:
        fill(conn, 250)  # datasets 0, 1, 2 hold jobs 1..250
        finish(conn, 150)
        dropped = datasets.drop_finished(jc, "gw_jobs", retention_hours=0)
        assert dropped == ["gw_jobs_0"], "dataset 1 still has pending jobs; 2 is being written"
        assert have(conn)[0] == 1
        assert scalar(conn, "SELECT count(*) FROM gw_jobs WHERE state = 0") == 101
        # Not old enough: nothing goes with a day of retention.
        finish(conn, 200)
        assert datasets.drop_finished(jc, "gw_jobs", retention_hours=24) == []
        assert datasets.drop_finished(jc, "gw_jobs", retention_hours=0) == ["gw_jobs_1"]


def test_a_dataset_a_writer_holds_is_left_alone(dsn):
    """An insert into an old dataset is still uncommitted when the janitor looks (the race of a check
    followed by a drop). The janitor neither waits for it nor makes anyone wait: it leaves the dataset
    for a later round, and the row is kept."""
    small_datasets(dsn)
    with contextlib.closing(connect(dsn)) as conn, contextlib.closing(connect(dsn, True, "sluice-janitor")) as jc, \
            contextlib.closing(connect(dsn)) as writer:
        fill(conn, 250)
        finish(conn, 251)  # every job done: datasets 0 and 1 are candidates
        with writer.cursor() as cur:  # an event about to be acknowledged, still in its transaction
            cur.execute("INSERT INTO gw_jobs (job_id, part, source_id, user_key, payload) "
                        "VALUES (42, 0, 'src', 'late', '{\"late\": true}')")
        result: dict = {}
        t = threading.Thread(target=lambda: result.setdefault("dropped", datasets.drop_finished(jc, "gw_jobs", 0)))
        t.start()
        # Dataset 1 is free to go, but a detach waits for the transactions using the queue, this one too.
        wait_for(lambda: scalar(conn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                      "'sluice-janitor' AND wait_event_type = 'Lock'"), 20, what="the janitor to wait")
        writer.commit()
        t.join(30)
        assert result["dropped"] == ["gw_jobs_1"], "dataset 0 was held by the writer when the janitor looked"
        assert datasets.drop_finished(jc, "gw_jobs", 0) == [], "its pending job keeps dataset 0"
        assert scalar(conn, "SELECT count(*) FROM gw_jobs WHERE job_id = 42 AND state = 0") == 1


def test_an_insert_that_lands_during_the_detach_is_attached_back(dsn):
    """The last line of defence: a writer whose transaction predates the detach inserts into the dataset
    while the janitor waits for it. The janitor's check under its lock sees the row; the dataset goes back
    into the queue, and nothing acknowledged is lost."""
    small_datasets(dsn)
    with contextlib.closing(connect(dsn)) as conn, contextlib.closing(connect(dsn, True, "sluice-janitor")) as jc, \
            contextlib.closing(connect(dsn)) as writer:
        fill(conn, 250)
        finish(conn, 251)
        writer.set_session(isolation_level="REPEATABLE READ")
        with writer.cursor() as cur:  # uses the queue, but not dataset 0 (yet)
            cur.execute("SELECT count(*) FROM gw_jobs WHERE job_id > 200")
        result: dict = {}
        t = threading.Thread(target=lambda: result.setdefault("dropped", datasets.drop_finished(jc, "gw_jobs", 0)))
        t.start()
        wait_for(lambda: scalar(conn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                      "'sluice-janitor' AND wait_event_type = 'Lock'"), 20, what="the janitor to wait")
        # Meanwhile the queue is not blocked: another writer and a claim-like read go through at once.
        with contextlib.closing(connect(dsn)) as other, other.cursor() as cur:
            cur.execute("SET lock_timeout = '2s'")
            cur.execute("INSERT INTO gw_jobs (part, source_id, user_key, payload) VALUES (1, 'src', 'x', '{}')")
            cur.execute("SELECT count(*) FROM gw_jobs WHERE state = 0")
            other.commit()
        with writer.cursor() as cur:
            cur.execute("INSERT INTO gw_jobs (job_id, part, source_id, user_key, payload) "
                        "VALUES (42, 0, 'src', 'late', '{\"late\": true}')")
        writer.commit()
        t.join(30)
        assert not t.is_alive()
        assert "gw_jobs_0" not in result["dropped"]
        assert scalar(conn, "SELECT count(*) FROM gw_jobs WHERE job_id = 42 AND state = 0") == 1
        assert 0 in have(conn), "the dataset with the late event is attached again"


def test_two_janitors_one_lock(dsn):
    small_datasets(dsn)
    retention = janitor.Retention(retention_hours=0)
    with contextlib.closing(connect(dsn)) as conn:
        fill(conn, 250)
        finish(conn, 251)
    a = janitor.Janitor(dsn, retention, interval=0.1, name="janitor-a")
    b = janitor.Janitor(dsn, retention, interval=0.1, name="janitor-b")
    try:
        ra, rb = a.step(), b.step()
        assert (ra is None) != (rb is None), "exactly one of them holds the lock"
        assert (ra or rb).dropped == ["gw_jobs_0", "gw_jobs_1"]
        # The holder goes away (its session ends): the other one takes over.
        holder, other = (a, b) if ra is not None else (b, a)
        holder.db.close()
        holder.holds_lock = False
        # (the server lets go of the session's lock when its backend has exited: a moment later)
        wait_for(lambda: other.step() is not None, 10, what="the other janitor to take over")
    finally:
        a.db.close()
        b.db.close()


def test_two_droppers_at_once_without_the_lock(dsn):
    """Even without the janitor lock (an older process, an operator), a dataset that another process has
    already removed is not an error."""
    small_datasets(dsn)
    with contextlib.closing(connect(dsn)) as conn:
        fill(conn, 450)
        finish(conn, 451)
    results, errors = [], []

    def drop():
        try:
            with contextlib.closing(connect(dsn, True)) as jc:
                results.append(datasets.drop_finished(jc, "gw_jobs", 0))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=drop) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    with contextlib.closing(connect(dsn, True)) as jc:  # what a collision left half-way goes next round
        results.append(datasets.drop_finished(jc, "gw_jobs", 0))
    names = [n for r in results for n in r]
    assert sorted(names) == [f"gw_jobs_{n}" for n in range(4)], "each finished dataset dropped exactly once"


def test_a_drop_interrupted_half_way_is_finished(dsn):
    small_datasets(dsn)
    with contextlib.closing(connect(dsn)) as conn, contextlib.closing(connect(dsn, True)) as jc:
        fill(conn, 350)
        finish(conn, 351)
        with conn.cursor() as cur:
            cur.execute("UPDATE gw_jobs SET state = 0 WHERE job_id = 150")  # dataset 1 keeps a pending job
        conn.commit()
        # Dataset 0: a concurrent detach cancelled while it waited (left "detach pending").
        holder = connect(dsn)
        with holder.cursor() as cur:
            cur.execute("SELECT count(*) FROM gw_jobs")
        with jc.cursor() as cur:
            cur.execute("SET statement_timeout = '300ms'")
            with pytest.raises(psycopg2.errors.QueryCanceled):
                cur.execute("ALTER TABLE gw_jobs DETACH PARTITION gw_jobs_0 CONCURRENTLY")
            cur.execute("SET statement_timeout = 0")
        holder.rollback()
        holder.close()
        assert datasets.detaching(jc.cursor(), "gw_jobs") == [0]
        # Dataset 1: detached by a janitor that died before its check (a pending job inside).
        with jc.cursor() as cur:
            cur.execute("ALTER TABLE gw_jobs DETACH PARTITION gw_jobs_1")
        assert datasets.detached(jc.cursor(), "gw_jobs") == [1]
        dropped = datasets.drop_finished(jc, "gw_jobs", 0)
        assert "gw_jobs_0" in dropped and "gw_jobs_1" not in dropped
        assert 1 in have(conn)
        assert scalar(conn, "SELECT count(*) FROM gw_jobs WHERE state = 0") == 1


def test_retention_of_every_table(dsn):
    with contextlib.closing(connect(dsn)) as conn:
        with conn.cursor() as cur:
            for age in ("2 hours", "1 minute"):
                cur.execute("INSERT INTO dedup_keys (source_id, message_id, seen_at) "
                            "SELECT 's', %s || g, now() - %s::interval FROM generate_series(1, 6000) g", (age, age))
                cur.execute("INSERT INTO gw_rejected (received_at, status, reason) "
                            "SELECT now() - %s::interval, 400, 'bad' FROM generate_series(1, 30) g",
                            ("3 days" if age == "2 hours" else age,))
            cur.execute("INSERT INTO lease_owners VALUES ('gw', '', 'dead', now() - interval '2 hours'), "
                        "('gw', '', 'alive', now() + interval '1 minute')")
            cur.execute("INSERT INTO partition_leases VALUES ('rt', 'gone-dest', 3, 'dead', now() - interval '2 hours')")
            cur.execute("INSERT INTO heartbeats (owner, role, host, beat_at) VALUES "
                        "('processor@h/1', 'processor', 'h', now() - interval '2 hours'), "
                        "('processor@h/2', 'processor', 'h', now())")
            cur.execute("INSERT INTO rate_limits VALUES ('gw:old', now() - interval '2 hours'), ('gw:new', now())")
            cur.execute("INSERT INTO failed_jobs (stage, event, reason, failed_at) VALUES "
                        "('router', '{}', 'old', now() - interval '40 days'), ('router', '{}', 'new', now())")
        conn.commit()
        report = janitor.run_round(connect(dsn, True), janitor.Retention(
            retention_hours=24, dedup_window_seconds=3600, rejected_retention_hours=48, failed_retention_days=30))
        assert report.deleted["dedup_keys"] == 6000  # more than one slice
        assert report.deleted["gw_rejected"] == 30
        assert report.deleted["lease_owners"] == 1
        assert report.deleted["partition_leases"] == 1
        assert report.deleted["heartbeats"] == 1
        assert report.deleted["rate_limits"] == 1
        assert report.deleted["failed_jobs"] == 1
        assert scalar(conn, "SELECT count(*) FROM dedup_keys") == 6000
        assert scalar(conn, "SELECT count(*) FROM gw_rejected") == 30
        assert scalar(conn, "SELECT string_agg(owner, ',') FROM lease_owners") == "alive"
        assert scalar(conn, "SELECT reason FROM failed_jobs") == "new"
