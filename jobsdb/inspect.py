"""Reads for the admin page and `sluice jobs`: the newest rows of each queue, figures per destination,
one job, lookups; and the operator's "abort now" of a job in backoff. Every function runs on the
caller's cursor and transaction unless it says it commits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from psycopg2 import errors

from jobsdb import routing
from jobsdb.processing import FailedRow, insert_failed
from jobsdb.queries import query
from jobsdb.replay import Selection

DELIVERY_TABLES = ("rt_jobs", "batch_rt_jobs")
STAGE_OF_TABLE = {"rt_jobs": "router", "batch_rt_jobs": "warehouse"}  # as the router's dead letters say
ABORT_MARGIN_SECONDS = 2.0  # a job due sooner than this may be in a router's hands: not aborted


def _dicts(cur) -> list[dict[str, Any]]:
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def sequences(cur) -> dict[str, int]:
    """The last job id handed out per queue table."""
    cur.execute(query("admin_sequences"))
    gw, rt, batch_rt = cur.fetchone()
    return {"gw_jobs": gw, "rt_jobs": rt, "batch_rt_jobs": batch_rt}


def summarize_newest(cur, last_ids: dict[str, int], dataset_size: int, cache: dict | None = None) -> int:
    """Summarise the newest pages of the newest datasets in their BRIN indexes, so a read of the newest
    rows reads only those. Skips a dataset another process holds a conflicting lock on (a vacuum): the
    read is then slower, not wrong. Needs an autocommit cursor with a short lock_timeout. Returns the
    ranges summarised. `cache` (a dict the caller keeps) remembers the indexes of the same datasets."""
    tables = []
    for table, last in last_ids.items():
        n = max(0, int(last)) // max(1, dataset_size)
        tables += [f"{table}_{n}", f"{table}_{n - 1}"] if n else [f"{table}_{n}"]
    cache = {} if cache is None else cache
    if cache.get("tables") != tables:
        cur.execute(query("admin_brin_indexes"), {"tables": tables})
        cache.update(tables=tables, indexes=[r[0] for r in cur.fetchall()])
    done = 0
    for index in cache["indexes"]:
        try:
            cur.execute(query("admin_brin_summarize"), {"index": index})
            done += cur.fetchone()[0] or 0
        except (errors.UndefinedTable, errors.UndefinedObject):
            cache.clear()  # a dataset was dropped: look the indexes up again next time
        except (errors.LockNotAvailable, errors.InsufficientPrivilege):
            pass
    return done


# ---- the live tail ------------------------------------------------------------------------------------

def tail_accepted(cur, after: int, limit: int, max_bytes: int, seen: Sequence[int] = ()) -> list[tuple]:
    """Accepted events after `after`, except the ids in `seen` (read before: their payloads are not
    taken apart again)."""
    cur.execute(query("admin_tail_gw"), {"after": after, "limit": limit, "max_bytes": max_bytes,
                                         "seen": list(seen)})
    return cur.fetchall()


def tail_delivery(cur, table: str, after: int, limit: int, max_bytes: int, seen: Sequence[int] = ()) -> list[tuple]:
    cur.execute(query("admin_tail_delivery", table=table), {"after": after, "limit": limit, "max_bytes": max_bytes,
                                                            "seen": list(seen)})
    return cur.fetchall()


STATUS_GAP = 500  # ids further apart than this are read as separate ranges


def id_ranges(ids: Sequence[int], gap: int = STATUS_GAP) -> tuple[list[int], list[int]]:
    """Sorted ids as (lows, highs) of the runs in which neighbours are at most `gap` apart."""
    lows: list[int] = []
    highs: list[int] = []
    for i in sorted(ids):
        if highs and i - highs[-1] <= gap:
            highs[-1] = i
        else:
            lows.append(i)
            highs.append(i)
    return lows, highs


def delivery_status(cur, table: str, ids: Sequence[int]) -> list[tuple]:
    """Where these delivery jobs stand now. The ids come in runs (each poll of the live tail watches a run of
    the newest jobs): each run is one BRIN range read, and the ids only filter what it found."""
    if not ids:
        return []
    lows, highs = id_ranges(ids)
    cur.execute(query("admin_tail_status", table=table), {"ids": list(ids), "lows": lows, "highs": highs})
    return cur.fetchall()


def dead_letter_reasons(cur, table: str, dests: Sequence[str], ids: Sequence[int]) -> dict[int, tuple]:
    """original_job_id -> (reason, status, response, failed_at) for recent dead letters of these jobs."""
    if not ids:
        return {}
    cur.execute(query("admin_dead_letter_reasons"), {"dests": sorted(set(dests)), "queue": table, "ids": list(ids)})
    return {r[0]: r[1:] for r in cur.fetchall()}


# ---- the overview -------------------------------------------------------------------------------------

def accepted_buckets(cur, since: datetime) -> list[tuple]:
    """(source_id, 10 s bucket start, events accepted)."""
    cur.execute(query("admin_accepted_buckets"), {"since": since})
    return cur.fetchall()


def rejected_buckets(cur, since: datetime) -> list[tuple]:
    cur.execute(query("admin_rejected_buckets"), {"since": since})
    return cur.fetchall()


def delivered_buckets(cur, since: datetime) -> list[tuple]:
    """(destination_id, latency bin or None, 10 s bucket of delivery, jobs), both delivery queues."""
    out = []
    for table in DELIVERY_TABLES:
        cur.execute(query("admin_delivered_buckets", table=table), {"since": since})
        out += cur.fetchall()
    return out


def failed_buckets(cur, since: datetime) -> list[tuple]:
    cur.execute(query("admin_failed_buckets"), {"since": since})
    return cur.fetchall()


def retrying(cur) -> list[dict[str, Any]]:
    """Per delivery queue and destination: jobs in backoff, the next attempt, the latest answer."""
    out = []
    for table in DELIVERY_TABLES:
        cur.execute(query("admin_retrying", table=table))
        out += [{"queue": table, **r} for r in _dicts(cur)]
    return out


def waiting(cur) -> dict[str, int]:
    """destination_id -> jobs held back by the per-user barrier."""
    out: dict[str, int] = {}
    for table in DELIVERY_TABLES:
        cur.execute(query("admin_waiting", table=table))
        for dest, n in cur.fetchall():
            out[dest] = out.get(dest, 0) + n
    return out


def queue_destinations(cur) -> dict[str, set[str]]:
    """Destinations with pending jobs, per delivery queue."""
    return {table: set(routing.active_destinations(cur, table)) for table in DELIVERY_TABLES}


def pending(cur, table: str, dest: str, cap: int) -> tuple[int, float | None]:
    """(pending jobs, counted up to `cap`; age in seconds of the oldest)."""
    cur.execute(query("admin_pending", table=table), {"dest": dest, "cap": cap})
    n, age = cur.fetchone()
    return n, age


def filtered_today(cur) -> list[tuple[str, str, str, int]]:
    cur.execute(query("admin_filtered_today"))
    return cur.fetchall()


def db_now(cur) -> datetime:
    cur.execute(query("admin_now"))
    return cur.fetchone()[0]


# ---- failures -----------------------------------------------------------------------------------------

def failed_page(cur, sel: Selection, before_id: int | None, limit: int) -> list[dict[str, Any]]:
    """A page of a dead-letter selection, newest first."""
    cur.execute(query("admin_failed_page", where=query("failed_where")),
                {**sel.params(), "before_id": before_id or 2**62, "limit": limit})
    return _dicts(cur)


def failed_one(cur, failed_id: int) -> dict[str, Any] | None:
    cur.execute(query("admin_failed_one"), {"id": failed_id})
    rows = _dicts(cur)
    return rows[0] if rows else None


def retrying_jobs(cur, dest: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Jobs in backoff (both delivery queues), the next due first, with how many of the same user's jobs
    wait behind each."""
    jobs = []
    for table in DELIVERY_TABLES:
        cur.execute(query("admin_retrying_jobs", table=table), {"dest": dest, "limit": limit})
        rows = cur.fetchall()
        cols = ("job_id", "destination_id", "source_id", "user_key", "message_id", "attempts", "first_attempt_at",
                "last_attempt_at", "next_attempt_at", "last_status", "last_error", "created_at")
        found = [{"queue": table, **dict(zip(cols, r, strict=True))} for r in rows]
        if found:
            cur.execute(query("admin_waiting_by_user", table=table), {
                "dests": sorted({j["destination_id"] for j in found}), "users": sorted({j["user_key"] for j in found})})
            behind = {(d, u): n for d, u, n in cur.fetchall()}
            for j in found:
                j["waiting_behind"] = behind.get((j["destination_id"], j["user_key"]), 0)
        jobs += found
    jobs.sort(key=lambda j: (j["next_attempt_at"], j["job_id"]))
    return jobs[:limit]


