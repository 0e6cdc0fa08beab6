"""The batch router: one worker thread per warehouse destination, in the router process. On the
destination's sync schedule it claims the destination's pending `batch_rt_jobs` (with the same partition
leases as the router), turns their events into rows in RudderStack's layout (transformers.warehouse),
loads them into the warehouse (router.warehouse_load) and then acknowledges the jobs in the queue.

The warehouse commits first and the queue second: a crash in between loads the same events again,
which the merge on `id` makes harmless. A warehouse that is down or refuses the load holds only its own
jobs: they are retried with backoff within the destination's retry budget, then go to failed_jobs with
the warehouse's error (never its password). Other destinations never wait for it.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import threading
import time

from psycopg2.extras import register_default_jsonb

from config.metrics import metrics
from jobsdb import storable
from jobsdb.db import LongLivedConnection
from jobsdb.leases import PartitionLeases
from jobsdb.processing import FailedRow
from jobsdb.queries import query
from jobsdb.routing import DeliveryJob, Outcomes, claim_ready, drain, record
from router import warehouse_schedule as schedule
from router.backoff import RetryPolicy, policy_for, recover
from router.warehouse_load import LoadResult, PostgresWarehouse, WarehouseError
from transformers import json_codec
from transformers import warehouse as wh

log = logging.getLogger("sluice.warehouse")
TABLE = "batch_rt_jobs"
STAGE = "warehouse"


class WarehouseWorker(threading.Thread):
    def __init__(self, router, dest_id: str):
        super().__init__(name=f"warehouse-{dest_id}", daemon=True)
        self.router = router
        self.dest_id = dest_id
        self.stop_event = threading.Event()
        s = router.settings
        self.leases = PartitionLeases("batch_rt", dest_id, s.router_partitions, router.owner, s.lease_seconds)
        self.db = LongLivedConnection(
            s.database_url, "sluice-warehouse", stop=self.stop_event, logger=log,
            on_connect=lambda conn: register_default_jsonb(conn, loads=json_codec.loads))
        self.warehouse: tuple[str, PostgresWarehouse] | None = None  # (config fingerprint, connection)
        self.loaded = self.aborted = 0

    # -- the loop --------------------------------------------------------------------------------

    def run(self) -> None:
        s = self.router.settings
        last_refresh = 0.0
        more = False
        while not self.stop_event.is_set():
            wait = 1.0
            try:
                conn = self.db.get()
                workspace = self.router.watcher.current
                blocked = workspace.why_not_delivered(self.dest_id)
                if blocked is not None:
                    found = workspace.destination_by_id(self.dest_id)
                    self._drain(conn, blocked, found[1].type if found else None)
                    self.stop_event.wait(1.0)
                    continue
                source, dest = workspace.destination_by_id(self.dest_id)
                if time.monotonic() - last_refresh > s.lease_seconds / 3 or not self.leases.owned:
                    self.leases.refresh(conn)
                    last_refresh = time.monotonic()
                if not self.leases.owned:
                    self.stop_event.wait(min(1.0, s.lease_seconds / 3))
                    continue
                # A full load means more may wait: the next one goes at once, whatever the schedule says.
                if more or self._due(conn, dest):
                    more = self.sync(conn, source, dest)
                    wait = 0.0 if more else 1.0
                self.db.healthy()
            except Exception as exc:  # noqa: BLE001 - a worker must survive anything and try again
                recover(exc, self.db, self.stop_event, log, self.dest_id, "warehouse round")
            if wait:
                self.stop_event.wait(wait)
        self._shutdown()

    def _due(self, conn, dest) -> bool:
        s = self.router.settings
        early = max(1, s.warehouse_sync_events)
        with conn.cursor() as cur:
            cur.execute(query("warehouse_pending_count"), {"dest": self.dest_id, "limit": early})
            pending = cur.fetchone()[0]
            cur.execute(query("warehouse_sync_get"), {"dest": self.dest_id})
            row = cur.fetchone()
            cur.execute("SELECT now()")
            now = cur.fetchone()[0]
        conn.commit()
        last_attempt = row[0] if row else None
        return schedule.due(dest.config, now, last_attempt, pending, early, s.warehouse_sync_seconds)

    # -- one sync --------------------------------------------------------------------------------

    def sync(self, conn, source, dest) -> bool:
        """Load one batch of the destination's waiting events. Returns True when a full batch was loaded
        (more may wait: load again at once)."""
        s = self.router.settings
        with conn.cursor() as cur:
            cur.execute(query("warehouse_sync_attempt"), {"dest": self.dest_id, "type": dest.type})
        conn.commit()
        self.leases.renew(conn)
        parts = sorted(self.leases.owned)
        if not parts:
            return False
        jobs = claim_ready(conn, TABLE, self.dest_id, parts, s.warehouse_batch_size, barrier=False)
        if not jobs:
            return False
        uuid_ts = datetime.datetime.now(datetime.UTC)
        per_job: list[tuple[DeliveryJob, list[wh.Row]]] = []
        out = Outcomes([], [], [], [])
        for job in jobs:
            try:
                per_job.append((job, self._rows(job, source, dest, uuid_ts)))
            except wh.Discarded as exc:
                out.aborted.append((job.job_id, self._dead_letter(job, dest, exc.reason, job.attempts + 1)))
        schema = wh.schema_name(dest.config.get("namespace"), source.name)
        started = time.monotonic()
        total = LoadResult()
        try:
            refused = self._load_isolating(self._warehouse(dest), schema, per_job, uuid_ts, total)
        except WarehouseError as exc:
            self._failed_load(conn, dest, [job for job, _ in per_job], self._policy(dest), out, str(exc))
        else:
            for job, error in refused:
                out.aborted.append((job.job_id, self._dead_letter(job, dest, f"the warehouse refused this event: "
                                                                             f"{error}", job.attempts + 1)))
            refused_ids = {job.job_id for job, _ in refused}
            loaded = [job for job, _ in per_job if job.job_id not in refused_ids]
            out.delivered += [(job.job_id, 200) for job in loaded]
            with conn.cursor() as cur:
                cur.execute(query("warehouse_sync_success"), {
                    "dest": self.dest_id, "rows": total.rows, "events": len(loaded), "discards": total.discards})
            conn.commit()
            m = metrics()
            m.warehouse_rows.labels(self.dest_id).inc(total.rows)
            if total.discards:
                m.warehouse_discards.labels(self.dest_id).inc(total.discards)
            log.info("warehouse load", extra={"destination_id": self.dest_id, "schema": schema, "events": len(loaded),
                                              "rows": total.rows, "discards": total.discards, "refused": len(refused),
                                              "tables": total.tables, "ms": round((time.monotonic() - started) * 1000)})
        if not record(conn, TABLE, self.dest_id, self.router.owner, parts, out):
            # Loaded, but our leases moved on: the new owner loads these events again (same rows, merged on id).
            log.warning("lost a partition lease during a warehouse load; the new owner loads the batch again",
                        extra={"destination_id": self.dest_id})
            return False
        self.loaded += len(out.delivered)
        self.aborted += len(out.aborted)
        return not out.retry and len(jobs) >= s.warehouse_batch_size

    def _load_isolating(self, warehouse: PostgresWarehouse, schema: str,
                        per_job: list[tuple[DeliveryJob, list[wh.Row]]], uuid_ts, total: LoadResult
                        ) -> list[tuple[DeliveryJob, str]]:
        """Load the jobs' rows. If the warehouse refuses the rows themselves (a data error, not an outage),
        load halves separately until the refused events stand alone; returns those with the error. An
        outage raises WarehouseError (the whole batch is retried; halves already loaded merge again)."""
        rows = [row for _, job_rows in per_job for row in job_rows]
        if not rows:
            return []
        try:
            result = warehouse.load(schema, rows, uuid_ts)
        except WarehouseError as exc:
            if exc.retryable:
                raise
            if len(per_job) == 1:
                return [(per_job[0][0], str(exc))]
            half = len(per_job) // 2
            return (self._load_isolating(warehouse, schema, per_job[:half], uuid_ts, total)
                    + self._load_isolating(warehouse, schema, per_job[half:], uuid_ts, total))
        total.rows += result.rows
        total.discards += result.discards
        for table, n in result.tables.items():
            total.tables[table] = total.tables.get(table, 0) + n
        return []

    def _rows(self, job: DeliveryJob, source, dest, uuid_ts) -> list[wh.Row]:
        event = job.payload.get("event") if isinstance(job.payload, dict) else None
        if not isinstance(event, dict):
            raise wh.Discarded("the stored event is not a JSON object")
        return wh.event_rows(event, source_id=source.id, source_type=source.type,
                             destination_id=dest.id, destination_type=dest.type, config=dest.config, uuid_ts=uuid_ts)

    def _failed_load(self, conn, dest, jobs: list[DeliveryJob], policy: RetryPolicy, out: Outcomes, error: str) -> None:
        now = datetime.datetime.now(datetime.UTC)
        log.warning("warehouse load failed; retrying with backoff", extra={"destination_id": self.dest_id,
                                                                          "events": len(jobs), "error": error})
        with conn.cursor() as cur:
            cur.execute(query("warehouse_sync_error"), {"dest": self.dest_id, "error": storable.text(error, 2000)})
        conn.commit()
        for job in jobs:
            attempts = job.attempts + 1
            if policy.exhausted(attempts, job.first_attempt_at, now, counted=True):
                reason = f"warehouse load failed, retry budget exhausted after {attempts} attempts: {error}"
                out.aborted.append((job.job_id, self._dead_letter(job, dest, reason, attempts)))
            else:
                out.retry.append((job.job_id, 1, policy.delay(attempts), 0, error[:500]))

    def _dead_letter(self, job: DeliveryJob, dest, reason: str, attempts: int) -> FailedRow:
        return FailedRow(stage=STAGE, source_id=job.source_id, destination_id=self.dest_id, destination_type=dest.type,
                         user_key=job.user_key, message_id=job.message_id,
                         event=job.payload.get("event", job.payload) if isinstance(job.payload, dict) else job.payload,
                         reason=reason, attempts=attempts, original_job_id=job.job_id, original_queue=TABLE)

    def _policy(self, dest) -> RetryPolicy:
        return policy_for(self.router.settings, dest.id, dest.type)

    def _warehouse(self, dest) -> PostgresWarehouse:
        fingerprint = json.dumps(dest.config, sort_keys=True, default=str)
        if self.warehouse is None or self.warehouse[0] != fingerprint:
            if self.warehouse is not None:
                self.warehouse[1].close()
            self.warehouse = (fingerprint, PostgresWarehouse(dest.config, self.router.settings.warehouse_connect_timeout))
        return self.warehouse[1]

    def _drain(self, conn, reason: str, dest_type: str | None) -> None:
        n = drain(conn, TABLE, self.dest_id, reason, dest_type)
        if n:
            log.warning("pending warehouse jobs moved to failed_jobs", extra={"destination_id": self.dest_id,
                                                                              "jobs": n, "reason": reason})

    def _shutdown(self) -> None:
        conn = self.db.conn
        with contextlib.suppress(Exception):
            if conn is not None and not conn.closed:
                self.leases.release_all(conn)
        if self.warehouse is not None:
            self.warehouse[1].close()
        self.db.close()
