"""A gateway worker's small side connection to Postgres, for short statements off the commit path
(/health, the shared rate limit).

One autocommit connection per use per worker, reused across requests, with a short statement timeout.
While Postgres is down a caller is answered at once: the connection is retried at most once per
`retry_every` seconds, never with a backoff the request would wait through. Calls run through the
worker's offload (gevent: a native thread), one at a time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg2
from psycopg2 import errors

from gateway import offload
from jobsdb.db import UNAVAILABLE_ERRORS, LongLivedConnection


class _Always:
    """A stop signal that is always set: LongLivedConnection then tries once instead of backing off."""

    def is_set(self) -> bool:
        return True

    def wait(self, timeout: float | None = None) -> bool:
        return True


class SideConnection:
    def __init__(self, dsn: str, application_name: str, *, statement_timeout_ms: int = 1000,
                 synchronous_commit: bool = True, offload: Callable | None = None, retry_every: float = 1.0):
        def on_connect(conn) -> None:
            with conn.cursor() as cur:
                cur.execute("SET statement_timeout = %s", (int(statement_timeout_ms),))
                if not synchronous_commit:  # e.g. rate-limit state: losing the last instant on a crash is harmless
                    cur.execute("SET synchronous_commit = off")

        self.db = LongLivedConnection(dsn, application_name, autocommit=True, on_connect=on_connect, stop=_Always())
        self.offload = offload
        self.retry_every = retry_every
        self._lock = threading.Lock()  # taken on the caller's side (a greenlet under gevent)
        self._failed_at = 0.0
        self._last_error = "not connected yet"

    def run(self, fn: Callable[..., Any], *args) -> Any:
        """fn(cursor, *args) on the side connection. Raises UNAVAILABLE_ERRORS when Postgres cannot be
        reached (at once while a recent attempt failed) and psycopg2 errors for a failed statement."""
        with self._lock:
            return offload.call(self.offload, self._run, fn, args)

    def _run(self, fn, args):
        if self.db.conn is None or self.db.conn.closed:
            if time.monotonic() - self._failed_at < self.retry_every:
                raise psycopg2.OperationalError(f"database unreachable: {self._last_error}")
            try:
                self.db.get()
            except UNAVAILABLE_ERRORS as exc:
                self._failed(exc)
                raise
        try:
            with self.db.conn.cursor() as cur:
                return fn(cur, *args)
        except UNAVAILABLE_ERRORS as exc:
            if self.db.conn is None or self.db.conn.closed or not isinstance(exc, errors.QueryCanceled):
                self._failed(exc)
            raise

    def _failed(self, exc: BaseException) -> None:
        text = str(exc).strip()
        self._last_error = text.splitlines()[0][:200] if text else type(exc).__name__
        self._failed_at = time.monotonic()
        self.db.drop(failed=False)  # no backoff streak: the next attempt is paced by retry_every

    def close(self) -> None:
        with self._lock:
            self.db.close()
