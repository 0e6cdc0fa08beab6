"""`sluice router`: one worker thread per destination, each owning leases on that destination's partitions.

A destination's worker renews its leases, claims ready jobs past the per-user barrier, delivers them
(router.deliver), and records every outcome in one transaction — all before its leases can expire, so
two routers never deliver one user's events at once. Destinations never share a thread, a lease or a
throttle, so one slow or dead destination cannot stall another. Jobs of a destination that was disabled
or deleted go to failed_jobs with that reason.
"""

from __future__ import annotations

import contextlib
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
from jobsdb import heartbeats, layout
from jobsdb.db import UNAVAILABLE_ERRORS, LongLivedConnection
from jobsdb.janitor import Janitor, retention_from
from jobsdb.leases import PartitionLeases
from jobsdb.processing import expire_owner_leases, lease_owners
from jobsdb.routing import active_destinations, claim_ready, drain, next_retry_at, record
from router.backoff import RetryPolicy, policy_for, recover
from router.deliver import Round
from router.http import send
from router.throttle import SharedRate, parse_limits
from router.warehouse import TABLE as WAREHOUSE_TABLE
from router.warehouse import WarehouseWorker
from transformers import json_codec

log = logging.getLogger("sluice.router")
TABLE = "rt_jobs"
OWNER_PREFIX = "router@"


def commit_margin(lease_seconds: float) -> float:
    """Time kept, at the end of a lease, for recording a round's outcomes (and clock skew)."""
    return max(2.0, lease_seconds * 0.1)


def timing_problem(settings: Settings) -> str | None:
    """Why these settings cannot keep a round inside its lease, or None."""
    margin = commit_margin(settings.lease_seconds)
    if settings.router_timeout + margin >= settings.lease_seconds:
        return (f"SLUICE_ROUTER_TIMEOUT ({settings.router_timeout:g} s) plus the {margin:g} s kept for committing a "
                f"round must be less than SLUICE_LEASE_SECONDS ({settings.lease_seconds:g} s): a request that "
                f"takes its full timeout would outlive the partition lease, and another router could deliver the "
                f"same user's events at the same time. Raise SLUICE_LEASE_SECONDS to more than "
                f"{settings.router_timeout + margin:g}, or lower SLUICE_ROUTER_TIMEOUT.")
    return None


