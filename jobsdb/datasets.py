"""Queue datasets: range partitions of job_id, created ahead of the writers and dropped whole when finished."""

from __future__ import annotations

import contextlib
import logging
import re
import time

from psycopg2 import errors, sql

from jobsdb.db import transaction
from jobsdb.queries import QUEUE_TABLES

log = logging.getLogger("sluice.jobsdb")
AHEAD = 2  # datasets kept ready beyond the one being written
PRECHECK_TRIES = 20  # instants tried, 10 ms apart, to find a dataset free of writers
_TIME_COLUMN = {"gw_jobs": "received_at", "rt_jobs": "created_at", "batch_rt_jobs": "created_at"}


def dataset_size(cur) -> int:
    cur.execute("SELECT value FROM sluice_settings WHERE key = 'jobs_per_dataset'")
    row = cur.fetchone()
    return int(row[0]) if row else 100_000


def existing(cur, table: str) -> list[int]:
    """Dataset numbers of a queue table, ascending."""
    cur.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s",
        (table,),
    )
    nums = []
    for (name,) in cur.fetchall():
        m = re.fullmatch(rf"{table}_(\d+)", name)
        if m:
            nums.append(int(m.group(1)))
    return sorted(nums)


def ensure(conn, table: str) -> None:
    """Create datasets so the sequence's next values and AHEAD more datasets have a home."""
    saved = conn.autocommit
    if saved:
        conn.autocommit = False  # the creators' lock below is a transaction lock
    try:
        _ensure(conn, table)
    finally:
        if saved:
            conn.autocommit = True


def _ensure(conn, table: str) -> None:
    with transaction(conn) as cur:
        size = dataset_size(cur)
        cur.execute(sql.SQL("SELECT last_value FROM {}").format(sql.Identifier(f"{table}_job_id_seq")))
        current = cur.fetchone()[0] // size
        have = set(existing(cur, table))
        wanted = [n for n in range(current, current + AHEAD + 1) if n not in have and (not have or n > min(have))]
        if not wanted:
            return
        # Serialise creators; ATTACH takes a lock that does not block concurrent inserts.
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"datasets:{table}",))
        have = set(existing(cur, table))
        for n in wanted:
            if n in have:
                continue
            name = sql.Identifier(f"{table}_{n}")
            lo, hi = n * size, (n + 1) * size
            cur.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(name, sql.Identifier(table)))
            cur.execute(
                sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK (job_id >= {} AND job_id < {})").format(
                    name, sql.Identifier(f"{table}_{n}_range"), sql.Literal(lo), sql.Literal(hi)
                )
            )
            cur.execute(
                sql.SQL("ALTER TABLE {} SET (autovacuum_vacuum_scale_factor = 0.02, fillfactor = 90)").format(name)
            )
            cur.execute(
                sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
                    sql.Identifier(table), name, sql.Literal(lo), sql.Literal(hi)
                )
            )
            log.info("created dataset", extra={"table": table, "dataset": n})


def ensure_all(conn) -> None:
    for table in QUEUE_TABLES:
        ensure(conn, table)


def drop_finished(conn, table: str, retention_hours: float) -> list[str]:
    """Drop the datasets of `table` whose jobs are all terminal and older than the retention, never the
    one being written nor those ahead of it. Returns the names dropped. Safe against writers and against
    another process dropping the same datasets (that is not an error).

    A dataset leaves in three steps, so that no check is ever followed by a drop it no longer justifies:
    1. a pre-check picks candidates: newest job past the retention, and no pending job at an instant
       when no writer holds the dataset (a SHARE lock taken with NOWAIT: it never makes anyone wait);
    2. `DETACH PARTITION … CONCURRENTLY` takes it out of the queue without blocking gateway COPYs or
       claims; it waits for every transaction still using the queue, so an insert in flight either
       finished before (its row is then seen below) or fails on its own and is retried by its writer;
    3. under a lock on the detached table that excludes any writer, the authoritative check:
       no pending job → DROP; a pending job → ATTACH it back, nothing lost.
    The same steps finish a dataset left half-way by a crash (detach pending, or detached not dropped).
    """
    saved = conn.autocommit
    conn.autocommit = True  # DETACH … CONCURRENTLY cannot run inside a transaction block
    try:
        with conn.cursor() as cur:
            size = dataset_size(cur)
            cur.execute(sql.SQL("SELECT last_value FROM {}").format(sql.Identifier(f"{table}_job_id_seq")))
            current = cur.fetchone()[0] // size
            attached = existing(cur, table)
            pending_detach = detaching(cur, table)
            orphans = detached(cur, table)
        dropped = []
        for n in sorted(set(pending_detach) | set(orphans)):
            if _finish_detached(conn, table, n, size, pending=n in pending_detach):
                dropped.append(f"{table}_{n}")
        for n in attached:
            if n >= current or n in pending_detach:
                continue
            if not _worth_dropping(conn, table, n, retention_hours):
                continue
            if not _detach(conn, table, n):
                continue
            if _finish_detached(conn, table, n, size, pending=False):
                dropped.append(f"{table}_{n}")
        return dropped
    finally:
        with contextlib.suppress(Exception):
            conn.autocommit = saved