def abort_retrying(conn, table: str, job_id: int, by: str, margin: float = ABORT_MARGIN_SECONDS) -> FailedRow | None:
    """Move a job in backoff to failed_jobs, as the router moves a job whose retry budget ran out, with a
    reason naming the operator. None (nothing changed) when the job is not in backoff any more, or its next
    attempt is due within `margin` seconds. Commits."""
    if table not in DELIVERY_TABLES:
        raise ValueError(table)
    try:
        with conn.cursor() as cur:
            cur.execute(query("admin_abort_retrying", table=table), {"id": job_id, "margin": margin})
            row = cur.fetchone()
            if row is None:
                conn.rollback()
                return None
            (jid, dest, source, user, message_id, payload, attempts, first_at, last_at, status, error,
             response) = row
            payload = payload if isinstance(payload, dict) else {}
            what = f"HTTP {status}" if status else "no answer"
            reason = (f"aborted by an operator ({by}) while retrying, after {attempts} attempts; last answer "
                      f"{what}: {(error or '')[:300]}")
            dead = FailedRow(
                stage=STAGE_OF_TABLE[table], source_id=source, destination_id=dest,
                destination_type=payload.get("dest_type"), user_key=user, message_id=message_id,
                event=payload.get("event", payload), reason=reason, payload=payload.get("requests"),
                status_code=status, response=error if error else response, attempts=attempts,
                attempt_history={"first_attempt_at": first_at.isoformat() if first_at else None,
                                 "last_attempt_at": last_at.isoformat() if last_at else None,
                                 "attempts": attempts, "aborted_by": by,
                                 "aborted_at": datetime.now(UTC).isoformat()},
                original_job_id=jid, original_queue=table)
            insert_failed(cur, [dead])
        conn.commit()
        return dead
    except BaseException:
        conn.rollback()
        raise