class DestinationWorker(threading.Thread):
    def __init__(self, router: Router, dest_id: str):
        super().__init__(name=f"router-{dest_id}", daemon=True)
        self.router = router
        self.dest_id = dest_id
        self.stop_event = threading.Event()
        s = router.settings
        self.leases = PartitionLeases("rt", dest_id, s.router_partitions, router.owner, s.lease_seconds)
        self.pool = ThreadPoolExecutor(max(1, s.router_workers), thread_name_prefix=f"deliver-{dest_id}")
        self.db = LongLivedConnection(
            s.database_url, "sluice-router", stop=self.stop_event, logger=log,
            on_connect=lambda conn: register_default_jsonb(conn, loads=json_codec.loads))  # claimed payloads, fast
        self.limiter: tuple[float, SharedRate] | None = None
        self.delivered = self.retried = self.aborted = 0

    def policy_and_limiter(self, dest) -> tuple[RetryPolicy, SharedRate | None]:
        s = self.router.settings
        policy = policy_for(s, dest.id, dest.type)
        limits = parse_limits(s.router_rate_limits)
        rate = limits.get(dest.id, limits.get(dest.type))
        if not rate:
            return policy, None
        if self.limiter is None or self.limiter[0] != rate:
            if self.limiter is not None:
                self.limiter[1].close()
            self.limiter = (rate, SharedRate(s.database_url, f"rt:{dest.id}", rate, self.stop_event))
        return policy, self.limiter[1]

    def run(self) -> None:
        s = self.router.settings
        last_refresh = 0.0
        idle = 0.05
        margin = commit_margin(s.lease_seconds)
        while not self.stop_event.is_set():
            try:
                conn = self.db.get()
                workspace = self.router.watcher.current
                blocked = workspace.why_not_delivered(self.dest_id)
                if blocked is not None:
                    found = workspace.destination_by_id(self.dest_id)
                    self._drain(conn, blocked, found[1].type if found else None)
                    self.stop_event.wait(1.0)
                    continue
                _source, dest = workspace.destination_by_id(self.dest_id)
                if time.monotonic() - last_refresh > s.lease_seconds / 3 or not self.leases.owned:
                    self.leases.refresh(conn)
                    last_refresh = time.monotonic()
                if not self.leases.owned:
                    self.stop_event.wait(min(1.0, s.lease_seconds / 3))
                    continue
                # Renewed before every round: the round then has a whole lease to finish in.
                renewed_at = time.monotonic()
                left = self.leases.renew(conn)
                if not self.leases.owned:
                    last_refresh = 0.0
                    continue
                parts = sorted(self.leases.owned)
                jobs = claim_ready(conn, TABLE, self.dest_id, parts, s.router_batch_size)
                if not jobs:
                    self._idle_wait(conn, idle)
                    idle = min(idle * 2, 1.0)
                    continue
                idle = 0.05
                policy, limiter = self.policy_and_limiter(dest)
                overrides = self.router.endpoint_overrides
                finish_by = renewed_at + left - margin
                round_ = Round(dest, policy, lambda req, timeout, o=overrides, t=dest.type: self._send(req, o, t, timeout),
                               limiter, self.stop_event, TABLE, deadline=renewed_at + s.lease_seconds / 3,
                               finish_by=finish_by, timeout=s.router_timeout)
                outcomes = round_.run(jobs, self.pool, s.router_workers)
                if not record(conn, TABLE, self.dest_id, self.router.owner, parts, outcomes):
                    log.warning("lost a partition lease during a round; its outcomes are left to the new owner",
                                extra={"destination_id": self.dest_id,
                                       "late_s": round(time.monotonic() - finish_by, 3)})
                    last_refresh = 0.0
                    continue
                self.db.healthy()
                self._count(outcomes)
            except Exception as exc:  # noqa: BLE001 - a worker must survive anything and try again
                recover(exc, self.db, self.stop_event, log, self.dest_id, "router round")
        self._shutdown()

    def _count(self, outcomes) -> None:
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

    def _send(self, request: dict, overrides: dict, dest_type: str, timeout: float):
        started = time.monotonic()
        try:
            return send(request, overrides, timeout)
        finally:
            metrics().router_request_seconds.labels(dest_type).observe(time.monotonic() - started)

    def _idle_wait(self, conn, idle: float) -> None:
        with conn.cursor() as cur:
            nxt = next_retry_at(cur, TABLE, self.dest_id, sorted(self.leases.owned))
            cur.execute("SELECT now()")
            now = cur.fetchone()[0]
        conn.commit()
        wait = idle if nxt is None else max(0.01, min(idle, (nxt - now).total_seconds()))
        self.stop_event.wait(wait)

    def _drain(self, conn, reason: str, dest_type: str | None) -> None:
        n = drain(conn, TABLE, self.dest_id, reason, dest_type)
        if n:
            log.warning("pending jobs moved to failed_jobs", extra={"destination_id": self.dest_id, "jobs": n,
                                                                    "reason": reason})

    def _shutdown(self) -> None:
        self.pool.shutdown(wait=True)
        conn = self.db.conn
        with contextlib.suppress(Exception):
            if conn is not None and not conn.closed:
                self.leases.release_all(conn)
        if self.limiter is not None:
            self.limiter[1].close()
        self.db.close()


