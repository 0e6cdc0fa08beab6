"""/health: can this gateway commit events, and what should an operator look at first.

O(1) whatever the backlog: the oldest pending gateway job is one entry of the pending index, the roles
come from the small heartbeats table, both on the worker's side connection (1 s statement timeout).
200 while the gateway can commit: Postgres answers the probe, or answers but too slowly while the
committer's last transaction succeeded moments ago. 503 only when it cannot (Postgres unreachable), so
a load balancer never pulls a gateway because of a backlog.
"""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg2
from psycopg2 import errors

from jobsdb import heartbeats
from jobsdb.db import UNAVAILABLE_ERRORS
from jobsdb.queries import query

VERSION = "0.1.0"


def _probe(cur, stale_after: float) -> dict:
    cur.execute(query("gw_oldest_pending"))
    row = cur.fetchone()
    status = heartbeats.roles_status(cur, stale_after)
    return {"oldest_age_s": round(max(row[1], 0.0), 3) if row else 0.0, "roles": status}


class HealthCheck:
    def __init__(self, side, committer, heartbeat_seconds: float):
        self.side = side  # a gateway.side_connection.SideConnection
        self.committer = committer
        self.stale_after = 3 * heartbeat_seconds
        # A commit this recent proves the database takes writes even if the probe is slow.
        self.fresh_commit = max(2 * heartbeat_seconds, 2.0)

    def report(self, workspace) -> tuple[int, dict]:
        body: dict = {"server": "UP", "db": "DOWN", "version": VERSION, "acceptingEvents": False,
                      "config": {"file": workspace.path, "sources": len(workspace.sources),
                                 "loadedAt": datetime.fromtimestamp(workspace.loaded_at, UTC).isoformat(
                                     timespec="milliseconds").replace("+00:00", "Z")}}
        committer = self.committer.state()
        body["committer"] = committer
        probe_error, reachable = None, True
        try:
            found = self.side.run(_probe, self.stale_after)
        except psycopg2.Error as exc:
            text = str(exc).strip()
            probe_error = text.splitlines()[0][:300] if text else type(exc).__name__
            reachable = isinstance(exc, errors.QueryCanceled) or not isinstance(exc, UNAVAILABLE_ERRORS)
        else:
            body["queue"] = {"gw_oldest_pending_age_s": found["oldest_age_s"]}
            roles = found["roles"]
            body["roles"] = {"down": roles["down"], "crash_looping": roles["crash_looping"],
                             "restarting": roles["restarting"]}
        # Postgres answered but the probe failed (too slow, say): the committer's recent success decides.
        committed = committer["online"] and committer["lastOkAgeS"] is not None and \
            committer["lastOkAgeS"] < self.fresh_commit
        if probe_error is None or (reachable and committed):
            body["db"] = "UP"
            body["acceptingEvents"] = True
            if probe_error is not None:
                body["warning"] = f"health probe failed, but the last commit succeeded: {probe_error}"
            return 200, body
        body["error"] = probe_error
        return 503, body

    def close(self) -> None:
        self.side.close()
