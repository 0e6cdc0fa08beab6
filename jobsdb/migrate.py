"""Versioned schema migrations: migrations/NNNN_name.sql applied in order, each once, under a lock."""

from __future__ import annotations

import re
from pathlib import Path

from jobsdb import datasets, layout
from jobsdb.db import connect, transaction

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_LOCK_ID = 51171  # advisory lock key that serialises migrations


def migrations() -> list[tuple[int, str, Path]]:
    out = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        m = re.match(r"(\d+)_(.+)\.sql$", path.name)
        if m:
            out.append((int(m.group(1)), m.group(2), path))
    return out


def migrate(dsn: str, jobs_per_dataset: int = 100_000, gw_partitions: int = 16, router_partitions: int = 16) -> list[str]:
    """Apply pending migrations and make sure every queue has datasets to write into. Returns what was applied.

    The layout (dataset size, partition counts) is recorded by the first migrate and never changed later."""
    applied: list[str] = []
    conn = connect(dsn, "sluice-migrate")
    try:
        with transaction(conn) as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
            cur.execute(
                "CREATE TABLE IF NOT EXISTS sluice_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur.execute("SELECT version FROM sluice_migrations")
            done = {row[0] for row in cur.fetchall()}
            for version, name, path in migrations():
                if version in done:
                    continue
                cur.execute(path.read_text())
                cur.execute("INSERT INTO sluice_migrations (version, name) VALUES (%s, %s)", (version, name))
                applied.append(f"{version:04d}_{name}")
            layout.store(cur, jobs_per_dataset=jobs_per_dataset, gw_partitions=gw_partitions,
                         router_partitions=router_partitions)
        for table in datasets.QUEUE_TABLES:
            datasets.ensure(conn, table)
    finally:
        conn.close()
    return applied
