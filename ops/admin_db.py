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


def _prepare(conn, lock_timeout_ms: int = LOCK_TIMEOUT_MS) -> None:
    conn.cursor_factory = CountingCursor
    was = conn.autocommit
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}; SET lock_timeout = {int(lock_timeout_ms)}")
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
    its own transaction, so nothing it reads holds back vacuum."""
    return LongLivedConnection(dsn, name, autocommit=True, stop=stop, logger=logger,
                               on_connect=lambda conn: _prepare(conn, lock_timeout_ms))
