"""Group commit: concurrent requests of one gateway process share one transaction.

Request threads hand their rows to a single writer thread and wait; the writer COPYs everything that
arrived while the previous commit was running, commits once, and wakes every waiter. A request is
answered only after its rows are committed; if the transaction fails, every request in it fails.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg2
from psycopg2 import errors

from config.metrics import metrics
from jobsdb import datasets
from jobsdb.db import UNAVAILABLE_ERRORS, connect
from jobsdb.queue import GatewayRow, enqueue_gw, insert_rejected

log = logging.getLogger("sluice.gateway")


class DatabaseUnavailable(Exception):
    """Postgres could not be reached or the commit failed: the client should retry (503)."""


class RequestDataError(Exception):
    """Postgres refused this request's data (not its neighbours'): the client should not retry (400)."""


@dataclass
class _Pending:
    rows: Sequence[GatewayRow]
    rejected: Sequence[tuple]
    done: threading.Event = field(default_factory=threading.Event)
    error: Exception | None = None


class GroupCommitter:
    def __init__(self, dsn: str, max_wait_ms: float = 0.0, max_events: int = 5000, wait_timeout: float = 30.0,
                 offload=None):
        self.dsn = dsn
        self.offload = offload  # runs the database work elsewhere (gevent: a native thread), or None
        self.max_wait = max_wait_ms / 1000.0
        self.max_events = max_events
        self.wait_timeout = wait_timeout
        self._queue: list[_Pending] = []
        self._background: list[tuple] = []  # rejected rows nobody waits for
        self._cond = threading.Condition()
        self._conn = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._last_ensure = 0.0
        self.commits = 0
        self.committed_rows = 0
        self._last_commit: tuple[int, float] | None = None

    def start(self) -> GroupCommitter:
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread:
            self._thread.join(timeout=10)
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()

    def submit(self, rows: Sequence[GatewayRow], rejected: Sequence[tuple] = ()) -> None:
        """Block until `rows` (and the rejection records) are committed, or raise."""
        item = _Pending(rows, rejected)
        with self._cond:
            if self._stopping:
                raise DatabaseUnavailable("gateway is shutting down")
            self._queue.append(item)
            self._cond.notify()
        if not item.done.wait(self.wait_timeout):
            raise DatabaseUnavailable("timed out waiting for the database")
        if item.error is not None:
            raise item.error

    def record_rejected(self, rejected: Sequence[tuple]) -> None:
        """Queue rejection records to be written with the next commit; never blocks the caller."""
        with self._cond:
            if len(self._background) < 10_000:  # bounded: a flood of bad requests cannot eat memory
                self._background.extend(rejected)
            self._cond.notify()

    # writer thread -------------------------------------------------------------------------------------

    def _take(self) -> tuple[list[_Pending], list[tuple]]:
        with self._cond:
            while not self._queue and not self._background and not self._stopping:
                self._cond.wait()
            if self.max_wait and self._queue:
                deadline = time.monotonic() + self.max_wait
                while sum(len(p.rows) for p in self._queue) < self.max_events and not self._stopping:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            batch, n = [], 0
            while self._queue and (not batch or n + len(self._queue[0].rows) <= self.max_events):
                item = self._queue.pop(0)
                batch.append(item)
                n += len(item.rows)
            background, self._background = self._background, []
            return batch, background

    def _run(self) -> None:
        while True:
            batch, background = self._take()
            if not batch and not background:
                if self._stopping:
                    return
                continue
            try:
                self._last_commit = None
                if self.offload is None:
                    self._write(batch, background)
                else:
                    self.offload(self._write, (batch, background))
                if self._last_commit is not None:  # metrics here, not on the offload thread (gevent locks)
                    m = metrics()
                    m.commit_rows.observe(self._last_commit[0])
                    m.commit_seconds.observe(self._last_commit[1])
            except Exception as exc:  # noqa: BLE001 - every waiter must be woken, whatever happened
                log.error("group commit failed: %s", exc)
                self._drop_connection()
                err = exc if isinstance(exc, DatabaseUnavailable) else DatabaseUnavailable(str(exc).strip())
                for item in batch:
                    item.error = err
            for item in batch:
                item.done.set()

    def _connection(self):
        if self._conn is None or self._conn.closed:
            try:
                self._conn = connect(self.dsn, "sluice-gateway")
            except UNAVAILABLE_ERRORS as exc:
                raise DatabaseUnavailable(f"database unreachable: {str(exc).strip()}") from exc
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None

    def _write(self, batch: list[_Pending], background: list[tuple]) -> None:
        started = time.monotonic()
        conn = self._connection()
        rows = [r for item in batch for r in item.rows]
        rejected = [r for item in batch for r in item.rejected] + background
        for attempt in (1, 2):
            try:
                with conn.cursor() as cur:
                    enqueue_gw(cur, rows)
                    insert_rejected(cur, rejected)
                conn.commit()
                break
            except errors.CheckViolation:
                # No dataset for these job ids yet: create it and try once more.
                conn.rollback()
                if attempt == 2:
                    raise
                datasets.ensure(conn, "gw_jobs")
            except psycopg2.DataError:
                conn.rollback()
                self._write_one_by_one(conn, batch, background)
                return
        self.commits += 1
        self.committed_rows += len(rows)
        now = time.monotonic()
        self._last_commit = (len(rows), now - started)
        if now - self._last_ensure > 2.0:
            self._last_ensure = now
            datasets.ensure(conn, "gw_jobs")

    def _write_one_by_one(self, conn, batch: list[_Pending], background: list[tuple]) -> None:
        """Postgres refused some row: isolate the request it belongs to, commit the others."""
        with conn.cursor() as cur:
            for item in batch:
                cur.execute("SAVEPOINT one_request")
                try:
                    enqueue_gw(cur, item.rows)
                    insert_rejected(cur, item.rejected)
                    cur.execute("RELEASE SAVEPOINT one_request")
                except psycopg2.DataError as exc:
                    cur.execute("ROLLBACK TO SAVEPOINT one_request")
                    item.error = RequestDataError(str(exc).strip().splitlines()[0])
            insert_rejected(cur, background)
        conn.commit()
