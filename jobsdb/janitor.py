"""Housekeeping in one place: whichever process holds the janitor's advisory lock drops finished
datasets, creates the next ones, and applies every table's retention; the others stand by.

Processors and routers each run a Janitor thread; Postgres hands the session lock to exactly one of
them, and to another one when that process dies (its session ends). So N processes never race on a
drop, and expiry is one batched job instead of N identical DELETEs.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from jobsdb import datasets
from jobsdb.db import UNAVAILABLE_ERRORS, LongLivedConnection
from jobsdb.processing import expire_failed
from jobsdb.queries import QUEUE_TABLES, query

log = logging.getLogger("sluice.janitor")
LOCK_KEY = 51172  # advisory lock: one janitor at a time (migrations use 51171)
SLICE = 5000      # rows per DELETE
STALE_ROWS_SECONDS = 3600.0  # leases, presence rows, heartbeats and rate-limit rows unused this long go


@dataclass
class Retention:
    retention_hours: float = 24.0            # finished datasets older than this are dropped
    dedup_window_seconds: float | None = 3600.0  # None: dedup is off, no keys to expire
    rejected_retention_hours: float = 48.0
    failed_retention_days: float = 30.0
    stale_rows_seconds: float = STALE_ROWS_SECONDS


@dataclass
class Report:
    """What one round did (for logs and tests)."""

    dropped: list[str] = field(default_factory=list)
    deleted: dict[str, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.dropped or any(self.deleted.values()))


def run_round(conn, retention: Retention) -> Report:
    """One housekeeping round on an autocommit connection. The caller must hold the janitor lock."""
    report = Report()
    for table in QUEUE_TABLES:
        datasets.ensure(conn, table)
    for table in QUEUE_TABLES:
        report.dropped += datasets.drop_finished(conn, table, retention.retention_hours)
    if retention.dedup_window_seconds is not None:
        report.deleted["dedup_keys"] = _sliced(conn, "janitor_dedup_expire", seconds=retention.dedup_window_seconds)
    report.deleted["gw_rejected"] = _sliced(conn, "janitor_rejected_expire",
                                            seconds=retention.rejected_retention_hours * 3600)
    report.deleted["failed_jobs"] = expire_failed(conn, retention.failed_retention_days, SLICE)
    stale = retention.stale_rows_seconds
    for name, table in (("janitor_owners_expire", "lease_owners"), ("janitor_leases_expire", "partition_leases"),
                        ("janitor_heartbeats_expire", "heartbeats"),
                        ("janitor_rate_limits_expire", "rate_limits")):
        report.deleted[table] = _once(conn, name, seconds=stale)
    report.deleted["filtered_counts"] = _once(conn, "janitor_filtered_expire",
                                              days=max(int(retention.failed_retention_days), 1))
    return report


def _sliced(conn, name: str, **args) -> int:
    total = 0
    while True:
        n = _once(conn, name, limit=SLICE, **args)
        total += n
        if n < SLICE:
            return total


def _once(conn, name: str, **args) -> int:
    with conn.cursor() as cur:
        cur.execute(query(name), args)
        n = cur.rowcount
    if not conn.autocommit:
        conn.commit()
    return n


def try_lock(conn) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
        return bool(cur.fetchone()[0])


class Janitor(threading.Thread):
    """Runs housekeeping rounds every `interval` seconds while this process holds the janitor lock."""

    def __init__(self, dsn: str, retention: Retention, interval: float = 10.0, name: str = "janitor",
                 on_round: Callable[[Report], None] | None = None):
        super().__init__(name=name, daemon=True)
        self.retention = retention
        self.interval = interval
        self.on_round = on_round
        self.stop_event = threading.Event()
        self.db = LongLivedConnection(dsn, "sluice-janitor", autocommit=True, stop=self.stop_event, logger=log)
        self.holds_lock = False
        self.rounds = 0

    def run(self) -> None:
        while not self.stop_event.is_set():
            started = time.monotonic()
            try:
                self.step()
            except UNAVAILABLE_ERRORS as exc:
                self.holds_lock = False
                self.db.drop()
                if self.stop_event.is_set():
                    break
                log.warning("janitor lost its connection", extra={"error": str(exc).strip()[:200]})
            except Exception:  # noqa: BLE001 - housekeeping must never take its process down
                log.exception("janitor round failed; trying again next round")
                self.holds_lock = False
                self.db.drop()
            self.stop_event.wait(max(0.0, self.interval - (time.monotonic() - started)))
        self.db.close()

    def step(self) -> Report | None:
        conn = self.db.get()
        if not self.holds_lock:
            self.holds_lock = try_lock(conn)
            if self.holds_lock:
                log.info("this process is the janitor")
        if not self.holds_lock:
            return None
        report = run_round(conn, self.retention)
        self.rounds += 1
        if report:
            log.info("housekeeping", extra={"dropped": report.dropped,
                                            "deleted": {k: v for k, v in report.deleted.items() if v}})
        if self.on_round is not None:
            self.on_round(report)
        return report

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        if self.is_alive():
            self.join(timeout)
        with contextlib.suppress(Exception):
            self.db.close()


def retention_from(settings) -> Retention:
    return Retention(
        retention_hours=settings.retention_hours,
        dedup_window_seconds=settings.dedup_window_seconds if settings.dedup_enabled else None,
        rejected_retention_hours=settings.gw_rejected_retention_hours,
        failed_retention_days=settings.failed_jobs_retention_days,
    )
