"""Per-write-key rate limit (off by default): a sliding one-window counter per gateway process."""

from __future__ import annotations

import math
import threading
import time


class RateLimiter:
    def __init__(self, events: int, window: float, processes: int = 1):
        # Each gateway process enforces its share, so the total across processes is about `events`.
        self.limit = max(1, events // max(1, processes))
        self.window = window
        self._counts: dict[str, tuple[float, float, int]] = {}  # key -> (window start, previous count, count)
        self._lock = threading.Lock()

    def allow(self, key: str, n: int, now: float | None = None) -> tuple[bool, int]:
        """Count n events for key; returns (allowed, seconds to wait when not)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            start, prev, count = self._counts.get(key, (now, 0, 0))
            if now - start >= self.window:
                prev = count if now - start < 2 * self.window else 0
                start, count = start + self.window * math.floor((now - start) / self.window), 0
            weight = 1 - (now - start) / self.window
            if prev * weight + count + n > self.limit:
                self._counts[key] = (start, prev, count)
                return False, max(1, math.ceil(start + self.window - now))
            self._counts[key] = (start, prev, count + n)
            return True, 0
