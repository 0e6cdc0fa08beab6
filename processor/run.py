"""`sluice processor`: the loop from the gateway queue to the delivery queues.

Renew partition leases → claim a batch of the owned parts → run it through the pipeline → commit
its output and its ack in one transaction → repeat. The three overlap, each on its own connection:
while batch N is transformed, batch N+1 is being claimed (claim_ahead.py) and batch N-1 committed
(store.py), in claim order. SIGTERM finishes the batch in hand, gives the leases back and exits.

Nothing in the data stops the loop: a batch that fails is given back and counts an attempt; a job
claimed `poison_attempts` times without finishing is then processed alone, and dead-lettered if it
fails alone (or if even that never finishes). Housekeeping is the janitor's (jobsdb/janitor.py).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections import Counter
from concurrent.futures import Future

from psycopg2.extras import register_default_jsonb

from config.metrics import metrics
from config.settings import Settings
from config.workspace import WorkspaceWatcher
from jobsdb import heartbeats, layout
from jobsdb.db import CONFLICT_ERRORS, DATA_ERRORS, UNAVAILABLE_ERRORS, LongLivedConnection
from jobsdb.janitor import Janitor, retention_from
from jobsdb.leases import PartitionLeases
from jobsdb.processing import FailedRow, expire_owner_leases, lease_owners
from jobsdb.queue import GatewayJob, claim_gw, new_token, release_gw
from processor.claim_ahead import ClaimAhead
from processor.pipeline import JobOutput, Pipeline
from processor.store import BackgroundCommitter
from transformers import json_codec
from transformers.user_js import UserTransformer

log = logging.getLogger("sluice.processor")

OWNER_PREFIX = "processor@"
SUMMARY_EVERY = 10.0
GIL_SWITCH_INTERVAL = 0.0005  # seconds; see Processor.run
POISON_STAGE = "processor"


class _Every:
    """True once per `seconds` (and on the first call)."""

    def __init__(self, seconds: float):
        self.seconds, self.last = seconds, float("-inf")

    def __call__(self) -> bool:
        now = time.monotonic()
        if now - self.last >= self.seconds:
            self.last = now
            return True
        return False


class Processor:
    def __init__(self, settings: Settings, watcher: WorkspaceWatcher, user_js: UserTransformer | None = None,
                 stop_event: threading.Event | None = None):
        self.settings = settings
        self.watcher = watcher
        self.stop_event = stop_event or threading.Event()
        self.host = socket.gethostname()
        self.owner = f"{OWNER_PREFIX}{self.host}/{os.getpid()}/{new_token():x}"
        self.user_js = user_js or UserTransformer(settings.transform_time_limit_ms,
                                                  settings.transform_memory_limit_mb, settings.transform_workers)
        self.pipeline = Pipeline(self.user_js, settings.router_partitions, settings.transform_batch_size,
                                 max_output_bytes=settings.transform_max_output_bytes)
        self.leases = PartitionLeases("gw", "", settings.gw_partitions, self.owner, settings.lease_seconds)
        self.db = LongLivedConnection(
            settings.database_url, "sluice-processor", stop=self.stop_event, logger=log,
            # Claimed payloads arrive as jsonb text: decode them with the fast decoder.
            on_connect=lambda conn: register_default_jsonb(conn, loads=json_codec.loads))
        self.committer = BackgroundCommitter(settings.database_url, stop=self.stop_event)
        self.claim_ahead = ClaimAhead(settings.database_url, self.owner, stop=self.stop_event)
        self._pending: tuple[Future, list, float] | None = None  # the batch being committed
        self._isolating = False  # the last claim held a suspect: claim one job at a time
        self._void_claims = False  # a batch failed: its claims may not have been given back
        self.totals: Counter[str] = Counter()
        self._window: Counter[str] = Counter()
        self._refresh = _Every(min(1.0, settings.lease_seconds / 4))
        self._summary = _Every(SUMMARY_EVERY)
        self._heartbeat = _Every(settings.heartbeat_seconds)
        self._summary()  # the first summary after SUMMARY_EVERY, not at once

    # -- the loop --------------------------------------------------------------------------------

    def run(self, until_idle: bool = False) -> int:
        """Process until stopped (or, with until_idle, until a claim finds nothing)."""
        log.info("processor started", extra={"owner": self.owner, "batch_size": self.settings.processor_batch_size,
                                             "dedup": self.settings.dedup_enabled})
        # Each V8 call hops threads several times (here → mini-racer's loop → V8 and back), and each
        # hop needs the GIL, which the commit and claim threads may hold for up to the switch interval
        # (5 ms by default): with a shorter one the V8 round trips stop queueing behind them.
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        try:
            while not self.stop_event.is_set():
                try:
                    worked = self.step()
                except CONFLICT_ERRORS as exc:
                    # Lost a race with another process (two owners changing hands over a part): the batch
                    # was given back; simply go on.
                    log.warning("a transaction conflicted with another process; going on",
                                extra={"error": str(exc).strip().splitlines()[0][:200]})
                    self.db.drop(failed=False)
                    self._void_claims = True
                    continue
                except DATA_ERRORS:
                    # Not the connection's fault: the batch was given back and counts an attempt.
                    log.exception("a batch failed on its data; its jobs will be isolated if it repeats")
                    self._void_claims = True
                    self.stop_event.wait(0.5)
                    continue
                except UNAVAILABLE_ERRORS as exc:
                    log.error("database unavailable, reconnecting", extra={"error": str(exc).strip()[:300]})
                    self.db.drop()  # the next get() backs off while Postgres stays away
                    self._void_claims = True
                    continue
                except Exception:  # noqa: BLE001 - nothing in a batch may stop the processor
                    log.exception("a batch failed; its jobs went back to the queue and count an attempt")
                    self._void_claims = True
                    self.stop_event.wait(0.5)
                    continue
                self.db.healthy()
                if not worked:
                    if until_idle:
                        break
                    self.stop_event.wait(self.settings.processor_idle_sleep)
        finally:
            sys.setswitchinterval(switch_interval)
            self._shutdown()
        return 0

    def step(self) -> bool:
        """One batch: transform it here while the next one is claimed and the previous one committed,
        each on a connection of its own. Returns False when there was nothing to do (once the batch
        still being committed, if any, is done)."""
        conn = self.db.get()
        if self._heartbeat():
            self._beat(conn)
        if self._refresh() or not self.leases.owned:
            self.leases.refresh(conn)
        if not self.leases.owned:
            self.claim_ahead.give_back()
            self._collect()
            return False
        if self._void_claims:
            # Giving a failed batch's jobs back can itself fail; a claim left behind would make later
            # jobs of its users overtake it until it ran out. So, with nothing in flight, every claim in
            # our parts is voided and work resumes from each part's oldest job.
            with contextlib.suppress(Exception):
                self._collect()
            self.claim_ahead.give_back()
            self.leases.void_claims(conn)
            self._void_claims = False
        claimed = self.claim_ahead.take()
        if claimed is None:
            token = new_token()
            limit = 1 if self._isolating else self.settings.processor_batch_size
            jobs = claim_gw(conn, sorted(self.leases.owned), limit, self.settings.lease_seconds, token, self.owner)
        else:
            jobs, token = claimed
        if not jobs:
            self._collect()
            return False
        if any(j.attempts > self.settings.poison_attempts for j in jobs):
            return self._isolate(conn, jobs, token)
        self._isolating = False
        started = time.monotonic()
        try:
            if not self.stop_event.is_set():
                self.claim_ahead.start(sorted(self.leases.owned), self.settings.processor_batch_size,
                                       self.settings.lease_seconds)
            outputs = self.pipeline.process(jobs, self.watcher.current)
            if self._collect():
                # The previous batch lost its partitions to another processor, which will process it
                # again; the batches claimed after it must not overtake it. Hand them back too.
                release_gw(conn, [j.job_id for j in jobs], token, count_attempt=False)
                self.claim_ahead.give_back()
                return True
            self._pending = (self.committer.submit(outputs, token, self._dedup_window()), jobs, started)
        except BaseException:
            # Give the jobs back at once rather than when the claim expires (fenced by the token), the
            # failure counted against them; and the batch claimed ahead, unused: it must not overtake this one.
            with contextlib.suppress(Exception):
                release_gw(conn, [j.job_id for j in jobs], token, count_attempt=True)
            self.claim_ahead.give_back()
            raise
        return True

    def _isolate(self, conn, jobs: list[GatewayJob], token: int) -> bool:
        """A batch holding a job that was claimed more than poison_attempts times without finishing: the
        oldest job is processed alone (the others are handed back, their claim not counted), and whatever
        it does wrong is its own dead letter. One that never finishes even alone is dead-lettered unread."""
        self._collect()
        self.claim_ahead.give_back()
        job, rest = jobs[0], jobs[1:]
        if rest:
            release_gw(conn, [j.job_id for j in rest], token, count_attempt=False)
        self._isolating = True
        limit = self.settings.poison_attempts + 2
        if job.attempts > limit:
            reason = (f"processing this event did not finish after {job.attempts - 1} attempts "
                      "(the processor stopped or failed each time)")
            outputs = [_dead(job, reason)]
        else:
            try:
                outputs = self.pipeline.process([job], self.watcher.current)
            except Exception as exc:  # noqa: BLE001 - the one event is at fault, alone
                log.exception("an event fails the processor; it goes to failed_jobs", extra={"job_id": job.job_id})
                outputs = [_dead(job, f"processing failed: {type(exc).__name__}: {str(exc)[:500]}")]
        if outputs[0].failed and outputs[0].dedup_key is None:
            log.warning("dead-lettered a job that kept failing", extra={"job_id": job.job_id,
                                                                        "attempts": job.attempts})
        self._pending = (self.committer.submit(outputs, token, self._dedup_window()), [job], time.monotonic())
        self._collect()
        return True

    def _dedup_window(self) -> float | None:
        return self.settings.dedup_window_seconds if self.settings.dedup_enabled else None

    def _beat(self, conn) -> None:
        with conn.cursor() as cur:
            heartbeats.beat(cur, self.owner, "processor", detail={"parts": sorted(self.leases.owned),
                                                                  "jobs": self.totals.get("jobs", 0)})
        conn.commit()

    def _collect(self) -> bool:
        """Wait for the batch being committed and count it; re-raise what its commit raised.
        Returns True when it was fenced (another processor took its partitions: nothing written)."""
        pending, self._pending = self._pending, None
        if pending is None:
            return False
        future, jobs, started = pending
        done = future.result()
        elapsed = time.monotonic() - started
        if done.fenced:
            self._void_claims = True  # whatever of ours that batch still held goes back before the next claim
            self.leases.refresh(self.db.get())
            self._count(fenced=1)
            return True
        self._count(batches=1, jobs=done.jobs, rt=done.rt, batch_rt=done.batch_rt, failed=done.failed,
                    filtered=done.filtered, duplicates=done.duplicates)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("batch", extra={"jobs": done.jobs, "first_job_id": jobs[0].job_id, "last_job_id": jobs[-1].job_id,
                                      "rt": done.rt, "batch_rt": done.batch_rt, "failed": done.failed,
                                      "filtered": done.filtered, "duplicates": done.duplicates,
                                      "ms": round(elapsed * 1000, 1)})
        return False

    def _count(self, **counts: int) -> None:
        counter = metrics().processor_events
        for outcome, n in counts.items():
            if n and outcome != "batches":
                counter.labels(outcome).inc(n)
        self.totals.update(counts)
        self._window.update(counts)
        if self._summary():
            log.info("processed", extra={**{k: self._window.get(k, 0) for k in
                                            ("batches", "jobs", "rt", "batch_rt", "failed", "filtered", "duplicates")},
                                         "fenced": self._window.get("fenced", 0), "period_s": SUMMARY_EVERY,
                                         "parts": sorted(self.leases.owned)})
            self._window.clear()

    def reclaim_dead_local_owners(self) -> None:
        """Leases of processors on this host whose process is gone expire now, so a restart after
        kill -9 resumes at once instead of after the lease TTL. (A wrong guess is safe: acks are fenced.)"""
        conn = self.db.get()
        prefix = f"{OWNER_PREFIX}{self.host}/"
        with conn.cursor() as cur:
            dead = [o for o in lease_owners(cur, "gw", prefix) if o != self.owner and not _pid_alive(o, prefix)]
            expire_owner_leases(cur, dead)
            for owner in dead:
                heartbeats.remove(cur, owner)
        conn.commit()
        if dead:
            log.info("expired leases of dead processors on this host", extra={"owners": dead})

    # -- shutdown --------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        try:
            self._collect()  # finish the batch in hand
        except Exception as exc:  # noqa: BLE001 - its jobs were released; shutting down regardless
            log.error("the last batch failed to commit", extra={"error": str(exc).strip()[:300]})
        self.committer.close()
        self.claim_ahead.close()  # hands back the batch claimed ahead
        conn = self.db.conn
        if conn is not None and not conn.closed:
            with contextlib.suppress(Exception):
                if self.leases.owned:
                    self.leases.release_all(conn)
                with conn.cursor() as cur:
                    heartbeats.remove(cur, self.owner)
                conn.commit()
        self.db.close()
        log.info("processor stopped", extra={k: self.totals.get(k, 0) for k in
                                             ("batches", "jobs", "rt", "batch_rt", "failed", "filtered", "duplicates")})


def _dead(job: GatewayJob, reason: str) -> JobOutput:
    """A job that could not be processed, as a dead letter (replayable like any other)."""
    event = job.payload if isinstance(job.payload, dict) else {"payload": job.payload}
    row = FailedRow(stage=POISON_STAGE, source_id=job.source_id, destination_id=None, destination_type=None,
                    user_key=job.user_key, message_id=str(event.get("messageId")) if event.get("messageId") else None,
                    event=event, reason=reason, attempts=job.attempts,
                    attempt_history=[{"at": datetime.datetime.now(datetime.UTC).isoformat(), "stage": POISON_STAGE,
                                      "reason": reason[:1000]}],
                    original_job_id=job.job_id, original_queue="gw_jobs")
    return JobOutput(job, None, failed=[row])


def _pid_alive(owner: str, prefix: str) -> bool:
    try:
        pid = int(owner[len(prefix):].split("/", 1)[0])
    except ValueError:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(settings: Settings) -> int:
    stop_event = threading.Event()

    def stop(signum, frame) -> None:
        log.info("stopping after the current batch", extra={"signal": signal.Signals(signum).name})
        stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    refused = layout.refuse_or_wait(settings, "processor", stop_event, log)
    if refused is not None:
        return refused
    watcher = WorkspaceWatcher(settings.config, settings.config_poll_interval)
    watcher.start()
    processor = Processor(settings, watcher, stop_event=stop_event)
    janitor = Janitor(settings.database_url, retention_from(settings), settings.janitor_interval_seconds)
    janitor.start()
    try:
        try:
            processor.reclaim_dead_local_owners()
        except UNAVAILABLE_ERRORS:
            pass  # stopping before Postgres came back
        return processor.run()
    finally:
        janitor.stop()
        watcher.stop()
        processor.user_js.close()

