"""The processor's one transaction per batch: dedup keys, delivery jobs, dead letters, filtered counts
and the ack of the gateway jobs commit together or not at all. The ack is fenced by the claim token;
if another processor took the batch's partitions over meanwhile, everything is rolled back.

If Postgres refuses some of a batch's rows (a data error), the batch is written again with each row
under a savepoint, halving the rows until the refused ones are found: those become dead letters with
Postgres' reason, and the rest commit. One bad row never holds its batch back, let alone the processor.

BackgroundCommitter runs those transactions on a connection and a thread of their own, one batch at a
time and in claim order, so that Postgres writes batch N while the pipeline transforms batch N+1."""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from psycopg2 import errors

from jobsdb import datasets
from jobsdb.db import DATA_ERRORS, LongLivedConnection
from jobsdb.processing import FailedRow, add_filtered, insert_failed
from jobsdb.queue import ack_gw, enqueue_delivery_json, release_gw
from processor import fanout
from processor.dedup import keep_new
from processor.pipeline import JobOutput

log = logging.getLogger("sluice.processor")
STAGE = "processor"  # dead letters of rows Postgres refused
_savepoints = itertools.count()


@dataclass
class Committed:
    fenced: bool = False  # another owner took the jobs: nothing was written
    jobs: int = 0
    rt: int = 0
    batch_rt: int = 0
    failed: int = 0
    filtered: int = 0
    duplicates: int = 0
    refused: int = 0  # rows Postgres refused, stored as dead letters instead


def commit_batch(conn, outputs: Sequence[JobOutput], token: int, dedup_window: float | None) -> Committed:
    isolate = False
    for attempt in (1, 2, 3):
        try:
            return _write(conn, outputs, token, dedup_window, isolate)
        except errors.CheckViolation:
            # A delivery job id with no dataset yet: create the datasets and try again.
            conn.rollback()
            if attempt == 3:
                raise
            datasets.ensure(conn, "rt_jobs")
            datasets.ensure(conn, "batch_rt_jobs")
        except DATA_ERRORS as exc:
            conn.rollback()
            if isolate:
                raise
            log.warning("Postgres refused rows of a batch; finding them", extra={"jobs": len(outputs),
                                                                                 "error": _first_line(exc)})
            isolate = True
    raise AssertionError("unreachable")


# A unit of output: (job output, queue, row). queue is rt_jobs, batch_rt_jobs or failed_jobs.
_Unit = tuple[JobOutput, str, object]


def _write(conn, outputs: Sequence[JobOutput], token: int, dedup_window: float | None, isolate: bool) -> Committed:
    try:
        with conn.cursor() as cur:
            kept, duplicates = keep_new(cur, outputs, dedup_window)
            units: list[_Unit] = [(out, "rt_jobs", row) for out in kept for row in out.rt]
            units += [(out, "batch_rt_jobs", row) for out in kept for row in out.batch_rt]
            units += [(out, "failed_jobs", row) for out in kept for row in out.failed]
            counts: Counter[tuple[str, str, str]] = Counter(key for out in kept for key in out.filtered)
            for out in duplicates:
                counts[(out.job.source_id, "", fanout.DUPLICATE)] += 1
            refused: list[tuple[_Unit, BaseException]] = []
            if isolate:
                refused = _write_isolating(cur, units)
                insert_failed(cur, [_dead_letter(unit, exc) for unit, exc in refused])
            else:
                _write_units(cur, units)
            add_filtered(cur, counts)
            ids = [out.job.job_id for out in outputs]
            acked = ack_gw(cur, ids, token)
            if acked != len(ids):
                conn.rollback()
                # The jobs of parts we still own are still claimed by us: give them back now, or later
                # jobs of the same users would be processed before them while their claim runs out.
                release_gw(conn, ids, token, count_attempt=False)
                log.warning("batch taken over by another processor; rolled back",
                            extra={"claimed": len(ids), "still_ours": acked})
                return Committed(fenced=True)
        conn.commit()
    except BaseException:
        with contextlib.suppress(Exception):
            conn.rollback()
        raise
    if refused:
        log.warning("rows refused by Postgres went to failed_jobs",
                    extra={"rows": len(refused), "reason": _first_line(refused[0][1])})
    written = [u for u in units if all(u is not r[0] for r in refused)] if refused else units
    by_queue = Counter(queue for _, queue, _ in written)
    return Committed(jobs=len(outputs), rt=by_queue["rt_jobs"], batch_rt=by_queue["batch_rt_jobs"],
                     failed=by_queue["failed_jobs"] + len(refused),
                     filtered=sum(counts.values()) - len(duplicates), duplicates=len(duplicates),
                     refused=len(refused))


