"""`sluice router`: one worker thread per destination, each owning leases on that destination's partitions.

A destination's worker claims ready jobs past the per-user barrier, delivers them (router.deliver), and
records every outcome in one transaction. Destinations never share a thread, a lease or a throttle, so
one slow or dead destination cannot stall another. Jobs of a destination that was disabled or deleted
go to failed_jobs with that reason.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from psycopg2.extras import register_default_jsonb

from config.metrics import metrics
from config.settings import Settings
from config.workspace import WorkspaceWatcher
from jobsdb import datasets
from jobsdb.db import UNAVAILABLE_ERRORS, connect
from jobsdb.leases import PartitionLeases
from jobsdb.processing import expire_owner_leases, lease_owners
from jobsdb.routing import active_destinations, claim_ready, drain, next_retry_at, record
from router.backoff import RetryPolicy
from router.deliver import Round
from router.http import send
from router.throttle import TokenBucket, parse_limits
from transformers import json_codec

log = logging.getLogger("sluice.router")
TABLE = "rt_jobs"
OWNER_PREFIX = "router@"


def _overrides(text: str, key: str, dest_id: str, dest_type: str):
    if not text:
        return None
    table = json.loads(text)
    if not isinstance(table, dict):
        raise ValueError(f"{key}: expected a JSON object keyed by destination id or type")
    return table.get(dest_id, table.get(dest_type))


class DestinationWorker(threading.Thread):
    def __init__(self, router: Router, dest_id: str):
        super().__init__(name=f"router-{dest_id}", daemon=True)
        self.router = router
        self.dest_id = dest_id
        self.stop_event = threading.Event()
        s = router.settings
        self.leases = PartitionLeases("rt", dest_id, s.router_partitions, router.owner, s.lease_seconds)
        self.pool = ThreadPoolExecutor(max(1, s.router_workers), thread_name_prefix=f"deliver-{dest_id}")
        self.conn = None
        self.delivered = self.retried = self.aborted = 0

    def policy_and_bucket(self, dest) -> tuple[RetryPolicy, TokenBucket | None]:
        s = self.router.settings
        base = {"max_attempts": s.router_max_attempts, "retry_window": s.router_retry_window_seconds,
                "min_backoff": s.router_min_backoff, "max_backoff": s.router_max_backoff}
        base.update(_overrides(s.router_retry_overrides, "SLUICE_ROUTER_RETRY_OVERRIDES", dest.id, dest.type) or {})
        policy = RetryPolicy(**{k: float(v) if k != "max_attempts" else int(v) for k, v in base.items()})
        limits = parse_limits(s.router_rate_limits)
        rate = limits.get(dest.id, limits.get(dest.type))
        key = (dest.id, rate)
        if rate and self.router.buckets.get(dest.id, (None, None))[0] != key:
            self.router.buckets[dest.id] = (key, TokenBucket(rate))
        return policy, (self.router.buckets[dest.id][1] if rate else None)

    def run(self) -> None:
        s = self.router.settings
        last_refresh = 0.0
        idle = 0.05
        while not self.stop_event.is_set():
            try:
                if self.conn is None or self.conn.closed:
                    self.conn = connect(s.database_url, "sluice-router")
                    register_default_jsonb(self.conn, loads=json_codec.loads)  # claimed payloads, fast
                found = self.router.watcher.current.destination_by_id(self.dest_id)
                if found is None or not found[1].enabled or not found[1].is_processor_enabled:
                    self._drain(found)
                    self.stop_event.wait(1.0)
                    continue
                _source, dest = found
                if time.monotonic() - last_refresh > s.lease_seconds / 3:
                    self.leases.refresh(self.conn)
                    last_refresh = time.monotonic()
                if not self.leases.owned:
                    self.stop_event.wait(min(1.0, s.lease_seconds / 3))
                    continue
                parts = sorted(self.leases.owned)
                jobs = claim_ready(self.conn, TABLE, self.dest_id, parts, s.router_batch_size)
                if not jobs:
                    self._idle_wait(idle)
                    idle = min(idle * 2, 1.0)
                    continue
                idle = 0.05
                policy, bucket = self.policy_and_bucket(dest)
                overrides = self.router.endpoint_overrides
                round_ = Round(dest, policy, lambda req, o=overrides, t=dest.type: self._send(req, o, t), bucket,
                               self.stop_event, TABLE, deadline=time.monotonic() + s.lease_seconds / 3)
                outcomes = round_.run(jobs, self.pool, s.router_workers)
                if not record(self.conn, TABLE, self.dest_id, self.router.owner, parts, outcomes):
                    log.warning("lost a partition lease during a round; its outcomes are left to the new owner",
                                extra={"destination_id": self.dest_id})
                    last_refresh = 0.0
                    continue
                self.delivered += len(outcomes.delivered)
                self.retried += len(outcomes.retry)
                self.aborted += len(outcomes.aborted)
                counters = metrics().router_jobs
                for outcome, n in (("delivered", len(outcomes.delivered)), ("retrying", len(outcomes.retry)),
                                   ("aborted", len(outcomes.aborted))):
                    if n:
                        counters.labels(self.dest_id, outcome).inc(n)
                if outcomes.retry or outcomes.aborted:
                    log.info("delivery round", extra={"destination_id": self.dest_id, "delivered":
                             len(outcomes.delivered), "retrying": len(outcomes.retry), "aborted":
                             len(outcomes.aborted), "held": len(outcomes.released)})
            except UNAVAILABLE_ERRORS as exc:
                log.warning("database unavailable", extra={"destination_id": self.dest_id, "error": str(exc)[:200]})
                self._drop_connection()
                self.stop_event.wait(1.0)
            except Exception:  # noqa: BLE001 - a worker must survive anything and try again
                log.exception("router worker error", extra={"destination_id": self.dest_id})
                self._drop_connection()
                self.stop_event.wait(1.0)
        self._shutdown()

    def _send(self, request: dict, overrides: dict, dest_type: str):
        started = time.monotonic()
        try:
            return send(request, overrides, self.router.settings.router_timeout)
        finally:
            metrics().router_request_seconds.labels(dest_type).observe(time.monotonic() - started)

    def _idle_wait(self, idle: float) -> None:
        with self.conn.cursor() as cur:
            nxt = next_retry_at(cur, TABLE, self.dest_id, sorted(self.leases.owned))
            cur.execute("SELECT now()")
            now = cur.fetchone()[0]
        self.conn.commit()
        wait = idle if nxt is None else max(0.01, min(idle, (nxt - now).total_seconds()))
        self.stop_event.wait(wait)

    def _drain(self, found) -> None:
        reason = "destination deleted from the workspace config" if found is None else "destination disabled"
        n = drain(self.conn, TABLE, self.dest_id, reason, found[1].type if found else None)
        if n:
            log.warning("pending jobs moved to failed_jobs", extra={"destination_id": self.dest_id, "jobs": n,
                                                                    "reason": reason})

    def _drop_connection(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None

    def _shutdown(self) -> None:
        self.pool.shutdown(wait=True)
        with contextlib.suppress(Exception):
            if self.conn is not None and not self.conn.closed:
                self.leases.release_all(self.conn)
        self._drop_connection()


class Router:
    def __init__(self, settings: Settings, watcher: WorkspaceWatcher):
        self.settings = settings
        self.watcher = watcher
        self.owner = f"{OWNER_PREFIX}{socket.gethostname()}/{os.getpid()}"
        self.endpoint_overrides = settings.endpoint_override_map
        self.workers: dict[str, DestinationWorker] = {}
        self.buckets: dict[str, tuple] = {}
        self.stop_event = threading.Event()

    def _expire_dead_owners(self, conn) -> None:
        """Leases of router processes on this host that no longer exist expire now, not at their TTL."""
        prefix = f"{OWNER_PREFIX}{socket.gethostname()}/"
        with conn.cursor() as cur:
            dead = []
            for owner in lease_owners(cur, "rt", prefix):
                try:
                    os.kill(int(owner[len(prefix):].split("/", 1)[0]), 0)
                except ProcessLookupError:
                    dead.append(owner)
                except (ValueError, PermissionError):
                    pass
            expire_owner_leases(cur, dead)
        conn.commit()

    def wanted_destinations(self, conn) -> set[str]:
        with conn.cursor() as cur:
            wanted = set(active_destinations(cur, TABLE))
        conn.commit()
        for source in self.watcher.current.sources:
            for dest in source.destinations:
                if not dest.is_warehouse:
                    wanted.add(dest.id)
        return wanted

    def run(self) -> int:
        s = self.settings
        conn = None
        last_maintenance = 0.0
        last_drop = time.monotonic()
        while not self.stop_event.is_set():
            try:
                if conn is None or conn.closed:
                    conn = connect(s.database_url, "sluice-router")
                    self._expire_dead_owners(conn)
                for dest_id in sorted(self.wanted_destinations(conn) - set(self.workers)):
                    worker = self.workers[dest_id] = DestinationWorker(self, dest_id)
                    worker.start()
                now = time.monotonic()
                if now - last_maintenance > 5:
                    last_maintenance = now
                    datasets.ensure(conn, TABLE)
                if now - last_drop > 30:
                    last_drop = now
                    for name in datasets.drop_finished(conn, TABLE, s.retention_hours):
                        log.info("dropped finished dataset", extra={"dataset": name})
            except UNAVAILABLE_ERRORS as exc:
                log.warning("database unavailable", extra={"error": str(exc)[:200]})
                with contextlib.suppress(Exception):
                    conn.close()
                conn = None
            self.stop_event.wait(1.0)
        for worker in self.workers.values():
            worker.stop_event.set()
        for worker in self.workers.values():
            worker.join(timeout=s.router_timeout + 10)
        if conn is not None:
            conn.close()
        log.info("router stopped", extra={"delivered": sum(w.delivered for w in self.workers.values()),
                                          "aborted": sum(w.aborted for w in self.workers.values())})
        return 0


def main(settings: Settings) -> int:
    if settings.lease_seconds < settings.lease_seconds / 3 + settings.router_timeout + 1:
        # A round stops starting requests after lease/3; the last one may take router_timeout more.
        raise SystemExit(f"sluice router: SLUICE_LEASE_SECONDS ({settings.lease_seconds}) must exceed "
                         f"1.5 x SLUICE_ROUTER_TIMEOUT ({settings.router_timeout}) + 1.5 s, or a slow round could "
                         "outlive its partition leases")
    watcher = WorkspaceWatcher(settings.config, poll_interval=settings.config_poll_interval)
    watcher.start()
    router = Router(settings, watcher)
    signal.signal(signal.SIGTERM, lambda *_: router.stop_event.set())
    signal.signal(signal.SIGINT, lambda *_: router.stop_event.set())
    log.info("router started", extra={"owner": router.owner, "partitions": settings.router_partitions,
                                      "workers_per_destination": settings.router_workers})
    try:
        return router.run()
    finally:
        watcher.stop()
