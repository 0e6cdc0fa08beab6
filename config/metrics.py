"""Prometheus metrics shared by every Sluice process on a host (prometheus_client's multiprocess mode).

The directory in PROMETHEUS_MULTIPROC_DIR must be set before prometheus_client is first imported in a
process: `sluice up` and `sluice gateway` set it for their children, and the gateway's /metrics reads
every process's samples from it, plus live queue depths from Postgres.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_dir(path: str | os.PathLike | None = None, wipe: bool = True) -> str:
    """Choose (and empty) the shared samples directory; children inherit it through the environment."""
    if path is None:
        path = os.environ.get(ENV) or tempfile.mkdtemp(prefix="sluice-metrics-")
    p = Path(path)
    if wipe and p.exists():
        shutil.rmtree(p, ignore_errors=True)
    p.mkdir(parents=True, exist_ok=True)
    os.environ[ENV] = str(p)
    return str(p)


class _Metrics:
    """Created on first use, so importing this module never fixes prometheus_client's mode too early."""

    def __init__(self):
        from prometheus_client import Counter, Histogram

        self.gateway_events = Counter("sluice_gateway_events", "Events the gateway accepted or rejected",
                                      ["source_id", "outcome"])
        self.gateway_requests = Counter("sluice_gateway_requests", "Gateway HTTP requests by route and status",
                                        ["route", "status"])
        self.commit_rows = Histogram("sluice_gateway_commit_rows", "Rows per group commit",
                                     buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000))
        self.commit_seconds = Histogram("sluice_gateway_commit_seconds", "Duration of one group commit",
                                        buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
        self.processor_events = Counter(
            "sluice_processor_events", "Processor output: gateway jobs done (jobs), delivery jobs written (rt, "
            "batch_rt), dead letters (failed), filtered and duplicate events", ["outcome"])
        self.router_jobs = Counter("sluice_router_jobs", "Delivery jobs by destination and outcome",
                                   ["destination_id", "outcome"])
        self.router_request_seconds = Histogram(
            "sluice_router_request_seconds", "Destination HTTP request duration", ["destination_type"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.warehouse_rows = Counter("sluice_warehouse_rows", "Rows loaded into warehouse tables, by destination",
                                      ["destination_id"])
        self.warehouse_discards = Counter(
            "sluice_warehouse_discards", "Values that could not take their column's type (rudder_discards)",
            ["destination_id"])


_metrics: _Metrics | None = None
_lock = threading.Lock()


def metrics() -> _Metrics:
    global _metrics
    if _metrics is None:
        with _lock:  # delivery threads may all ask at once; register the metrics once
            if _metrics is None:
                _metrics = _Metrics()
    return _metrics


def mark_process_dead(pid: int) -> None:
    if os.environ.get(ENV):
        from prometheus_client import multiprocess

        with contextlib.suppress(Exception):
            multiprocess.mark_process_dead(pid)


def render(extra_collector=None) -> tuple[bytes, str]:
    """Every process's samples (from the shared directory, or this process alone) plus `extra_collector`."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

    registry = CollectorRegistry()
    if os.environ.get(ENV):
        multiprocess.MultiProcessCollector(registry)
    else:
        metrics()
        from prometheus_client import REGISTRY

        registry = REGISTRY
    if extra_collector is not None:
        with contextlib.suppress(ValueError):
            registry.register(extra_collector)
    try:
        return generate_latest(registry), CONTENT_TYPE_LATEST
    finally:
        if extra_collector is not None:
            with contextlib.suppress(KeyError):
                registry.unregister(extra_collector)
