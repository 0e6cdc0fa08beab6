"""The processor's one transaction per batch: dedup keys, delivery jobs, dead letters, filtered counts
and the ack of the gateway jobs commit together or not at all. The ack is fenced by the claim token;
if another processor took the batch's partitions over meanwhile, everything is rolled back."""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from psycopg2 import errors

from jobsdb import datasets
from jobsdb.processing import add_filtered, insert_failed
from jobsdb.queue import ack_gw, enqueue_delivery_json
from processor import fanout
from processor.dedup import keep_new
from processor.pipeline import JobOutput

log = logging.getLogger("sluice.processor")


@dataclass
class Committed:
    fenced: bool = False  # another owner took the jobs: nothing was written
    jobs: int = 0
    rt: int = 0
    batch_rt: int = 0
    failed: int = 0
    filtered: int = 0
    duplicates: int = 0


def commit_batch(conn, outputs: Sequence[JobOutput], token: int, dedup_window: float | None) -> Committed:
    for attempt in (1, 2):
        try:
            return _write(conn, outputs, token, dedup_window)
        except errors.CheckViolation:
            # A delivery job id with no dataset yet: create the datasets and try once more.
            conn.rollback()
            if attempt == 2:
                raise
            datasets.ensure(conn, "rt_jobs")
            datasets.ensure(conn, "batch_rt_jobs")
    raise AssertionError("unreachable")


def _write(conn, outputs: Sequence[JobOutput], token: int, dedup_window: float | None) -> Committed:
    try:
        with conn.cursor() as cur:
            kept, duplicates = keep_new(cur, outputs, dedup_window)
            rt = [row for out in kept for row in out.rt]
            batch_rt = [row for out in kept for row in out.batch_rt]
            failed = [row for out in kept for row in out.failed]
            counts: Counter[tuple[str, str, str]] = Counter(key for out in kept for key in out.filtered)
            for out in duplicates:
                counts[(out.job.source_id, "", fanout.DUPLICATE)] += 1
            # COPY order is job_id order: jobs in claim order, each job's rows in destination order.
            enqueue_delivery_json(cur, "rt_jobs", rt)
            enqueue_delivery_json(cur, "batch_rt_jobs", batch_rt)
            insert_failed(cur, failed)
            add_filtered(cur, counts)
            ids = [out.job.job_id for out in outputs]
            acked = ack_gw(cur, ids, token)
            if acked != len(ids):
                conn.rollback()
                log.warning("batch taken over by another processor; rolled back",
                            extra={"claimed": len(ids), "still_ours": acked})
                return Committed(fenced=True)
        conn.commit()
    except BaseException:
        with contextlib.suppress(Exception):
            conn.rollback()
        raise
    return Committed(jobs=len(outputs), rt=len(rt), batch_rt=len(batch_rt), failed=len(failed),
                     filtered=sum(counts.values()) - len(duplicates), duplicates=len(duplicates))
