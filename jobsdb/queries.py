"""Loads the named SQL statements in queries.sql: the queue's SQL lives in one file."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

QUEUE_TABLES = ("gw_jobs", "rt_jobs", "batch_rt_jobs")


@cache
def _all() -> dict[str, str]:
    text = Path(__file__).with_name("queries.sql").read_text()
    out: dict[str, str] = {}
    for block in re.split(r"^-- name: ", text, flags=re.M)[1:]:
        name, _, body = block.partition("\n")
        lines = [ln for ln in body.splitlines() if not ln.startswith("--")]
        out[name.strip()] = "\n".join(lines).strip().rstrip(";")
    return out


def query(name: str, **parts: str) -> str:
    sql = _all()[name]
    if "table" in parts and parts["table"] not in QUEUE_TABLES:
        raise ValueError(f"not a queue table: {parts['table']}")
    return sql.format(**parts) if parts else sql
