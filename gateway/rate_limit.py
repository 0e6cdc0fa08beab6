"""Per-write-key rate limit (off by default), shared by every gateway worker and process.

One GCRA row per write key in Postgres (jobsdb.rate_limits, key `gw:<write key>`), checked on the
worker's side connection. If Postgres cannot answer, the request is let through: the commit that
follows decides (503 while the database is down).
"""

from __future__ import annotations

import logging
import math
import time

import psycopg2

from jobsdb import rate_limits

log = logging.getLogger("sluice.gateway")


class SharedRateLimiter:
    def __init__(self, side, events: int, window: float):
        self.side = side  # a gateway.side_connection.SideConnection
        self.limit = max(1, events)
        self.window = window
        self._warned_at = 0.0

    def allow(self, write_key: str, n: int) -> tuple[bool, int]:
        """Count n events for this write key; returns (allowed, seconds to wait when not)."""
        try:
            allowed, retry_after = self.side.run(rate_limits.admit, f"gw:{write_key}", n, self.limit, self.window)
        except psycopg2.Error as exc:  # unreachable, or the statement failed: let the commit decide
            now = time.monotonic()
            if now - self._warned_at > 10:
                self._warned_at = now
                log.warning("rate limit not checked: database did not answer", extra={"error": str(exc).strip()[:200]})
            return True, 0
        return allowed, 0 if allowed else max(1, math.ceil(retry_after))

    def close(self) -> None:
        self.side.close()
