"""Rate limits that hold across every process and machine sharing the database: a GCRA row per key.

`admit` answers yes or no at once (the gateway's per-write-key limit: 429 with Retry-After);
`reserve` always takes the budget and says how long to wait (the router's per-destination limit).
One statement each, on the caller's connection; the caller commits."""

from __future__ import annotations

from jobsdb.queries import query


def admit(cur, key: str, n: int, limit: int, window: float) -> tuple[bool, float]:
    """Count n events against `limit` per `window` seconds (a sliding window). Returns (allowed, retry_after_s)."""
    cost = n * window / limit
    if cost > window:  # more events than the whole window allows: never admissible
        return False, window
    args = {"key": key, "cost": cost, "window": window}
    cur.execute(query("rate_admit"), args)
    if cur.fetchone() is not None:
        return True, 0.0
    cur.execute(query("rate_retry_after"), args)
    row = cur.fetchone()
    return False, float(row[0]) if row else window


def reserve(cur, key: str, n: float, rate: float, burst_seconds: float = 1.0) -> float:
    """Reserve n events at `rate` per second; returns the seconds to wait before sending them."""
    cur.execute(query("rate_reserve"), {"key": key, "cost": n / rate, "burst": burst_seconds})
    return float(cur.fetchone()[0])


def give_back(cur, key: str, n: float, rate: float) -> None:
    cur.execute(query("rate_give_back"), {"key": key, "cost": n / rate})
