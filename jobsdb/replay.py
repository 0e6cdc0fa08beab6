"""Dead letters back into the pipeline: select failed_jobs rows, re-enqueue them where their stage
failed, and mark them replayed in the same transaction (never deleted).

Router failures re-enter the router queue with `"requests": null`, so the router runs the destination
transformer again with the current config; transformation failures re-enter the gateway queue with
the replay key, so the processor runs the current transformations for that one destination.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jobsdb import datasets, layout
from jobsdb.queries import query
from jobsdb.queue import DeliveryRow, GatewayRow, enqueue_delivery, enqueue_gw, partition_of

STAGES = ("user_transform", "dest_transform", "router")
REPLAY_KEY = "_sluice_replay"  # read by processor/pipeline.py: skip dedup, fan out to this destination only
# Which stage re-enters through which queue; the name the operator sees.
ENTRY = {"gw_jobs": "processor", "rt_jobs": "router", "batch_rt_jobs": "batch router"}


@dataclass(frozen=True)
class Selection:
    """Which dead letters: every given selector must match; an empty tuple / None matches everything."""

    ids: tuple[int, ...] = ()
    destinations: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    stages: tuple[str, ...] = ()
    statuses: tuple[int, ...] = ()
    reason: str | None = None          # case-insensitive substring of the reason
    since: datetime | None = None      # failed_at >= since
    until: datetime | None = None      # failed_at < until
    include_replayed: bool = False     # by default a row is replayed once

    def __post_init__(self) -> None:
        bad = [s for s in self.stages if s not in STAGES]
        if bad:
            raise ValueError(f"unknown stage {bad[0]!r}: one of {', '.join(STAGES)}")

    @property
    def narrowed(self) -> bool:
        """True when some selector restricts the rows (a replay of everything must be asked for)."""
        return bool(self.ids or self.destinations or self.sources or self.stages or self.statuses
                    or self.reason or self.since or self.until)

    def params(self) -> dict[str, Any]:
        return {
            "ids": list(self.ids) or None, "destinations": list(self.destinations) or None,
            "sources": list(self.sources) or None, "stages": list(self.stages) or None,
            "statuses": list(self.statuses) or None, "reason": self.reason or None,
            "since": self.since, "until": self.until, "include_replayed": self.include_replayed,
        }

    def describe(self) -> dict[str, Any]:
        out = {k: v for k, v in self.params().items() if v not in (None, False)}
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in out.items()}


def _q(name: str) -> str:
    return query(name, where=query("failed_where"))


def count(cur, sel: Selection) -> tuple[int, int | None, int | None]:
    """(rows matching, lowest id, highest id)."""
    cur.execute(_q("failed_count"), sel.params())
    n, lo, hi = cur.fetchone()
    return n, lo, hi


def list_failed(cur, sel: Selection, after_id: int = 0, limit: int = 100) -> list[dict[str, Any]]:
    """One page of the selection in failure order (no event bodies)."""
    cur.execute(_q("failed_list"), {**sel.params(), "after_id": after_id, "limit": limit})
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


@dataclass
class SliceResult:
    last_id: int | None = None       # the highest id looked at; the next slice starts after it
    selected: int = 0
    # (queue, destination_id) -> rows re-enqueued
    targets: Counter[tuple[str, str]] = field(default_factory=Counter)


def _user_key(event: Any, fallback: str | None) -> str:
    if isinstance(event, dict):
        for key in ("userId", "anonymousId"):
            value = event.get(key)
            if value not in (None, ""):
                return str(value)
    return fallback or ""


def replay_slice(conn, sel: Selection, after_id: int, limit: int, by: str,
                 until_id: int | None = None) -> SliceResult:
    """Re-enqueue the next `limit` selected rows after `after_id` (by id, i.e. in failure order), and mark
    them replayed, in one transaction. Rows above `until_id` are left for a later replay (the selection
    was counted up to it). Partitions are the ones `sluice migrate` fixed, whatever this process's
    settings say. Commits."""
    for table in ("gw_jobs", "rt_jobs", "batch_rt_jobs"):
        datasets.ensure(conn, table)
    result = SliceResult()
    gw: list[GatewayRow] = []
    delivery: dict[str, list[DeliveryRow]] = {"rt_jobs": [], "batch_rt_jobs": []}
    marks: list[tuple[int, str]] = []
    try:
        with conn.cursor() as cur:
            fixed = layout.read(cur)
            cur.execute(_q("failed_lock_slice"), {**sel.params(), "after_id": after_id, "limit": limit})
            rows = cur.fetchall()
            for fid, stage, source_id, dest_id, dest_type, user_key, message_id, event, original_queue in rows:
                result.last_id = fid
                if until_id is not None and fid > until_id:
                    break
                if stage == "router" or original_queue in delivery:  # delivery failures go back to their queue
                    table = original_queue if original_queue in delivery else "rt_jobs"
                    key = user_key or _user_key(event, "")
                    delivery[table].append(DeliveryRow(
                        partition_of(key, fixed.router_partitions), dest_id, source_id, key, message_id,
                        {"event": event, "requests": None, "dest_type": dest_type, "source_id": source_id,
                         "destination_id": dest_id, "replay_of": fid}))
                else:
                    table = "gw_jobs"
                    key = _user_key(event, user_key)
                    body = dict(event) if isinstance(event, dict) else {"event": event}
                    body[REPLAY_KEY] = {"destination_id": dest_id, "failed_job_id": fid}
                    gw.append(GatewayRow(partition_of(key, fixed.gw_partitions), source_id, key,
                                         json.dumps(body, separators=(",", ":"), ensure_ascii=False), "now"))
                marks.append((fid, table))
                result.targets[(table, dest_id or "")] += 1
            result.selected = len(marks)
            if gw:
                enqueue_gw(cur, gw)
            for table, delivery_rows in delivery.items():
                if delivery_rows:
                    enqueue_delivery(cur, table, delivery_rows)
            if marks:
                cur.execute(query("failed_mark_replayed"), {
                    "ids": [m[0] for m in marks], "queues": [m[1] for m in marks], "by": by})
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return result


def replay(conn, sel: Selection, by: str, limit: int | None = None,
           slice_size: int = 1000, on_slice=None) -> SliceResult:
    """Replay the whole selection (up to `limit` rows) slice by slice, one transaction each.
    `on_slice(SliceResult)` is called after every committed slice (the progress bar)."""
    with conn.cursor() as cur:
        _n, _lo, hi = count(cur, sel)
    conn.commit()
    total = SliceResult()
    after = 0
    while hi is not None:
        want = slice_size if limit is None else min(slice_size, limit - total.selected)
        if want <= 0:
            break
        part = replay_slice(conn, sel, after, want, by, until_id=hi)
        if on_slice is not None:
            on_slice(part)
        total.selected += part.selected
        total.targets.update(part.targets)
        if part.last_id is None or part.last_id >= hi:
            break
        after = total.last_id = part.last_id
    return total


def summary(cur, limit: int = 50) -> list[dict[str, Any]]:
    """Dead letters by destination, stage and reason, open and replayed counts."""
    cur.execute(query("failed_summary"), {"limit": limit})
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def rejected_count(cur) -> int:
    cur.execute(query("rejected_count"))
    return cur.fetchone()[0]
