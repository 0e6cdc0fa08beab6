"""Leases on queue partitions: each part has one owner at a time, so per-user order survives many processes."""

from __future__ import annotations

import math
import random

from jobsdb.queries import query
from jobsdb.queue import reset_part_claims


class PartitionLeases:
    """Holds a fair share of `partitions` parts of (queue, scope) for `owner`, renewed by refresh()."""

    def __init__(self, queue: str, scope: str, partitions: int, owner: str, ttl: float):
        self.queue, self.scope, self.partitions, self.owner, self.ttl = queue, scope, partitions, owner, ttl
        self.owned: set[int] = set()

    def refresh(self, conn) -> set[int]:
        """Renew owned parts, take free or expired ones up to a fair share, give back extras. Commits."""
        table = {"gw": "gw_jobs", "rt": "rt_jobs", "batch_rt": "batch_rt_jobs"}[self.queue]
        args = {"queue": self.queue, "scope": self.scope, "owner": self.owner, "ttl": self.ttl}
        with conn.cursor() as cur:
            cur.execute(query("heartbeat_owner"), args)
            cur.execute(query("live_owners"), args)
            share = math.ceil(self.partitions / max(cur.fetchone()[0], 1))
            keep = sorted(self.owned)[:share]
            for part in set(self.owned) - set(keep):
                cur.execute(query("release_part"), {**args, "part": part})
            owned: set[int] = set()
            candidates = list(keep) + random.sample(
                [p for p in range(self.partitions) if p not in keep], self.partitions - len(keep))
            for part in candidates:
                if len(owned) >= share:
                    break
                cur.execute(query("acquire_lease"), {**args, "part": part})
                row = cur.fetchone()
                if row is None:
                    continue
                owned.add(part)
                if part not in self.owned:
                    # Taken over (or first taken): void earlier claims so the old owner's acks fail.
                    reset_part_claims(cur, table, part, self.scope or None)
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

    def release_all(self, conn) -> None:
        with conn.cursor() as cur:
            cur.execute(query("release_leases"), {"owner": self.owner})
        conn.commit()
        self.owned = set()
