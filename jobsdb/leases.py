"""Leases on queue partitions: each part has one owner at a time, so per-user order survives many processes."""

from __future__ import annotations

import math
import random
import time

from psycopg2 import errors

from jobsdb.queries import query
from jobsdb.queue import reset_part_claims


class PartitionLeases:
    """Holds a fair share of `partitions` parts of (queue, scope) for `owner`, renewed by refresh()."""

    def __init__(self, queue: str, scope: str, partitions: int, owner: str, ttl: float):
        self.queue, self.scope, self.partitions, self.owner, self.ttl = queue, scope, partitions, owner, ttl
        self.owned: set[int] = set()

    def refresh(self, conn) -> set[int]:
        """Renew owned parts, take free or expired ones up to a fair share, give back extras. Commits.

        Two owners refreshing at once may lock each other's rows in opposite orders; Postgres then aborts
        one of them, which simply tries again."""
        for attempt in range(5):
            try:
                return self._refresh(conn)
            except errors.TransactionRollbackError:  # deadlock detected, serialization failure
                conn.rollback()
                if attempt == 4:
                    raise
                time.sleep(random.uniform(0.01, 0.1))
        raise AssertionError("unreachable")

    def _refresh(self, conn) -> set[int]:
        table = {"gw": "gw_jobs", "rt": "rt_jobs", "batch_rt": "batch_rt_jobs"}[self.queue]
        args = {"queue": self.queue, "scope": self.scope, "owner": self.owner, "ttl": self.ttl}
        with conn.cursor() as cur:
            cur.execute(query("heartbeat_owner"), args)
            cur.execute(query("live_owners"), args)
            share = math.ceil(self.partitions / max(cur.fetchone()[0], 1))
            keep = sorted(self.owned)[:share]
            for part in set(self.owned) - set(keep):
                cur.execute(query("release_part"), {**args, "part": part})
            cur.execute(query("lease_keep"), {**args, "parts": keep})
            owned = {r[0] for r in cur.fetchall()}
            if len(owned) < share:
                # Free parts first (in order, so two newcomers never wait on each other crosswise),
                # then parts whose owner is gone.
                cur.execute(query("lease_rows"), args)
                held = {r[0] for r in cur.fetchall()}
                for part in range(self.partitions):
                    if len(owned) >= share:
                        break
                    if part not in held:
                        cur.execute(query("lease_take_free"), {**args, "part": part})
                        owned |= {r[0] for r in cur.fetchall()}
                if len(owned) < share:
                    cur.execute(query("lease_take_expired"), {**args, "limit": share - len(owned)})
                    owned |= {r[0] for r in cur.fetchall() if r[0] < self.partitions}
            # Taken over (or first taken): void earlier claims so the old owner's acks fail.
            reset_part_claims(cur, table, sorted(owned - self.owned), self.scope or None)
        conn.commit()
        self.owned = owned
        return owned

    def renew(self, conn) -> float:
        """Extend the owned parts' leases in one statement, before a round. Returns the seconds the
        leases now have left (by the database's clock); parts lost meanwhile are dropped from `owned`.
        Commits."""
        if not self.owned:
            return 0.0
        with conn.cursor() as cur:
            cur.execute(query("renew_leases"), {"queue": self.queue, "scope": self.scope, "owner": self.owner,
                                                "ttl": self.ttl, "parts": sorted(self.owned)})
            rows = cur.fetchall()
        conn.commit()
        self.owned = {part for part, _ in rows}
        return min((left for _, left in rows), default=0.0)

    def void_claims(self, conn) -> int:
        """Void every unfinished claim in the parts this owner holds (its own included): after a failure
        whose claims may not have been given back, work restarts from each part's oldest pending job
        instead of skipping past claims that would only run out with their lease. Commits."""
        table = {"gw": "gw_jobs", "rt": "rt_jobs", "batch_rt": "batch_rt_jobs"}[self.queue]
        with conn.cursor() as cur:
            n = reset_part_claims(cur, table, sorted(self.owned), self.scope or None)
        conn.commit()
        return n

    def release_all(self, conn) -> None:
        with conn.cursor() as cur:
            cur.execute(query("release_leases"), {"owner": self.owner})
        conn.commit()
        self.owned = set()
