"""`sluice processor`: the loop from the gateway queue to the delivery queues.

Renew partition leases → claim a batch of the owned parts → run it through the pipeline → commit
its output and its ack in one transaction → repeat. The three overlap, each on its own connection:
while batch N is transformed, batch N+1 is being claimed (claim_ahead.py) and batch N-1 committed
(store.py), in claim order. SIGTERM finishes the batch in hand, gives the leases back and exits. Housekeeping (datasets ahead, finished datasets dropped, dedup keys and dead
letters past their retention) runs between batches.
"""

from __future__ import annotations

import contextlib
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
from jobsdb import datasets
from jobsdb.db import UNAVAILABLE_ERRORS, connect
from jobsdb.leases import PartitionLeases
from jobsdb.processing import dedup_expire, expire_failed, expire_owner_leases, lease_owners
from jobsdb.queue import GW_PARTITIONS, claim_gw, new_token, release
from processor.claim_ahead import ClaimAhead
from processor.pipeline import Pipeline
from processor.store import BackgroundCommitter
from transformers import json_codec
from transformers.user_js import UserTransformer

log = logging.getLogger("sluice.processor")

OWNER_PREFIX = "processor@"
SUMMARY_EVERY = 10.0
ENSURE_EVERY = 5.0
DROP_EVERY = 30.0
DEDUP_EXPIRE_EVERY = 60.0
FAILED_EXPIRE_EVERY = 600.0
GIL_SWITCH_INTERVAL = 0.0005  # seconds; see Processor.run


class _Every:
    """True once per `seconds` (and on the first call)."""

    def __init__(self, seconds: float):
        self.seconds, self.last = seconds, float("-inf")

    def due(self) -> bool:
        return time.monotonic() - self.last >= self.seconds

    def __call__(self) -> bool:
        now = time.monotonic()
        if now - self.last >= self.seconds:
            self.last = now
            return True
        return False


