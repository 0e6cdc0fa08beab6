"""Connections to Postgres: one place that knows how Sluice talks to its database."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras
import tenacity

# Errors meaning "the database is not reachable right now" (as opposed to a bug in our SQL).
UNAVAILABLE_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)
# Errors meaning "Postgres refused this data": the rows are at fault, not the connection. Check these
# before UNAVAILABLE_ERRORS: psycopg2 files "program limit exceeded" (a value too large) under
# OperationalError. A lone surrogate fails before it reaches the server, as UnicodeEncodeError.
DATA_ERRORS = (psycopg2.DataError, psycopg2.errors.ProgramLimitExceeded, UnicodeEncodeError)
# Errors meaning "this transaction lost a race with another process" (deadlock detected, serialization
# failure): Postgres rolled it back; trying again is all there is to do. Also filed under OperationalError.
CONFLICT_ERRORS = (psycopg2.errors.TransactionRollbackError,)


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


class LongLivedConnection:
    """A connection a process keeps for its lifetime: opened on first use, reopened after a failure with
    exponential backoff (tenacity), until it connects or `stop` is set. Every long-lived connection in
    Sluice goes through this one class.

        db = LongLivedConnection(dsn, "sluice-processor", stop=stop_event)
        conn = db.get()          # waits (with backoff) until Postgres answers
        ...                      # on an UNAVAILABLE_ERRORS: db.drop(), then get() again

    A failure streak slows reconnecting down (0.5 s doubling to `max_backoff`); it is forgotten once a
    connection has stayed healthy for `healthy_after` seconds or the caller says `healthy()`.
    """

    def __init__(self, dsn: str, application_name: str, *, autocommit: bool = False,
                 on_connect: Callable[[Any], None] | None = None, stop: threading.Event | None = None,
                 max_backoff: float = 10.0, healthy_after: float = 30.0, logger: logging.Logger | None = None):
        self.dsn = dsn
        self.application_name = application_name
        self.autocommit = autocommit
        self.on_connect = on_connect
        self.stop = stop
        self.max_backoff = max_backoff
        self.healthy_after = healthy_after
        self.log = logger or logging.getLogger("sluice.db")
        self.conn: psycopg2.extensions.connection | None = None
        self._failures = 0
        self._connected_at = 0.0

    def get(self) -> psycopg2.extensions.connection:
        """The open connection, connecting first if needed. Raises UNAVAILABLE_ERRORS only once `stop` is set."""
        if self.conn is not None and not self.conn.closed:
            return self.conn
        retry = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(UNAVAILABLE_ERRORS),
            wait=tenacity.wait_exponential(multiplier=0.5, max=self.max_backoff),
            stop=tenacity.stop_never if self.stop is None else _stop_on(self.stop),
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        if self._failures:
            # A connection just failed: the first reconnect waits as the streak says, later ones back off further.
            self._sleep(min(0.5 * 2 ** (self._failures - 1), self.max_backoff))
        self.conn = retry(self._open)
        self._connected_at = time.monotonic()
        return self.conn

    def _open(self) -> psycopg2.extensions.connection:
        conn = connect(self.dsn, self.application_name, autocommit=self.autocommit)
        if self.on_connect is not None:
            try:
                self.on_connect(conn)
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.close()
                raise
        return conn

    def _sleep(self, seconds: float) -> None:
        if self.stop is None:
            time.sleep(seconds)
        elif self.stop.wait(seconds):
            raise psycopg2.OperationalError("stopping")

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        self.log.warning("database unavailable, reconnecting",
                         extra={"connection": self.application_name, "attempt": state.attempt_number,
                                "retry_in_s": round(state.next_action.sleep, 2) if state.next_action else None,
                                "error": _first_line(exc)})

    def drop(self, failed: bool = True) -> None:
        """Close the connection (after an error). The next get() reconnects, backing off while failures repeat."""
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
        if failed:
            if self._connected_at and time.monotonic() - self._connected_at > self.healthy_after:
                self._failures = 0
            self._failures += 1

    def healthy(self) -> None:
        self._failures = 0

    def close(self) -> None:
        self.drop(failed=False)


def _stop_on(event: threading.Event):
    return lambda state: event.is_set()


def _first_line(exc: BaseException | None) -> str:
    text = str(exc or "").strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def redact_dsn(dsn: str) -> str:
    """The DSN with its password masked, for logs and messages (URL and key=value forms)."""
    import re

    masked = re.sub(r"^([a-zA-Z][\w+.-]*://[^:/?#@]*:)(.*)(@[^@]*)$", r"\1***\3", dsn)
    return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", r"\1***", masked)