def detaching(cur, table: str) -> list[int]:
    """Datasets whose concurrent detach was interrupted (still attached, marked detach-pending)."""
    cur.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s AND i.inhdetachpending",
        (table,),
    )
    return _numbers(table, (r[0] for r in cur.fetchall()))


def detached(cur, table: str) -> list[int]:
    """Dataset tables that are no longer attached to their queue (a drop interrupted by a crash)."""
    cur.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace ns ON ns.oid = c.relnamespace "
        "WHERE c.relkind = 'r' AND c.relname ~ %s AND ns.nspname = current_schema() "
        "AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid)",
        (rf"^{table}_[0-9]+$",),
    )
    return _numbers(table, (r[0] for r in cur.fetchall()))


def _numbers(table: str, names) -> list[int]:
    out = []
    for name in names:
        m = re.fullmatch(rf"{table}_(\d+)", name)
        if m:
            out.append(int(m.group(1)))
    return sorted(out)


def _worth_dropping(conn, table: str, n: int, retention_hours: float) -> bool:
    """The pre-check: the newest job past the retention, then — at an instant when no writer holds the
    dataset — nothing pending. A dataset a writer still holds is left for a later round: detaching it
    would hide that writer's rows from the claims until they are attached back, and later jobs of the
    same users could overtake them."""
    name = sql.Identifier(f"{table}_{n}")
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT coalesce(max({}) < now() - %s * interval '1 hour', true) FROM {}").format(
                sql.Identifier(_TIME_COLUMN[table]), name), (float(retention_hours),))
            if not cur.fetchone()[0]:
                return False
            for _ in range(PRECHECK_TRIES):
                cur.execute("BEGIN")
                try:
                    # SHARE waits for no one and makes no one wait (NOWAIT): it is granted only at an
                    # instant when no transaction is writing to the dataset, and held for one index probe.
                    cur.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE NOWAIT").format(name))
                except errors.LockNotAvailable:
                    cur.execute("ROLLBACK")
                    time.sleep(0.01)
                    continue
                cur.execute(sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {} WHERE state = 0)").format(name))
                nothing_pending = cur.fetchone()[0]
                cur.execute("COMMIT")
                return bool(nothing_pending)
            return False  # busy all along: next round
    except errors.UndefinedTable:
        with contextlib.suppress(Exception):
            conn.cursor().execute("ROLLBACK")
        return False  # another process removed it meanwhile


def _detach(conn, table: str, n: int) -> bool:
    name = f"{table}_{n}"
    try:
        with conn.cursor() as cur:
            # Bounded: a session idle in a transaction that touched the queue would hold the wait forever.
            # Interrupted, the detach stays pending and the next round finishes it.
            cur.execute("SET statement_timeout = '120s'")
            try:
                cur.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {} CONCURRENTLY").format(
                    sql.Identifier(table), sql.Identifier(name)))
            finally:
                cur.execute("SET statement_timeout = 0")
        return True
    except (errors.UndefinedTable, errors.WrongObjectType, errors.ObjectNotInPrerequisiteState,
            errors.LockNotAvailable, errors.QueryCanceled, errors.DeadlockDetected) as exc:
        # Gone already, detached by another process, or still held: not an error, try again next round.
        log.info("dataset not detached this round", extra={"dataset": name, "why": _first_line(exc)})
        return False


def _finish_detached(conn, table: str, n: int, size: int, pending: bool) -> bool:
    """Finish taking dataset n out: finalize an interrupted detach, then drop it unless it still holds a
    pending job, in which case it is attached back. Returns True when dropped."""
    name = f"{table}_{n}"
    ident = sql.Identifier(name)
    try:
        with conn.cursor() as cur:
            if pending:
                cur.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {} FINALIZE").format(
                    sql.Identifier(table), ident))
            cur.execute("BEGIN")
            try:
                cur.execute("SET LOCAL lock_timeout = '10s'")
                # Detached, the table is reachable by name only: the strongest lock costs nobody anything,
                # excludes any writer, and makes two droppers take turns instead of deadlocking.
                cur.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(ident))
                cur.execute(sql.SQL("SELECT count(*) FROM {} WHERE state = 0").format(ident))
                still_pending = cur.fetchone()[0]
                if still_pending:
                    lo, hi = n * size, (n + 1) * size
                    cur.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
                        sql.Identifier(table), ident, sql.Literal(lo), sql.Literal(hi)))
                    log.warning("dataset had pending jobs after all; attached back",
                                extra={"dataset": name, "pending": still_pending})
                else:
                    cur.execute(sql.SQL("DROP TABLE {}").format(ident))
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        if not still_pending:
            log.info("dropped finished dataset", extra={"dataset": name})
        return not still_pending
    except (errors.UndefinedTable, errors.WrongObjectType, errors.ObjectNotInPrerequisiteState,
            errors.LockNotAvailable, errors.InvalidTableDefinition, errors.DeadlockDetected) as exc:
        log.info("dataset not dropped this round", extra={"dataset": name, "why": _first_line(exc)})
        return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
