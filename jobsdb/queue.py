"""Enqueue, claim and ack for the queue tables.

Writers COPY rows in; readers claim the oldest pending rows of the parts they own with FOR UPDATE and a
lease (waiting for a locked row, never skipping it: see claim_gw in queries.sql); a stage writes its
output and acks its input in one transaction.
An ack is fenced by the claim token, so a claimer whose lease was taken over cannot ack twice.
"""

from __future__ import annotations

import io
import json
import secrets
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg2.extras import execute_values

from jobsdb.queries import query

PENDING, DONE, ABORTED = 0, 1, 2
GW_PARTITIONS = 16  # parts of the gateway queue; the gateway writes them, processors lease them


def partition_of(user_key: str, partitions: int) -> int:
    """The stable partition of a user: every stage uses it, so one owner per part keeps per-user order."""
    return zlib.crc32(user_key.encode("utf-8", "surrogatepass")) % partitions


def new_token() -> int:
    return secrets.randbits(62) + 1


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_field(value: Any) -> str:
    if value is None:
        return "\\N"
    return str(value).translate(_COPY_ESCAPES)


def copy_rows(cur, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """COPY rows into a table in text format. Payload columns must already be JSON text."""
    buf = io.StringIO()
    n = 0
    for row in rows:
        buf.write("\t".join(_copy_field(v) for v in row))
        buf.write("\n")
        n += 1
    if n:
        buf.seek(0)
        cur.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN", buf)
    return n


GW_COLUMNS = ("part", "source_id", "user_key", "payload", "received_at")


@dataclass(frozen=True)
class GatewayRow:
    part: int
    source_id: str
    user_key: str
    payload_json: str
    received_at: str


def enqueue_gw(cur, rows: Sequence[GatewayRow]) -> int:
    return copy_rows(
        cur, "gw_jobs", GW_COLUMNS, ((r.part, r.source_id, r.user_key, r.payload_json, r.received_at) for r in rows)
    )


@dataclass
class GatewayJob:
    job_id: int
    part: int
    source_id: str
    user_key: str
    payload: dict
    received_at: datetime
    attempts: int = 1  # claims so far, this one included


def claim_gw(conn, parts: Sequence[int], limit: int, lease_seconds: float, token: int,
             owner: str) -> list[GatewayJob]:
    """Claim up to `limit` pending gateway jobs of `parts` in job_id order; commits the claim. Only parts
    whose lease `owner` holds (unexpired) are claimed: a process that lost a lease claims nothing there."""
    with conn.cursor() as cur:
        cur.execute(query("claim_gw"), {"token": token, "lease": lease_seconds, "parts": list(parts), "limit": limit,
                                        "owner": owner})
        rows = cur.fetchall()
    conn.commit()
    jobs = [GatewayJob(*r) for r in rows]
    jobs.sort(key=lambda j: j.job_id)
    return jobs


def ack_gw(cur, job_ids: Sequence[int], token: int) -> int:
    """Mark claimed jobs done inside the caller's transaction. Returns how many were still ours."""
    cur.execute(query("ack_gw"), {"ids": list(job_ids), "token": token})
    return cur.rowcount


def release(conn, table: str, job_ids: Sequence[int], token: int) -> None:
    """Give claimed jobs back at once (instead of waiting for the lease to expire)."""
    with conn.cursor() as cur:
        cur.execute(query("release", table=table), {"ids": list(job_ids), "token": token})
    conn.commit()


def release_gw(conn, job_ids: Sequence[int], token: int, count_attempt: bool) -> None:
    """Give claimed gateway jobs back. count_attempt: the claim failed (it counts towards poison_attempts);
    otherwise the jobs were handed back unused and the claim does not count."""
    with conn.cursor() as cur:
        cur.execute(query("release_gw"), {"ids": list(job_ids), "token": token, "count_attempt": count_attempt})
    conn.commit()


def reset_part_claims(cur, table: str, parts: Sequence[int], scope: str | None = None) -> int:
    """Void every unfinished claim in `parts` (of one destination when `scope` is given)."""
    if not parts:
        return 0
    scope_filter = "destination_id = %(scope)s" if scope else "true"
    cur.execute(query("reset_part_claims", table=table, scope_filter=scope_filter),
                {"parts": sorted(parts), "scope": scope})
    return cur.rowcount


RT_COLUMNS = ("part", "destination_id", "source_id", "user_key", "message_id", "payload")


@dataclass(frozen=True)
class DeliveryRow:
    part: int
    destination_id: str
    source_id: str
    user_key: str
    message_id: str | None
    payload: dict


def enqueue_delivery(cur, table: str, rows: Sequence[DeliveryRow]) -> int:
    if table not in ("rt_jobs", "batch_rt_jobs"):
        raise ValueError(table)
    return copy_rows(
        cur,
        table,
        RT_COLUMNS,
        (
            (r.part, r.destination_id, r.source_id, r.user_key, r.message_id,
             json.dumps(r.payload, separators=(",", ":"), ensure_ascii=False))
            for r in rows
        ),
    )


def enqueue_delivery_json(cur, table: str, rows: Sequence[tuple]) -> int:
    """Like enqueue_delivery, for rows whose payload is already JSON text:
    (part, destination_id, source_id, user_key, message_id, payload_json). Saves re-encoding a payload
    the caller built once for several destinations."""
    if table not in ("rt_jobs", "batch_rt_jobs"):
        raise ValueError(table)
    if not rows:
        return 0
    buf = io.StringIO()
    write = buf.write
    for part, destination_id, source_id, user_key, message_id, payload_json in rows:
        # JSON text has no raw tab / newline / CR; only its backslashes need COPY escaping.
        write(f"{part}\t{_copy_field(destination_id)}\t{_copy_field(source_id)}\t{_copy_field(user_key)}\t"
              f"{_copy_field(message_id)}\t{payload_json.replace(chr(92), chr(92) * 2)}\n")
    buf.seek(0)
    cur.copy_expert(f"COPY {table} ({', '.join(RT_COLUMNS)}) FROM STDIN", buf)
    return len(rows)


def queue_counts(cur, table: str) -> list[tuple[int, int, datetime | None]]:
    time_column = "received_at" if table == "gw_jobs" else "created_at"
    cur.execute(query("queue_counts", table=table, time_column=time_column))
    return cur.fetchall()


def pending_summary(cur) -> list[tuple[str, int, float]]:
    """(queue, pending jobs, age in seconds of the oldest) for gw, rt and batch_rt; then the open dead
    letters as (destination_id, stage, count) rows. For /metrics."""
    out = []
    for queue, table in (("gw", "gw_jobs"), ("rt", "rt_jobs"), ("batch_rt", "batch_rt_jobs")):
        time_column = "received_at" if table == "gw_jobs" else "created_at"
        cur.execute(query("queue_pending", table=table, time_column=time_column))
        n, age = cur.fetchone()
        out.append((queue, n, float(age or 0)))
    return out


def failed_open(cur) -> list[tuple[str, str, int]]:
    cur.execute(query("failed_open_by_destination"))
    return cur.fetchall()


def warehouse_report(cur) -> list[dict]:
    """Per warehouse destination: last successful sync, rows and events loaded, discards, events pending,
    the last error and whether it is newer than the last success (failing)."""
    cur.execute(query("warehouse_sync_report"))
    cols = [d[0] for d in cur.description]
    out = []
    for row in cur.fetchall():
        item = dict(zip(cols, row, strict=True))
        item["failing"] = bool(item["last_error_at"] and (not item["last_success_at"]
                                                          or item["last_error_at"] > item["last_success_at"]))
        out.append(item)
    return out


def insert_rejected(cur, rows: Sequence[tuple]) -> None:
    """rows: (source_id, write_key, request_ip, endpoint, status, reason, event_json_or_None, raw_or_None)."""
    if rows:
        execute_values(cur, query("insert_rejected"), rows, template="(%s,%s,%s,%s,%s,%s,%s::jsonb,%s)")
