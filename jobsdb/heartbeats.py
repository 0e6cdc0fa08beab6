"""Heartbeats: every Sluice process records that it is alive, and `sluice up` records the state of the
roles it supervises. /health reads this one small table instead of counting the queues."""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from jobsdb.queries import query

ROLES = ("gateway", "processor", "router", "admin")


def owner_of(role: str) -> str:
    return f"{role}@{socket.gethostname()}/{os.getpid()}"


def beat(cur, owner: str, role: str, state: str = "up", detail: dict | None = None, pid: int | None = None,
         host: str | None = None) -> None:
    cur.execute(query("heartbeat"), {"owner": owner, "role": role, "host": host or socket.gethostname(),
                                     "pid": os.getpid() if pid is None else pid, "state": state,
                                     "detail": None if detail is None else json.dumps(detail, default=str)})


def remove(cur, owner: str) -> None:
    cur.execute(query("heartbeat_remove"), {"owner": owner})


def roles_status(cur, stale_after: float) -> dict[str, Any]:
    """{"roles": {role: {"live": n, "processes": [...]}}, "down": [...], "crash_looping": [...]}.

    A process is live while its last beat is younger than `stale_after` seconds. A supervised slot
    (written by `sluice up`) that says restarting or crash-looping is named, whatever its age."""
    cur.execute(query("heartbeat_list"))
    roles: dict[str, dict[str, Any]] = {}
    crash_looping, restarting = [], []
    for owner, role, host, _pid, state, detail, age in cur.fetchall():
        if owner.startswith("up@"):
            if age < stale_after * 3:
                if state == "crash-looping":
                    crash_looping.append({"role": role, "host": host, "slot": owner, **(detail or {})})
                elif state == "restarting":
                    restarting.append({"role": role, "host": host, "slot": owner, **(detail or {})})
            continue
        entry = roles.setdefault(role, {"live": 0, "stale": 0})
        if age < stale_after and state == "up":
            entry["live"] += 1
        else:
            entry["stale"] += 1
    live = {r for r, e in roles.items() if e["live"]}
    down = {r for r in roles if r not in live} | {x["role"] for x in crash_looping + restarting if x["role"] not in live}
    return {"roles": roles, "down": sorted(down), "crash_looping": crash_looping, "restarting": restarting}
