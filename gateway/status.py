"""The gateway's own status: /health (for load balancers), /version, / and /metrics (Prometheus)."""

from __future__ import annotations

import json

from flask import Blueprint, Response

from config.metrics import render
from gateway.health import VERSION
from gateway.state import state
from jobsdb.db import connect
from jobsdb.queue import failed_open, pending_summary, warehouse_report

bp = Blueprint("status", __name__)


@bp.get("/health")
def health() -> Response:
    """200 while this gateway can commit events, 503 when it cannot; O(1) whatever the backlog."""
    st = state()
    status, body = st.health.report(st.workspace.current)
    return Response(json.dumps(body), status=status, mimetype="application/json")


@bp.get("/version")
def version() -> Response:
    return Response(json.dumps({"version": VERSION, "name": "sluice"}), mimetype="application/json")


@bp.get("/")
def root() -> Response:
    return Response("OK", mimetype="text/plain")


@bp.get("/metrics")
def prometheus_metrics() -> Response:
    body, content_type = render(QueueCollector(state()))
    return Response(body, content_type=content_type)


def _queue_depths(dsn: str):
    conn = connect(dsn, "sluice-metrics", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SET statement_timeout = '2s'")
            return pending_summary(cur), failed_open(cur), warehouse_report(cur)
    finally:
        conn.close()


class QueueCollector:
    """Queue depths and open dead letters, read from Postgres at scrape time."""

    def __init__(self, st):
        self.st = st

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        pending = GaugeMetricFamily("sluice_queue_pending", "Jobs waiting in a queue", labels=["queue"])
        oldest = GaugeMetricFamily("sluice_queue_oldest_pending_seconds", "Age of the oldest pending job",
                                   labels=["queue"])
        failed = GaugeMetricFamily("sluice_failed_jobs_open", "Dead letters not yet replayed",
                                   labels=["destination_id", "stage"])
        up = GaugeMetricFamily("sluice_database_up", "1 when Postgres answered this scrape")
        labels = ["destination_id"]
        wh = {
            "pending": GaugeMetricFamily("sluice_warehouse_pending", "Events waiting for a warehouse load", labels=labels),
            "last_success": GaugeMetricFamily("sluice_warehouse_last_success_timestamp_seconds",
                                              "When the last warehouse load succeeded (Unix time)", labels=labels),
            "rows": GaugeMetricFamily("sluice_warehouse_rows_loaded", "Rows loaded into the warehouse, in total",
                                      labels=labels),
            "discards": GaugeMetricFamily("sluice_warehouse_discards_total_rows",
                                          "Values written to rudder_discards, in total", labels=labels),
            "failing": GaugeMetricFamily("sluice_warehouse_failing",
                                         "1 when the last load attempt failed (see `sluice jobs` for the error)",
                                         labels=labels),
        }
        try:
            queues, dead, warehouses = self.st.blocking(_queue_depths, self.st.settings.database_url)
            for w in warehouses:
                key = [w["destination_id"]]
                wh["pending"].add_metric(key, w["pending"])
                wh["rows"].add_metric(key, w["rows_loaded"])
                wh["discards"].add_metric(key, w["discards"])
                wh["failing"].add_metric(key, 1 if w["failing"] else 0)
                if w["last_success_at"]:
                    wh["last_success"].add_metric(key, w["last_success_at"].timestamp())
            for queue, n, age in queues:
                pending.add_metric([queue], n)
                oldest.add_metric([queue], age)
            for dest, stage, n in dead:
                failed.add_metric([dest, stage], n)
            up.add_metric([], 1)
        except Exception:  # noqa: BLE001 - a scrape must answer even with the database down
            up.add_metric([], 0)
        yield from (pending, oldest, failed, up, *wh.values())
