"""Fixtures for the gateway's robustness tests: the embedded Postgres to stop, and raw HTTP helpers."""

from __future__ import annotations

import contextlib

import psycopg2
import pytest


@pytest.fixture
def postgres(pg_server):
    """The session's embedded Postgres, to stop; it is always started again, whatever the test did."""
    if pg_server.embedded is None:
        pytest.fail("this test needs the embedded test Postgres (unset SLUICE_TEST_DATABASE_URL)")
    try:
        yield pg_server
    finally:
        pg_server.start()


def fetch(dsn: str, sql: str, args: tuple = ()) -> list[tuple]:
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute(sql, args or None)
        rows = cur.fetchall()
        conn.commit()
        return rows
