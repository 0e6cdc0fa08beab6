"""Connections to Postgres: one place that knows how Sluice talks to its database."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg2
import psycopg2.extensions
import psycopg2.extras

# Errors meaning "the database is not reachable right now" (as opposed to a bug in our SQL).
UNAVAILABLE_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)


def connect(dsn: str, application_name: str = "sluice", autocommit: bool = False) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(dsn, application_name=application_name, connect_timeout=5,
                            keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3)
    conn.autocommit = autocommit
    return conn


@contextlib.contextmanager
def transaction(conn) -> Iterator[psycopg2.extensions.cursor]:
    """Run a block in one transaction: commit on success, roll back on any error."""
    try:
        with conn.cursor() as cur:
            yield cur
        conn.commit()
    except BaseException:
        with contextlib.suppress(Exception):
            conn.rollback()
        raise


def ping(dsn: str) -> bool:
    try:
        with contextlib.closing(connect(dsn, "sluice-ping", autocommit=True)) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
            return True
    except UNAVAILABLE_ERRORS:
        return False
