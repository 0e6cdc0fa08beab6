"""Queue datasets: range partitions of job_id, created ahead of the writers and dropped whole when finished."""

from __future__ import annotations

import logging
import re

from psycopg2 import errors, sql

from jobsdb.db import transaction
from jobsdb.queries import QUEUE_TABLES

log = logging.getLogger("sluice.jobsdb")
AHEAD = 2  # datasets kept ready beyond the one being written
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
    """Drop datasets whose jobs are all finished and older than the retention, never the newest ones."""
    dropped = []
    with transaction(conn) as cur:
        size = dataset_size(cur)
        cur.execute(sql.SQL("SELECT last_value FROM {}").format(sql.Identifier(f"{table}_job_id_seq")))
        current = cur.fetchone()[0] // size
        candidates = [n for n in existing(cur, table) if n < current]
    for n in candidates:
        name = sql.Identifier(f"{table}_{n}")
        with transaction(conn) as cur:
            cur.execute(
                sql.SQL(
                    "SELECT EXISTS (SELECT 1 FROM {} WHERE state = 0), "
                    "coalesce(max({}) < now() - make_interval(hours => %s), true) FROM {}"
                ).format(name, sql.Identifier(_TIME_COLUMN[table]), name),
                (retention_hours,),
            )
            pending, old_enough = cur.fetchone()
            if pending or not old_enough:
                continue
            cur.execute("SET LOCAL lock_timeout = '2s'")
            try:
                cur.execute(sql.SQL("DROP TABLE {}").format(name))
            except errors.LockNotAvailable:
                continue
            dropped.append(f"{table}_{n}")
    return dropped
