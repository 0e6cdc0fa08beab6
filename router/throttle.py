"""Per-destination rate limit: a token bucket shared by a destination's delivery threads."""

from __future__ import annotations

import json
import threading
import time


class TokenBucket:
    def __init__(self, rate: float, burst: float | None = None):
        self.rate = rate
        self.capacity = burst if burst is not None else max(rate, 1.0)
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self.lock = threading.Lock()

    def acquire(self, n: float, stop: threading.Event | None = None) -> None:
        """Block until n tokens are available (a batch larger than the burst waits for a full bucket)."""
        n = min(n, self.capacity)
        while True:
            with self.lock:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= n:
                    self.tokens -= n
                    return
                wait = (n - self.tokens) / self.rate
            if stop is not None and stop.wait(wait):
                return
            if stop is None:
                time.sleep(wait)


def parse_limits(text: str) -> dict[str, float]:
    """SLUICE_ROUTER_RATE_LIMITS: JSON {"<destination id or type>": events per second}."""
    if not text:
        return {}
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("SLUICE_ROUTER_RATE_LIMITS: expected a JSON object of destination -> events per second")
    return {str(k): float(v) for k, v in value.items()}
