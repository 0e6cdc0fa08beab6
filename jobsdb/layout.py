"""The queue's layout, fixed at migrate: dataset size and partition counts.

Every process that writes or leases partitions must agree on the counts, or jobs land in parts nobody
leases. They are stored in `sluice_settings` by `sluice migrate`; a process started with different
settings refuses to run, with the reason.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from jobsdb.db import UNAVAILABLE_ERRORS, LongLivedConnection, connect, transaction

KEYS = {"gw_partitions": 16, "router_partitions": 16, "jobs_per_dataset": 100_000}


EXIT_CONFIG = 78  # a process's exit status for "configuration error: restarting will not help" (EX_CONFIG)


class LayoutMismatch(Exception):
    """A process's settings disagree with the layout stored in the database."""


@dataclass(frozen=True)
class Layout:
    gw_partitions: int
    router_partitions: int
    jobs_per_dataset: int


def store(cur, **values: int) -> None:
    """Record the layout once (first migrate wins; later values are ignored, never overwritten)."""
    for key, value in values.items():
        if key not in KEYS:
            raise ValueError(key)
        if int(value) <= 0:
            raise ValueError(f"{key} must be positive, found {value}")
        cur.execute("INSERT INTO sluice_settings (key, value) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                    (key, str(int(value))))


def read(cur) -> Layout:
    cur.execute("SELECT key, value FROM sluice_settings WHERE key = ANY(%s)", (list(KEYS),))
    found = {k: int(v) for k, v in cur.fetchall()}
    return Layout(**{k: found.get(k, default) for k, default in KEYS.items()})


def load(dsn: str) -> Layout:
    conn = connect(dsn, "sluice-layout")
    try:
        with transaction(conn) as cur:
            return read(cur)
    finally:
        conn.close()


def require(dsn: str, process: str, **wanted: int) -> Layout:
    """The stored layout, or exit with a clear message when this process's settings differ."""
    return check(load(dsn), process, **wanted)


def check(layout: Layout, process: str, **wanted: int) -> Layout:
    """Raise LayoutMismatch, naming the setting, when this process's settings differ from `layout`."""
    for key, value in wanted.items():
        stored = getattr(layout, key)
        if int(value) != stored:
            raise LayoutMismatch(
                f"sluice {process}: {key} is {value} here (SLUICE_{key.upper()}) but {stored} in the database "
                f"(fixed when the queue was created by `sluice migrate`); start every process with "
                f"SLUICE_{key.upper()}={stored}, or jobs would be stranded in partitions nobody leases")
    return layout


def wait_and_check(dsn: str, process: str, stop: threading.Event, **wanted: int) -> Layout | None:
    """check() against the database, waiting for Postgres (with backoff) as long as it takes.
    Returns None if `stop` was set first."""
    db = LongLivedConnection(dsn, f"sluice-{process}", stop=stop)
    try:
        while not stop.is_set():
            try:
                conn = db.get()
                with transaction(conn) as cur:
                    stored = read(cur)
                return check(stored, process, **wanted)
            except UNAVAILABLE_ERRORS:
                db.drop()
        return None
    finally:
        db.close()


def refuse_or_wait(settings, process: str, stop: threading.Event, log) -> int | None:
    """At a process's start: wait for Postgres, then check its partition counts against the database's.
    Returns the exit status to stop with (EXIT_CONFIG, logged with the reason; 0 if stopped meanwhile),
    or None to go on."""
    try:
        wait_and_check(settings.database_url, process, stop, gw_partitions=settings.gw_partitions,
                       router_partitions=settings.router_partitions)
    except LayoutMismatch as exc:
        log.error(str(exc))
        return EXIT_CONFIG
    return 0 if stop.is_set() else None
