"""The admin service's connections to Postgres, and a count of the statements it runs (shown on the page
and read by bench/admin_page.py: what the page costs the database)."""

from __future__ import annotations

import contextlib
import threading
import time

import psycopg2.extensions

from jobsdb.db import LongLivedConnection, connect

STATEMENT_TIMEOUT_MS = 20_000  # a lookup over a long window must not run forever
LOCK_TIMEOUT_MS = 500  # an abort waits this long for a router's round on the same row, then says "busy"


class QueryCount:
    def __init__(self):
        self.n = 0
        self.started = time.time()
        self.lock = threading.Lock()

    def add(self) -> None:
        with self.lock:
            self.n += 1

    def snapshot(self) -> dict:
        return {"statements": self.n, "since": self.started, "seconds": round(time.time() - self.started, 1)}


STATEMENTS = QueryCount()


class CountingCursor(psycopg2.extensions.cursor):
    def execute(self, query, vars=None):  # noqa: A002 - psycopg2's own parameter name
        STATEMENTS.add()
        return super().execute(query, vars)


# The background readers only read the newest rows of the queue datasets, through their BRIN indexes. The
# planner cannot know that `job_id > <newest seen>` matches a few rows (no btree covers every job_id, and a
# new dataset has no statistics), so left alone it scans whole datasets in parallel: measured 10-20 ms per
# read against 0.5 ms through the summarised BRIN index on a 40K-row dataset (docs/benchmarks.md).
NEWEST_ROWS_PLANNER = "SET enable_seqscan = off; SET max_parallel_workers_per_gather = 0"


def _prepare(conn, lock_timeout_ms: int = LOCK_TIMEOUT_MS, newest_rows: bool = False) -> None:
    conn.cursor_factory = CountingCursor
    was = conn.autocommit
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}; SET lock_timeout = {int(lock_timeout_ms)}")
        if newest_rows:
            cur.execute(NEWEST_ROWS_PLANNER)
    conn.autocommit = was


@contextlib.contextmanager
def request_connection(dsn: str):
    """A connection for one page request (low traffic: opened and closed each time)."""
    conn = connect(dsn, "sluice-admin")
    try:
        _prepare(conn)
        yield conn
    finally:
        conn.close()


def long_lived(dsn: str, name: str, stop: threading.Event, lock_timeout_ms: int = LOCK_TIMEOUT_MS,
               logger=None) -> LongLivedConnection:
    """An autocommit connection for a background reader (the live tail, the overview): every statement is
    its own transaction, so nothing it reads holds back vacuum; reads of the newest rows go through the
    BRIN indexes (NEWEST_ROWS_PLANNER)."""
    return LongLivedConnection(dsn, name, autocommit=True, stop=stop, logger=logger,
                               on_connect=lambda conn: _prepare(conn, lock_timeout_ms, newest_rows=True))
