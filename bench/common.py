"""Shared set-up for the benchmarks: a Postgres (embedded in a temp dir, or SLUICE_DATABASE_URL) and a config."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import psutil

from jobsdb.embedded import EmbeddedPostgres
from jobsdb.migrate import migrate

WRITE_KEY = "bench-write-key"


@contextlib.contextmanager
def database(fsync: bool = True):
    """Yield a migrated DSN. The embedded server runs with synchronous_commit on: figures are durable."""
    url = os.environ.get("SLUICE_DATABASE_URL")
    if url:
        migrate(url)
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        pg = EmbeddedPostgres(Path(tmp), fsync=fsync)
        dsn = pg.start()
        try:
            migrate(dsn)
            yield dsn
        finally:
            pg.stop()


def workspace(path: Path, destinations: list[dict] | None = None) -> Path:
    path.write_text(json.dumps({"workspaceId": "bench", "sources": [{
        "id": "src-bench", "name": "bench", "writeKey": WRITE_KEY, "enabled": True,
        "sourceDefinition": {"name": "HTTP"}, "destinations": destinations or []}]}))
    return path


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, in MB."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs if p.is_running()) / 1e6
    except psutil.NoSuchProcess:
        return 0.0


def postgres_cpu(dsn: str) -> float:
    """CPU seconds the Postgres server has used so far: the postmaster, its running backends and the ones
    that already exited (psutil's children_* times). Only for a server on this machine."""
    import psycopg2

    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            backend = cur.fetchone()[0]
        postmaster = psutil.Process(backend).parent()
        t = postmaster.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for child in postmaster.children():
            with contextlib.suppress(psutil.NoSuchProcess):
                c = child.cpu_times()
                total += c.user + c.system
        return total
    finally:
        conn.close()
