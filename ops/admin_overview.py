"""The overview: per source, events accepted and rejected; per destination, delivered, retrying, held
by the barrier, failed, filtered, latency and the oldest pending job; queue depths; warehouses; the last
hour per minute.

Windowed counts are kept per 10 seconds for the last hour and read incrementally: a refresh reads
only the buckets that may still change (the last GRACE_SECONDS and what came since the previous
refresh), through the BRIN indexes, so its cost follows the traffic of the last seconds, not of the hour.
One refresh serves every viewer for REFRESH_SECONDS.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from jobsdb import inspect
from jobsdb.db import UNAVAILABLE_ERRORS
from jobsdb.queue import pending_summary, warehouse_report

log = logging.getLogger("sluice.admin")

BUCKET_SECONDS = 10
HOUR = 3600
WINDOWS = {"5m": 300, "1h": HOUR}
GRACE_SECONDS = 15  # a bucket older than this is final: every transaction that writes into it has committed
REFRESH_SECONDS = 5.0
PENDING_CAP = 100_000  # pending jobs are counted up to this per destination ("100,000+")
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # the origin date_bin uses in jobsdb/admin.sql


def bucket_of(t: datetime) -> datetime:
    seconds = (t - _EPOCH).total_seconds()
    return _EPOCH + timedelta(seconds=math.floor(seconds / BUCKET_SECONDS) * BUCKET_SECONDS)


class Buckets:
    """Counts per key and 10 s bucket over the last hour, filled by `read(cur, since)` which returns
    (key..., bucket start, count) rows. Buckets older than the grace are read once and kept."""

    def __init__(self, read: Callable[[Any, datetime], Iterable[tuple]]):
        self.read = read
        self.counts: dict[datetime, dict[tuple, int]] = {}
        self.final_before: datetime | None = None

    def refresh(self, cur, now: datetime) -> None:
        oldest = bucket_of(now - timedelta(seconds=HOUR + BUCKET_SECONDS))
        start = oldest if self.final_before is None else max(self.final_before, oldest)
        fresh: dict[datetime, dict[tuple, int]] = defaultdict(dict)
        for row in self.read(cur, start):
            *key, bucket, n = row
            fresh[bucket][tuple(key)] = fresh[bucket].get(tuple(key), 0) + n
        for b in [b for b in self.counts if b >= start or b < oldest]:
            del self.counts[b]
        self.counts.update(fresh)
        self.final_before = bucket_of(now - timedelta(seconds=GRACE_SECONDS))

    def total(self, since: datetime) -> dict[tuple, int]:
        out: dict[tuple, int] = defaultdict(int)
        for b, keys in self.counts.items():
            if b >= since:
                for key, n in keys.items():
                    out[key] += n
        return out

    def per_minute(self, first_minute: datetime, minutes: int) -> dict[Any, list[int]]:
        """key[0] -> counts per minute from first_minute on."""
        out: dict[Any, list[int]] = defaultdict(lambda: [0] * minutes)
        for b, keys in self.counts.items():
            i = int((b - first_minute).total_seconds() // 60)
            if 0 <= i < minutes:
                for key, n in keys.items():
                    out[key[0]][i] += n
        return out


def percentiles(bins: dict[int, int], qs: Iterable[float]) -> dict[str, float | None]:
    """Latency percentiles in ms from bins floor(8 * log2(ms)): the middle of the bin (within ±4.5%)."""
    total = sum(bins.values())
    out: dict[str, float | None] = {}
    for q in qs:
        name = f"p{round(q * 100)}"
        if not total:
            out[name] = None
            continue
        need, seen = q * total, 0
        for b in sorted(bins):
            seen += bins[b]
            if seen >= need:
                out[name] = round(2 ** ((b + 0.5) / 8), 1)
                break
    return out


class Overview:
    def __init__(self):
        self.accepted = Buckets(inspect.accepted_buckets)
        self.rejected = Buckets(inspect.rejected_buckets)
        self.delivered = Buckets(inspect.delivered_buckets)   # key: (destination, latency bin)
        self.failed = Buckets(inspect.failed_buckets)
        self.lock = threading.Lock()
        self.cached: tuple[float, dict] | None = None

    def get(self, db, workspace, masker) -> dict:
        """The overview, computed at most every REFRESH_SECONDS whoever asks. `db` is a long-lived
        autocommit connection holder (ops.admin_db.long_lived)."""
        with self.lock:
            if self.cached and time.monotonic() - self.cached[0] < REFRESH_SECONDS:
                return self.cached[1]
            try:
                data = self._compute(db.get(), workspace, masker)
            except UNAVAILABLE_ERRORS:
                db.drop()
                raise
            self.cached = (time.monotonic(), data)
            return data

    def _compute(self, conn, workspace, masker) -> dict:
        with conn.cursor() as cur:
            now = inspect.db_now(cur)
            for b in (self.accepted, self.rejected, self.delivered, self.failed):
                b.refresh(cur, now)
            retrying = inspect.retrying(cur)
            waiting = inspect.waiting(cur)
            with_pending = inspect.queue_destinations(cur)
            filtered = inspect.filtered_today(cur)
            queues = pending_summary(cur)
            warehouses = warehouse_report(cur)
            known = _known_destinations(workspace)
            tables: dict[str, str] = {}
            for table, dests in with_pending.items():
                for d in dests:
                    tables[d] = table
            for d, info in known.items():
                tables.setdefault(d, "batch_rt_jobs" if info["warehouse"] else "rt_jobs")
            pending = {d: inspect.pending(cur, table, d, PENDING_CAP) for d, table in tables.items()}
        since = {w: bucket_of(now - timedelta(seconds=s - BUCKET_SECONDS)) for w, s in WINDOWS.items()}
        return {
            "as_of": now,
            "windows": since,
            "sources": self._sources(workspace, since, filtered),
            "destinations": self._destinations(known, since, retrying, waiting, pending, filtered, masker),
            "queues": [{"queue": q, "pending": n, "oldest_pending_s": round(age, 1) if n else None}
                       for q, n, age in queues],
            "warehouses": [{**w, "last_error": masker.text(w.get("last_error"))} for w in warehouses],
            "chart": self._chart(now),
        }

    def _sources(self, workspace, since: dict, filtered) -> list[dict]:
        acc = {w: self.accepted.total(s) for w, s in since.items()}
        rej = {w: self.rejected.total(s) for w, s in since.items()}
        names = {s.id: s.name for s in workspace.sources} if workspace else {}
        ids = set(names) | {k[0] for counts in (*acc.values(), *rej.values()) for k in counts}
        source_filters: dict[str, dict[str, int]] = defaultdict(dict)
        for src, dest, rule, n in filtered:
            if not dest:
                source_filters[src][rule] = source_filters[src].get(rule, 0) + n
        return [{"id": i, "name": names.get(i, "" if i else "(unknown write key)"),
                 **{f"accepted_{w}": acc[w].get((i,), 0) for w in since},
                 **{f"rejected_{w}": rej[w].get((i,), 0) for w in since},
                 "filtered_today": dict(sorted(source_filters.get(i, {}).items()))}
                for i in sorted(ids)]

    def _destinations(self, known, since, retrying, waiting, pending, filtered, masker) -> list[dict]:
        delivered: dict[str, dict[str, int]] = {}
        latency: dict[str, dict[str, dict[int, int]]] = {}
        for w, s in since.items():
            for (dest, bin_), n in self.delivered.total(s).items():
                delivered.setdefault(dest, {}).setdefault(w, 0)
                delivered[dest][w] += n
                if bin_ is not None:
                    bins = latency.setdefault(dest, {}).setdefault(w, {})
                    bins[bin_] = bins.get(bin_, 0) + n
        failed = {w: self.failed.total(s) for w, s in since.items()}
        retry = {r["destination_id"]: r for r in retrying}
        rules: dict[str, dict[str, int]] = defaultdict(dict)
        for _src, dest, rule, n in filtered:
            if dest:
                rules[dest][rule] = rules[dest].get(rule, 0) + n
        ids = set(known) | set(delivered) | set(retry) | set(pending) | set(rules) | {
            k[0] for counts in failed.values() for k in counts if k[0]}
        out = []
        for d in sorted(ids):
            info = known.get(d, {})
            r = retry.get(d, {})
            n_pending, oldest = pending.get(d, (0, None))
            n_retry, n_wait = r.get("n", 0), waiting.get(d, 0)
            out.append({
                "id": d, "name": info.get("name", "(not in the workspace config)"), "type": info.get("type", ""),
                "source_ids": info.get("sources", []), "warehouse": info.get("warehouse", False),
                **{f"delivered_{w}": delivered.get(d, {}).get(w, 0) for w in since},
                **{f"failed_{w}": failed[w].get((d,), 0) for w in since},
                **{f"latency_{w}": percentiles(latency.get(d, {}).get(w, {}), (0.5, 0.95)) for w in since},
                "retrying": n_retry, "next_attempt_at": r.get("next_at"), "retry_attempts": r.get("max_attempts"),
                "last_status": r.get("last_status"), "last_error": masker.text(r.get("last_error")),
                "waiting": n_wait,
                "pending": n_pending, "pending_capped": n_pending >= PENDING_CAP,
                "pending_other": max(0, n_pending - n_retry - n_wait),
                "oldest_pending_s": round(oldest, 1) if oldest is not None else None,
                "filtered_today": dict(sorted(rules.get(d, {}).items())),
            })
        return out

    def _chart(self, now: datetime) -> dict:
        minutes = 60
        first = bucket_of(now).replace(second=0) - timedelta(minutes=minutes - 1)
        delivered = self.delivered.per_minute(first, minutes)
        failed = self.failed.per_minute(first, minutes)
        series = [{"destination_id": d, "delivered": delivered.get(d, [0] * minutes),
                   "failed": failed.get(d, [0] * minutes)}
                  for d in sorted((set(delivered) | set(failed)) - {""})]
        if "" in failed:
            series.append({"destination_id": "", "delivered": [0] * minutes, "failed": failed[""]})
        return {"first_minute": first, "minutes": minutes, "series": series}


def _known_destinations(workspace) -> dict[str, dict]:
    out: dict[str, dict] = {}
    if workspace is None:
        return out
    for source in workspace.sources:
        for dest in source.destinations:
            entry = out.setdefault(dest.id, {"name": dest.name, "type": dest.type, "warehouse": dest.is_warehouse,
                                             "sources": []})
            entry["sources"].append(source.id)
    return out
