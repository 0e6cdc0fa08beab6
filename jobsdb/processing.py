"""Queue SQL the processor needs besides claim and ack: shared messageId dedup, filtered counts,
dead letters, and the housekeeping of those tables. Every function runs in the caller's transaction
unless it says it commits."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg2.extras import execute_values

from jobsdb import storable
from jobsdb.queries import query

MAX_PAYLOAD_BYTES = 4 * 1024 * 1024  # a dead letter's delivery payload beyond this is kept as a note


def dedup_new_keys(cur, keys: Sequence[tuple[str, str]], window_seconds: float) -> set[tuple[str, str]]:
    """Record (source_id, message_id) keys; return those not seen within the window.

    Keys must be distinct. Inside the batch transaction, so a key is only remembered if the batch's
    output commits; a concurrent processor holding the same uncommitted key makes this wait for it."""
    if not keys:
        return set()
    cur.execute(
        query("dedup_new_keys"),
        {"sources": [k[0] for k in keys], "ids": [k[1] for k in keys], "window": window_seconds},
    )
    return {(s, m) for s, m in cur.fetchall()}


def dedup_expire(cur, window_seconds: float) -> int:
    cur.execute(query("dedup_expire"), {"window": window_seconds})
    return cur.rowcount


def add_filtered(cur, counts: Mapping[tuple[str, str, str], int]) -> None:
    """counts: (source_id, destination_id, rule) -> events dropped by that rule today."""
    if not counts:
        return
    keys = sorted(counts)
    cur.execute(
        query("filtered_add"),
        {
            "sources": [k[0] for k in keys],
            "destinations": [k[1] for k in keys],
            "rules": [k[2] for k in keys],
            "counts": [counts[k] for k in keys],
        },
    )


@dataclass(frozen=True)
class FailedRow:
    """One dead letter: an event a stage gave up on, with why."""

    stage: str  # user_transform, dest_transform, router
    source_id: str | None
    destination_id: str | None
    destination_type: str | None
    user_key: str | None
    message_id: str | None
    event: Any  # the original event (JSON-able)
    reason: str
    payload: Any = None
    status_code: int | None = None
    response: str | None = None
    attempts: int = 1
    attempt_history: Any = None
    original_job_id: int | None = None
    original_queue: str | None = None


def insert_failed(cur, rows: Iterable[FailedRow]) -> int:
    """Store dead letters. Whatever a dead letter holds, it is stored: text is cleaned, and a value jsonb
    cannot hold is replaced by a note saying why, with an excerpt (a dead letter must never fail)."""
    text, js = storable.text, storable.json_or_note
    values = [
        (r.stage, text(r.source_id), text(r.destination_id), text(r.destination_type), text(r.user_key),
         text(r.message_id), js(r.event) or "{}", js(r.payload, MAX_PAYLOAD_BYTES), text(r.reason, 10_000),
         r.status_code, text(r.response, 10_000), r.attempts, js(r.attempt_history), r.original_job_id,
         r.original_queue)
        for r in rows
    ]
    if values:
        execute_values(cur, query("insert_failed"), values,
                       template="(%s,%s,%s,%s,%s,%s,%s::jsonb,%s::jsonb,%s,%s,%s,%s,%s::jsonb,%s,%s)",
                       page_size=1000)
    return len(values)


def expire_failed(conn, retention_days: float, limit: int = 10_000) -> int:
    """Delete dead letters older than the retention, in slices so no transaction grows large. Commits."""
    total = 0
    while True:
        with conn.cursor() as cur:
            cur.execute(query("failed_expire"), {"days": retention_days, "limit": limit})
            n = cur.rowcount
        conn.commit()
        total += n
        if n < limit:
            return total


def lease_owners(cur, queue: str, prefix: str) -> list[str]:
    cur.execute(query("lease_owners"), {"queue": queue, "prefix": _like_escape(prefix) + "%"})
    return [r[0] for r in cur.fetchall()]


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def expire_owner_leases(cur, owners: Sequence[str]) -> int:
    if not owners:
        return 0
    cur.execute(query("expire_owner_leases"), {"owners": list(owners)})
    return cur.rowcount