class Processor:
    def __init__(self, settings: Settings, watcher: WorkspaceWatcher, user_js: UserTransformer | None = None):
        self.settings = settings
        self.watcher = watcher
        self.stop_event = threading.Event()
        self.host = socket.gethostname()
        self.owner = f"{OWNER_PREFIX}{self.host}/{os.getpid()}/{new_token():x}"
        self.user_js = user_js or UserTransformer(settings.transform_time_limit_ms,
                                                  settings.transform_memory_limit_mb)
        self.pipeline = Pipeline(self.user_js, settings.router_partitions, settings.transform_batch_size)
        self.leases = PartitionLeases("gw", "", GW_PARTITIONS, self.owner, settings.lease_seconds)
        self.conn = None
        self.committer = BackgroundCommitter(settings.database_url)
        self.claim_ahead = ClaimAhead(settings.database_url)
        self._pending: tuple[Future, list, float] | None = None  # the batch being committed
        self.totals: Counter[str] = Counter()
        self._window: Counter[str] = Counter()
        self._refresh = _Every(min(1.0, settings.lease_seconds / 4))
        self._summary = _Every(SUMMARY_EVERY)
        self._ensure = _Every(ENSURE_EVERY)
        self._drop = _Every(DROP_EVERY)
        self._dedup_expire = _Every(DEDUP_EXPIRE_EVERY)
        self._failed_expire = _Every(FAILED_EXPIRE_EVERY)
        self._summary()  # the first summary after SUMMARY_EVERY, not at once

    # -- the loop --------------------------------------------------------------------------------

    def run(self, until_idle: bool = False) -> int:
        """Process until stopped (or, with until_idle, until a claim finds nothing)."""
        log.info("processor started", extra={"owner": self.owner, "batch_size": self.settings.processor_batch_size,
                                             "dedup": self.settings.dedup_enabled})
        backoff = 0.5
        # Each V8 call hops threads several times (here → mini-racer's loop → V8 and back), and each
        # hop needs the GIL, which the commit and claim threads may hold for up to the switch interval
        # (5 ms by default): with a shorter one the V8 round trips stop queueing behind them.
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        try:
            while not self.stop_event.is_set():
                try:
                    worked = self.step()
                    backoff = 0.5
                except UNAVAILABLE_ERRORS as exc:
                    log.error("database unavailable, retrying", extra={"error": str(exc).strip()[:300],
                                                                      "retry_in_s": backoff})
                    self._drop_connection()
                    self.stop_event.wait(backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
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
        conn = self._connection()
        if self._housekeeping_due():
            # Housekeeping drops and creates datasets: never while our own batches hold locks on them.
            self._collect()
            self.claim_ahead.settle()
        self._housekeeping(conn)
        if self._refresh() or not self.leases.owned:
            self.leases.refresh(conn)
        if not self.leases.owned:
            self.claim_ahead.give_back()
            self._collect()
            return False
        claimed = self.claim_ahead.take()
        if claimed is None:
            token = new_token()
            jobs = claim_gw(conn, sorted(self.leases.owned), self.settings.processor_batch_size,
                            self.settings.lease_seconds, token)
        else:
            jobs, token = claimed
        if not jobs:
            self._collect()
            return False
        started = time.monotonic()
        try:
            if not self.stop_event.is_set():
                self.claim_ahead.start(sorted(self.leases.owned), self.settings.processor_batch_size,
                                       self.settings.lease_seconds)
            outputs = self.pipeline.process(jobs, self.watcher.current)
            if self._collect():
                # The previous batch lost its partitions to another processor, which will process it
                # again; the batches claimed after it must not overtake it. Hand them back too.
                release(conn, "gw_jobs", [j.job_id for j in jobs], token)
                self.claim_ahead.give_back()
                return True
            window = self.settings.dedup_window_seconds if self.settings.dedup_enabled else None
            self._pending = (self.committer.submit(outputs, token, window), jobs, started)
        except BaseException:
            # Give the jobs back at once rather than when the claim expires (fenced by the token),
            # and the batch claimed ahead with them: it must not overtake this one.
            with contextlib.suppress(Exception):
                release(conn, "gw_jobs", [j.job_id for j in jobs], token)
            self.claim_ahead.give_back()
            raise
        return True

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
            self.leases.refresh(self._connection())
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

    # -- housekeeping ----------------------------------------------------------------------------

    def _housekeeping_due(self) -> bool:
        s = self.settings
        return (self._ensure.due() or self._drop.due() or (s.dedup_enabled and self._dedup_expire.due())
                or self._failed_expire.due())

    def _housekeeping(self, conn) -> None:
        s = self.settings
        if self._ensure():
            datasets.ensure(conn, "rt_jobs")
            datasets.ensure(conn, "batch_rt_jobs")
        if self._drop():
            dropped = datasets.drop_finished(conn, "gw_jobs", s.retention_hours)
            if dropped:
                log.info("dropped finished datasets", extra={"datasets": dropped})
        if s.dedup_enabled and self._dedup_expire():
            with conn.cursor() as cur:
                n = dedup_expire(cur, s.dedup_window_seconds)
            conn.commit()
            if n:
                log.debug("expired dedup keys", extra={"keys": n})
        if self._failed_expire():
            n = expire_failed(conn, s.failed_jobs_retention_days)
            if n:
                log.info("deleted dead letters past retention", extra={"rows": n,
                                                                      "retention_days": s.failed_jobs_retention_days})

    def reclaim_dead_local_owners(self) -> None:
        """Leases of processors on this host whose process is gone expire now, so a restart after
        kill -9 resumes at once instead of after the lease TTL. (A wrong guess is safe: acks are fenced.)"""
        conn = self._connection()
        prefix = f"{OWNER_PREFIX}{self.host}/"
        with conn.cursor() as cur:
            dead = [o for o in lease_owners(cur, "gw", prefix) if o != self.owner and not _pid_alive(o, prefix)]
            expire_owner_leases(cur, dead)
        conn.commit()
        if dead:
            log.info("expired leases of dead processors on this host", extra={"owners": dead})

    # -- connection and shutdown -----------------------------------------------------------------

    def _connection(self):
        if self.conn is None or self.conn.closed:
            self.conn = connect(self.settings.database_url, "sluice-processor")
            # Claimed payloads arrive as jsonb text: decode them with the fast decoder.
            register_default_jsonb(self.conn, loads=json_codec.loads)
        return self.conn

    def _drop_connection(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None

    def _shutdown(self) -> None:
        try:
            self._collect()  # finish the batch in hand
        except Exception as exc:  # noqa: BLE001 - its jobs were released; shutting down regardless
            log.error("the last batch failed to commit", extra={"error": str(exc).strip()[:300]})
        self.committer.close()
        self.claim_ahead.close()  # hands back the batch claimed ahead
        with contextlib.suppress(Exception):
            if self.leases.owned:
                self.leases.release_all(self._connection())
        self._drop_connection()
        log.info("processor stopped", extra={k: self.totals.get(k, 0) for k in
                                             ("batches", "jobs", "rt", "batch_rt", "failed", "filtered", "duplicates")})


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
    watcher = WorkspaceWatcher(settings.config, settings.config_poll_interval)
    watcher.start()
    processor = Processor(settings, watcher)

    def stop(signum, frame) -> None:
        log.info("stopping after the current batch", extra={"signal": signal.Signals(signum).name})
        processor.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while not processor.stop_event.is_set():
            try:
                processor.reclaim_dead_local_owners()
                break
            except UNAVAILABLE_ERRORS as exc:
                log.error("database unavailable at start, retrying", extra={"error": str(exc).strip()[:300]})
                processor._drop_connection()
                processor.stop_event.wait(1.0)
        return processor.run()
    finally:
        watcher.stop()
        processor.user_js.close()