# ---- one job, and lookups -----------------------------------------------------------------------------

def gw_job(cur, job_id: int) -> dict[str, Any] | None:
    cur.execute(query("admin_gw_job"), {"id": job_id})
    rows = _dicts(cur)
    return rows[0] if rows else None


def delivery_job(cur, table: str, job_id: int) -> dict[str, Any] | None:
    cur.execute(query("admin_delivery_job", table=table), {"id": job_id})
    rows = _dicts(cur)
    return rows[0] if rows else None


def lookup(cur, *, message_id: str | None = None, user: str | None = None, since: datetime,
           limit: int = 50) -> dict[str, list[dict[str, Any]]]:
    """Every trace of an event (by messageId) or of a user's newest events since a time: the accepted
    events, their delivery jobs in both queues, and their dead letters."""
    if message_id:
        cur.execute(query("admin_lookup_gw_by_message"), {"since": since, "value": message_id, "limit": limit})
    else:
        cur.execute(query("admin_lookup_gw_by_user"), {"since": since, "value": user, "limit": limit})
    accepted = _dicts(cur)
    ids = sorted({str(a["payload"].get("messageId")) for a in accepted if isinstance(a["payload"], dict)
                  and a["payload"].get("messageId") is not None} | ({message_id} if message_id else set()))
    delivery: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    if ids:
        for table in DELIVERY_TABLES:
            cur.execute(query("admin_lookup_delivery", table=table),
                        {"since": since, "message_ids": ids, "limit": limit * 20})
            delivery += [{"queue": table, **r} for r in _dicts(cur)]
        for job in delivery:
            job["blocked_by"] = None
            if job["state"] == 0 and not job["next_attempt_at"]:
                cur.execute(query("admin_blocking_job", table=job["queue"]),
                            {"dest": job["destination_id"], "user": job["user_key"], "job_id": job["job_id"]})
                row = cur.fetchone()
                job["blocked_by"] = {"job_id": row[0], "next_attempt_at": row[1]} if row else None
        cur.execute(query("admin_lookup_failed"), {"since": since, "message_ids": ids, "limit": limit * 20})
        failed = _dicts(cur)
    return {"accepted": accepted, "delivery": delivery, "failed": failed}
