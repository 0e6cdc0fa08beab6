"""Loads the named SQL statements in jobsdb/*.sql: the queue's SQL lives beside this module, nowhere else."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

QUEUE_TABLES = ("gw_jobs", "rt_jobs", "batch_rt_jobs")


@cache
def _all() -> dict[str, str]:
    out: dict[str, str] = {}
    for path in sorted(Path(__file__).parent.glob("*.sql")):  # queries.sql, routing.sql, ...
        for block in re.split(r"^-- name: ", path.read_text(), flags=re.M)[1:]:
            name, _, body = block.partition("\n")
            if name.strip() in out:
                raise ValueError(f"{path.name}: query {name.strip()!r} is defined twice")
            lines = [ln for ln in body.splitlines() if not ln.startswith("--")]
            out[name.strip()] = "\n".join(lines).strip().rstrip(";")
    return out


def query(name: str, **parts: str) -> str:
    sql = _all()[name]
    if "table" in parts and parts["table"] not in QUEUE_TABLES:
        raise ValueError(f"not a queue table: {parts['table']}")
    return sql.format(**parts) if parts else sql
