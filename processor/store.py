"""The processor's one transaction per batch: dedup keys, delivery jobs, dead letters, filtered counts
and the ack of the gateway jobs commit together or not at all. The ack is fenced by the claim token;
if another processor took the batch's partitions over meanwhile, everything is rolled back.

BackgroundCommitter runs those transactions on a connection and a thread of their own, one batch at a
time and in claim order, so that Postgres writes batch N while the pipeline transforms batch N+1."""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from psycopg2 import errors

from jobsdb import datasets
from jobsdb.db import connect
from jobsdb.processing import add_filtered, insert_failed
from jobsdb.queue import ack_gw, enqueue_delivery_json, release
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


class BackgroundCommitter:
    """commit_batch on its own connection in one worker thread. psycopg2 lets go of the GIL while it
    waits for Postgres, so the pipeline keeps the CPU meanwhile. Batches commit strictly one after the
    other, in the order they were submitted: dedup keys and delivery job ids come out as if committed
    inline. A batch whose commit raises is released (fenced by its token) and its error is re-raised
    by the Future."""

    def __init__(self, dsn: str, application_name: str = "sluice-processor-commit"):
        self._dsn = dsn
        self._application_name = application_name
        self._conn = None
        self._executor: ThreadPoolExecutor | None = None

    def submit(self, outputs: Sequence[JobOutput], token: int, dedup_window: float | None) -> Future:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="processor-commit")
        return self._executor.submit(self._commit, outputs, token, dedup_window)

    def _commit(self, outputs: Sequence[JobOutput], token: int, dedup_window: float | None) -> Committed:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._dsn, self._application_name)
        conn = self._conn
        try:
            return commit_batch(conn, outputs, token, dedup_window)
        except BaseException:
            # Give the jobs back at once rather than when the claim expires.
            with contextlib.suppress(Exception):
                release(conn, "gw_jobs", [out.job.job_id for out in outputs], token)
            self._drop_connection()  # a broken connection is useless; a healthy one is cheap to reopen
            raise

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def close(self) -> None:
        """Wait for the batch in hand, then close the connection (a later submit starts afresh)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        self._drop_connection()
