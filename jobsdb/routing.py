"""Router side of the queue: claim ready jobs past the per-user barrier, record outcomes in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from jobsdb import storable
from jobsdb.processing import FailedRow, insert_failed
from jobsdb.queries import query

ROUTER_TABLES = ("rt_jobs", "batch_rt_jobs")
LEASE_QUEUE = {"rt_jobs": "rt", "batch_rt_jobs": "batch_rt"}  # partition_leases.queue of each table
RESPONSE_CHARS = 1024  # of a destination's answer kept with a delivered job (rt_jobs.last_response)


@dataclass
class DeliveryJob:
    job_id: int
    part: int
    user_key: str
    source_id: str
    message_id: str | None
    payload: dict
    attempts: int
    first_attempt_at: datetime | None
    created_at: datetime


def active_destinations(cur, table: str) -> list[str]:
    cur.execute(query("active_destinations", table=table))
    return [r[0] for r in cur.fetchall()]


def claim_ready(conn, table: str, dest: str, parts: Sequence[int], limit: int,
                barrier: bool = True) -> list[DeliveryJob]:
    """The oldest ready jobs of owned parts, leaving out users held back by a job in backoff (unless
    `barrier` is off: a warehouse merges on id, so per-user order does not matter there). Commits.

    No row is written: the caller owns these parts (partition leases), and record() is fenced by them."""
    args = {"dest": dest, "parts": list(parts), "limit": limit, "blocked": []}
    with conn.cursor() as cur:
        if barrier:
            cur.execute(query("blocked_users", table=table), args)
            args["blocked"] = [r[0] for r in cur.fetchall()]
        cur.execute(query("rt_ready", table=table), args)
        rows = cur.fetchall()
    conn.commit()
    return [DeliveryJob(*r) for r in rows]


def next_retry_at(cur, table: str, dest: str, parts: Sequence[int]) -> datetime | None:
    cur.execute(query("next_retry_at", table=table), {"dest": dest, "parts": list(parts)})
    return cur.fetchone()[0]


@dataclass
class Outcomes:
    """What happened to claimed jobs in one round; written by record()."""

    delivered: list[tuple]                              # (job_id, status[, response body])
    retry: list[tuple[int, int, float, int, str]]       # (job_id, counted attempt 0/1, delay s, status, error)
    aborted: list[tuple[int, FailedRow]]                # (job_id, dead letter)
    released: list[int]                                 # read but not tried (held behind a failure): no write


def record(conn, table: str, dest: str, owner: str, parts: Sequence[int], out: Outcomes) -> bool:
    """Write every outcome of a round in one transaction, fenced by our leases on `parts`.

    Returns False (and writes nothing) when a part was taken over meanwhile: its new owner re-does the work."""
    parts = sorted(set(parts))
    args = {"dest": dest, "owner": owner, "parts": parts, "queue": LEASE_QUEUE[table]}
    with conn.cursor() as cur:
        cur.execute(query("rt_hold_parts"), args)
        if sorted(r[0] for r in cur.fetchall()) != parts:
            conn.rollback()
            return False
        if out.delivered:
            cur.execute(query("rt_delivered", table=table), {
                **args, "ids": [d[0] for d in out.delivered], "statuses": [d[1] for d in out.delivered],
                "responses": _responses(out.delivered)})
        if out.retry:
            cur.execute(query("rt_retry", table=table), {
                **args, "ids": [r[0] for r in out.retry], "counted": [r[1] for r in out.retry],
                "delays": [r[2] for r in out.retry], "statuses": [r[3] for r in out.retry],
                "errors": [storable.text(r[4], 2000) for r in out.retry]})
        if out.aborted:
            cur.execute(query("rt_aborted", table=table), {**args, "ids": [a[0] for a in out.aborted]})
            insert_failed(cur, [a[1] for a in out.aborted])
    conn.commit()
    return True


def _responses(delivered: Sequence[tuple]) -> list[str | None]:
    """The answers stored with delivered jobs, cut to RESPONSE_CHARS; a batch's one answer is cut once."""
    cut: dict[int, str | None] = {}
    out = []
    for d in delivered:
        body = d[2] if len(d) > 2 else None
        if body is None:
            out.append(None)
            continue
        key = id(body)
        if key not in cut:
            cut[key] = storable.text(body, RESPONSE_CHARS)
        out.append(cut[key])
    return out


def drain(conn, table: str, dest: str, reason: str, dest_type: str | None, limit: int = 1000) -> int:
    """Move a destination's pending jobs to failed_jobs with `reason`. Commits per slice; returns how many."""
    total = 0
    while True:
        with conn.cursor() as cur:
            cur.execute(query("rt_drain_batch", table=table), {"dest": dest, "limit": limit})
            rows = cur.fetchall()
            insert_failed(cur, [
                FailedRow(stage="router", source_id=source_id, destination_id=dest, destination_type=dest_type,
                          user_key=user_key, message_id=message_id, event=payload.get("event", payload),
                          reason=reason, payload=payload.get("requests"), status_code=last_status,
                          response=last_error, attempts=attempts, original_job_id=job_id, original_queue=table)
                for job_id, user_key, source_id, message_id, payload, attempts, last_status, last_error in rows])
        conn.commit()
        total += len(rows)
        if len(rows) < limit:
            return total