def _write_units(cur, units: Sequence[_Unit]) -> None:
    # COPY order is job_id order: jobs in claim order, each job's rows in destination order.
    enqueue_delivery_json(cur, "rt_jobs", [row for _, queue, row in units if queue == "rt_jobs"])
    enqueue_delivery_json(cur, "batch_rt_jobs", [row for _, queue, row in units if queue == "batch_rt_jobs"])
    insert_failed(cur, [row for _, queue, row in units if queue == "failed_jobs"])


def _write_isolating(cur, units: Sequence[_Unit]) -> list[tuple[_Unit, BaseException]]:
    """Write units under savepoints, halving a refused group until each refused unit stands alone.
    Returns the refused units with Postgres' error; everything else is written."""
    if not units:
        return []
    name = f"sluice_isolate_{next(_savepoints)}"
    cur.execute(f"SAVEPOINT {name}")
    try:
        _write_units(cur, units)
    except DATA_ERRORS as exc:
        cur.execute(f"ROLLBACK TO SAVEPOINT {name}")
        cur.execute(f"RELEASE SAVEPOINT {name}")
        if len(units) == 1:
            return [(units[0], exc)]
        half = len(units) // 2
        return _write_isolating(cur, units[:half]) + _write_isolating(cur, units[half:])
    cur.execute(f"RELEASE SAVEPOINT {name}")
    return []


def _dead_letter(unit: _Unit, exc: BaseException) -> FailedRow:
    out, queue, row = unit
    job = out.job
    reason = f"Postgres refused the output: {_first_line(exc)}"
    if queue == "failed_jobs":  # a dead letter that could not be stored: keep its gist
        assert isinstance(row, FailedRow)
        return FailedRow(stage=row.stage, source_id=row.source_id, destination_id=row.destination_id,
                         destination_type=row.destination_type, user_key=row.user_key, message_id=row.message_id,
                         event=job.payload, reason=f"{row.reason} ({reason})"[:2000],
                         original_job_id=job.job_id, original_queue="gw_jobs")
    _part, destination_id, source_id, user_key, message_id, _payload = row  # type: ignore[misc]
    return FailedRow(stage=STAGE, source_id=source_id, destination_id=destination_id, destination_type=None,
                     user_key=user_key, message_id=message_id, event=job.payload, reason=reason,
                     original_job_id=job.job_id, original_queue="gw_jobs")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__


class BackgroundCommitter:
    """commit_batch on its own connection in one worker thread. psycopg2 lets go of the GIL while it
    waits for Postgres, so the pipeline keeps the CPU meanwhile. Batches commit strictly one after the
    other, in the order they were submitted: dedup keys and delivery job ids come out as if committed
    inline. A batch whose commit raises is released (fenced by its token) and its error is re-raised
    by the Future."""

    def __init__(self, dsn: str, application_name: str = "sluice-processor-commit", stop=None):
        self.db = LongLivedConnection(dsn, application_name, stop=stop, logger=log)
        self._executor: ThreadPoolExecutor | None = None

    def submit(self, outputs: Sequence[JobOutput], token: int, dedup_window: float | None) -> Future:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="processor-commit")
        return self._executor.submit(self._commit, outputs, token, dedup_window)

    def _commit(self, outputs: Sequence[JobOutput], token: int, dedup_window: float | None) -> Committed:
        conn = self.db.get()
        try:
            return commit_batch(conn, outputs, token, dedup_window)
        except BaseException:
            # Give the jobs back at once rather than when the claim expires; the failed claim counts.
            with contextlib.suppress(Exception):
                release_gw(conn, [out.job.job_id for out in outputs], token, count_attempt=True)
            self.db.drop()  # a broken connection is useless; a healthy one is cheap to reopen
            raise

    def close(self) -> None:
        """Wait for the batch in hand, then close the connection (a later submit starts afresh)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        self.db.close()