class Router:
    def __init__(self, settings: Settings, watcher: WorkspaceWatcher, stop_event: threading.Event | None = None):
        self.settings = settings
        self.watcher = watcher
        self.owner = f"{OWNER_PREFIX}{socket.gethostname()}/{os.getpid()}"
        self.endpoint_overrides = settings.endpoint_override_map
        self.workers: dict[str, DestinationWorker] = {}
        self.warehouse_workers: dict[str, WarehouseWorker] = {}  # the batch router: one per warehouse destination
        self.stop_event = stop_event or threading.Event()
        self.db = LongLivedConnection(settings.database_url, "sluice-router", stop=self.stop_event, logger=log)

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
            for owner in dead:
                heartbeats.remove(cur, owner)
        conn.commit()

    def wanted_destinations(self, conn, warehouses: bool = False) -> set[str]:
        """Destinations with pending jobs in their queue, or configured: cloud ones (rt_jobs), or
        warehouses (batch_rt_jobs)."""
        with conn.cursor() as cur:
            wanted = set(active_destinations(cur, WAREHOUSE_TABLE if warehouses else TABLE))
        conn.commit()
        for source in self.watcher.current.sources:
            for dest in source.destinations:
                if dest.is_warehouse == warehouses:
                    wanted.add(dest.id)
        return wanted

    def run(self) -> int:
        s = self.settings
        connected = False
        last_beat = 0.0
        while not self.stop_event.is_set():
            try:
                conn = self.db.get()
                if not connected:
                    self._expire_dead_owners(conn)
                    connected = True
                for dest_id in sorted(self.wanted_destinations(conn) - set(self.workers)):
                    worker = self.workers[dest_id] = DestinationWorker(self, dest_id)
                    worker.start()
                for dest_id in sorted(self.wanted_destinations(conn, warehouses=True) - set(self.warehouse_workers)):
                    loader = self.warehouse_workers[dest_id] = WarehouseWorker(self, dest_id)
                    loader.start()
                if time.monotonic() - last_beat >= s.heartbeat_seconds:
                    last_beat = time.monotonic()
                    with conn.cursor() as cur:
                        heartbeats.beat(cur, self.owner, "router", detail={
                            "destinations": len(self.workers),
                            "delivered": sum(w.delivered for w in self.workers.values())})
                    conn.commit()
                self.db.healthy()
            except UNAVAILABLE_ERRORS as exc:
                log.warning("database unavailable", extra={"error": str(exc)[:200]})
                self.db.drop()
                connected = False
            except Exception:  # noqa: BLE001 - the router must survive anything and try again
                log.exception("router error")
                self.db.drop(failed=False)
            self.stop_event.wait(1.0)
        every = [*self.workers.values(), *self.warehouse_workers.values()]
        for worker in every:
            worker.stop_event.set()
        for worker in every:
            worker.join(timeout=s.router_timeout + 10)
        conn = self.db.conn
        with contextlib.suppress(Exception):
            if conn is not None and not conn.closed:
                with conn.cursor() as cur:
                    heartbeats.remove(cur, self.owner)
                conn.commit()
        self.db.close()
        log.info("router stopped", extra={"delivered": sum(w.delivered for w in self.workers.values()),
                                          "aborted": sum(w.aborted for w in self.workers.values())})
        return 0


def main(settings: Settings) -> int:
    problem = timing_problem(settings)
    if problem:
        log.error(f"sluice router: {problem}")
        return layout.EXIT_CONFIG
    stop_event = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop_event.set())
    signal.signal(signal.SIGINT, lambda *_: stop_event.set())
    refused = layout.refuse_or_wait(settings, "router", stop_event, log)
    if refused is not None:
        return refused
    watcher = WorkspaceWatcher(settings.config, poll_interval=settings.config_poll_interval)
    watcher.start()
    router = Router(settings, watcher, stop_event)
    janitor = Janitor(settings.database_url, retention_from(settings), settings.janitor_interval_seconds)
    janitor.start()
    log.info("router started", extra={"owner": router.owner, "partitions": settings.router_partitions,
                                      "workers_per_destination": settings.router_workers})
    try:
        return router.run()
    finally:
        janitor.stop()
        watcher.stop()
