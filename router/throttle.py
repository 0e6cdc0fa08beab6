"""Per-destination rate limits that hold across every router process: the budget lives in Postgres
(jobsdb.rate_limits, one GCRA row per destination), so two routers at 5 events/s each still send 5."""

from __future__ import annotations

import json
import logging
import threading
import time

from jobsdb import rate_limits
from jobsdb.db import UNAVAILABLE_ERRORS, LongLivedConnection

log = logging.getLogger("sluice.router")
BURST_SECONDS = 1.0  # a destination may receive up to one second's worth of events at once


class SharedRate:
    """`rate` events per second for one destination, shared by all its delivery threads and routers."""

    def __init__(self, dsn: str, key: str, rate: float, stop: threading.Event):
        self.key, self.rate = key, rate
        self.db = LongLivedConnection(dsn, "sluice-router-rate", stop=stop, logger=log)
        self.lock = threading.Lock()

    def acquire(self, n: int, stop: threading.Event, until: float) -> bool:
        """Wait until n events may be sent. False (nothing taken) when that would be after `until`
        (time.monotonic()) or the router is stopping: the caller leaves them for its next round."""
        n = max(1, n)
        with self.lock:  # the thread pool shares one connection; the wait below is outside the lock
            try:
                conn = self.db.get()
                with conn.cursor() as cur:
                    wait = rate_limits.reserve(cur, self.key, n, self.rate, BURST_SECONDS)
                conn.commit()
            except UNAVAILABLE_ERRORS:
                self.db.drop()
                return False
        if time.monotonic() + wait > until:
            self._give_back(n)
            return False
        return not stop.wait(wait) if wait > 0 else not stop.is_set()

    def _give_back(self, n: int) -> None:
        with self.lock:
            try:
                conn = self.db.get()
                with conn.cursor() as cur:
                    rate_limits.give_back(cur, self.key, n, self.rate)
                conn.commit()
            except UNAVAILABLE_ERRORS:
                self.db.drop()

    def close(self) -> None:
        self.db.close()


def parse_limits(text: str) -> dict[str, float]:
    """SLUICE_ROUTER_RATE_LIMITS: JSON {"<destination id or type>": events per second}."""
    if not text:
        return {}
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("SLUICE_ROUTER_RATE_LIMITS: expected a JSON object of destination -> events per second")
    return {str(k): float(v) for k, v in value.items()}
