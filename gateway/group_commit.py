"""Group commit: concurrent requests of one gateway process share one transaction.

Request threads hand their rows to a single writer thread and wait; the writer COPYs everything that
arrived while the previous commit was running, commits once, and wakes every waiter. A request is
answered only after its rows are committed; if the transaction fails, every request in it fails.

Rejection records ride along, after the accepted rows and in a savepoint: a record Postgres refuses
is degraded or dropped (and counted), never the reason accepted events fail.

The writer's connection is a jobsdb.db.LongLivedConnection. While Postgres is unreachable it is
reconnected in the background (with backoff) and waiting requests fail at once with 503, so SDKs
retry instead of waiting out the backoff. The writer also records this worker's heartbeat.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg2

from config.metrics import metrics
from gateway import offload
from gateway.rejections import count_unrecorded, degrade
from jobsdb import datasets, heartbeats
from jobsdb.db import UNAVAILABLE_ERRORS, LongLivedConnection
from jobsdb.queue import GatewayRow, enqueue_gw, insert_rejected

log = logging.getLogger("sluice.gateway")
MAX_BACKGROUND = 10_000  # rejection records waiting for a commit: a flood of bad requests cannot eat memory


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
                 offload=None, heartbeat_seconds: float = 5.0, connect_grace: float = 1.0):
        self.db = LongLivedConnection(dsn, "sluice-gateway", logger=log)
        self.offload = offload  # runs the database work elsewhere (gevent: a native thread), or None
        self.max_wait = max_wait_ms / 1000.0
        self.max_events = max_events
        self.wait_timeout = wait_timeout
        self.heartbeat_seconds = heartbeat_seconds
        self.connect_grace = connect_grace  # how long a batch waits for a connection being opened
        self.owner = heartbeats.owner_of("gateway")
        self._queue: list[_Pending] = []
        self._background: list[tuple] = []  # rejected rows nobody waits for
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._online = False  # the writer has a connection
        self._connecting = False
        self._last_ensure = 0.0
        self._next_beat = 0.0
        self.commits = 0
        self.committed_rows = 0
        self.last_ok: float | None = None  # monotonic time of the last successful transaction
        self.last_error: str | None = None
        self._last_commit: tuple[int, float] | None = None
        self._unstored = 0

    def start(self) -> GroupCommitter:
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._thread.start()
        self._reconnect()
        return self

    def stop(self) -> None:
        """Commit what is queued, remove this worker's heartbeat, close the connection."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread:
            self._thread.join(timeout=10)
        if self._online:
            with contextlib.suppress(Exception):
                self._call(self._remove_heartbeat)
        self.db.close()

    def state(self) -> dict:
        return {"commits": self.commits, "rows": self.committed_rows, "online": self._online,
                "lastOkAgeS": None if self.last_ok is None else round(time.monotonic() - self.last_ok, 3),
                "lastError": self.last_error}

    def submit(self, rows: Sequence[GatewayRow], rejected: Sequence[tuple] = ()) -> None:
        """Block until `rows` (and the rejection records) are committed, or raise."""
        item = _Pending(rows, rejected)
        with self._cond:
            if self._stopping:
                raise DatabaseUnavailable("gateway is shutting down")
            self._queue.append(item)
            self._cond.notify_all()
        if not item.done.wait(self.wait_timeout):
            raise DatabaseUnavailable("timed out waiting for the database")
        if item.error is not None:
            raise item.error

    def record_rejected(self, rejected: Sequence[tuple]) -> None:
        """Queue rejection records to be written with the next commit; never blocks the caller."""
        if not rejected:
            return
        with self._cond:
            room = MAX_BACKGROUND - len(self._background)
            self._background.extend(rejected[:max(room, 0)])
            self._cond.notify_all()
        if room < len(rejected):
            count_unrecorded("buffer_full", len(rejected) - max(room, 0))

    # connection ----------------------------------------------------------------------------------------

    def _call(self, fn, *args):
        return offload.call(self.offload, fn, *args)

    def _reconnect(self) -> None:
        """Open the connection in the background: get() backs off (tenacity) until Postgres answers."""
        with self._cond:
            if self._connecting or self._stopping:
                return
            self._connecting = True
        threading.Thread(target=self._connect, name="group-commit-connect", daemon=True).start()

    def _connect(self) -> None:
        try:
            self._call(self.db.get)
            online = True
        except Exception as exc:  # noqa: BLE001 - get() only gives up when asked to stop
            log.error("group commit cannot connect", extra={"error": str(exc).strip()[:300]})
            online = False
        with self._cond:
            self._connecting = False
            self._online = online
            self._cond.notify_all()

    def _lost(self, exc: Exception) -> None:
        self.last_error = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        self._online = False
        self.db.drop()
        self._reconnect()

    # writer thread -------------------------------------------------------------------------------------

    def _take(self) -> tuple[list[_Pending], list[tuple]]:
        with self._cond:
            # Rejection records alone wait for a connection; requests do not (they fail fast below).
            while not self._queue and not (self._background and self._online) and not self._stopping:
                left = self._next_beat - time.monotonic()
                if left <= 0 and self._online:
                    return [], []  # idle: time for a heartbeat
                self._cond.wait(max(left, 0.05) if self._online else None)
            if not self._online and self._queue and not self._stopping:
                # A connection is being opened (start-up, or after a failure): wait briefly, then fail fast.
                deadline = time.monotonic() + self.connect_grace
                while not self._online and (left := deadline - time.monotonic()) > 0:
                    self._cond.wait(left)
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
                if self._online and time.monotonic() >= self._next_beat:
                    self._transact(self._beat)
                continue
            if not self._online:
                err = DatabaseUnavailable(f"database unreachable, reconnecting: {self.last_error or 'connecting'}")
                for item in batch:
                    item.error = err
                    item.done.set()
                if self._stopping:
                    count_unrecorded("store_failed", len(background))
                else:
                    with self._cond:  # kept for the next commit, within the bound
                        keep = background[:max(MAX_BACKGROUND - len(self._background), 0)]
                        self._background[:0] = keep
                    count_unrecorded("buffer_full", len(background) - len(keep))
                    self._reconnect()  # no-op while a reconnect is under way
                continue
            self._last_commit = None
            self._unstored = 0
            error = self._transact(self._write, batch, background)
            if error is None:
                if self._last_commit is not None:  # metrics here, not on the offload thread (gevent locks)
                    m = metrics()
                    m.commit_rows.observe(self._last_commit[0])
                    m.commit_seconds.observe(self._last_commit[1])
                count_unrecorded("store_failed", self._unstored)
            else:
                err = error if isinstance(error, DatabaseUnavailable) else DatabaseUnavailable(self.last_error)
                for item in batch:
                    item.error = err
            for item in batch:
                item.done.set()
            if error is None and time.monotonic() >= self._next_beat:
                self._transact(self._beat)

    def _transact(self, fn, *args) -> Exception | None:
        """Run fn(conn, ...) on the writer's connection; on failure, reconnect and return the error."""
        try:
            self._call(fn, self.db.conn, *args)
        except Exception as exc:  # noqa: BLE001 - every waiter must be woken, whatever happened
            log.error("group commit failed", extra={"error": str(exc).strip()[:300]})
            self._lost(exc)
            return exc
        self.last_ok = time.monotonic()
        self.last_error = None
        return None

    # on the offload thread -----------------------------------------------------------------------------

    def _beat(self, conn) -> None:
        self._next_beat = time.monotonic() + self.heartbeat_seconds
        with conn.cursor() as cur:
            heartbeats.beat(cur, self.owner, "gateway")
        conn.commit()

    def _remove_heartbeat(self) -> None:
        conn = self.db.conn
        if conn is not None and not conn.closed:
            with conn.cursor() as cur:
                heartbeats.remove(cur, self.owner)
            conn.commit()

    def _write(self, conn, batch: list[_Pending], background: list[tuple]) -> None:
        started = time.monotonic()
        rows = [r for item in batch for r in item.rows]
        rejected = [r for item in batch for r in item.rejected] + background
        for attempt in (1, 2):
            try:
                with conn.cursor() as cur:
                    enqueue_gw(cur, rows)
                    self._store_rejected(cur, rejected)
                conn.commit()
                break
            except psycopg2.errors.CheckViolation:
                # No dataset for these job ids yet: create it and try once more.
                conn.rollback()
                if attempt == 2:
                    raise
                datasets.ensure(conn, "gw_jobs")
            except psycopg2.DataError:
                conn.rollback()
                self._write_one_by_one(conn, batch, rejected)
                break
        self.commits += 1
        self.committed_rows += sum(len(item.rows) for item in batch if item.error is None)
        now = time.monotonic()
        self._last_commit = (len(rows), now - started)
        if now - self._last_ensure > 2.0:
            self._last_ensure = now
            datasets.ensure(conn, "gw_jobs")

    def _write_one_by_one(self, conn, batch: list[_Pending], rejected: list[tuple]) -> None:
        """Postgres refused some row: isolate the request it belongs to, commit the others."""
        with conn.cursor() as cur:
            for item in batch:
                cur.execute("SAVEPOINT one_request")
                try:
                    enqueue_gw(cur, item.rows)
                    cur.execute("RELEASE SAVEPOINT one_request")
                except psycopg2.DataError as exc:
                    cur.execute("ROLLBACK TO SAVEPOINT one_request")
                    item.error = RequestDataError(str(exc).strip().splitlines()[0])
            self._store_rejected(cur, rejected)
        conn.commit()

    def _store_rejected(self, cur, rejected: list[tuple]) -> None:
        """Rejection records after the accepted rows, in a savepoint: if Postgres refuses them (they are
        sanitised, so this is a last resort), try them degraded, then drop them with a log line."""
        if not rejected:
            return
        for rows in (rejected, [degrade(r) for r in rejected]):
            cur.execute("SAVEPOINT rejected")
            try:
                insert_rejected(cur, rows)
            except UNAVAILABLE_ERRORS:
                raise
            except (psycopg2.Error, ValueError) as exc:  # ValueError: psycopg2 refuses NUL before sending
                cur.execute("ROLLBACK TO SAVEPOINT rejected")
                error = str(exc).strip()
            else:
                cur.execute("RELEASE SAVEPOINT rejected")
                return
        log.error("rejection records dropped: Postgres refused them", extra={"records": len(rejected),
                                                                            "error": error[:300]})
        self._unstored += len(rejected)
