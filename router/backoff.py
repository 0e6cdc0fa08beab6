"""Retry timing: exponential backoff with jitter, Retry-After honoured, and the retry budget."""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from jobsdb.db import CONFLICT_ERRORS, DATA_ERRORS, UNAVAILABLE_ERRORS


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    retry_window: float = 10800.0   # seconds since the first attempt
    min_backoff: float = 10.0
    max_backoff: float = 300.0
    max_retry_after: float = 3600.0  # a Retry-After longer than this is capped

    def delay(self, attempts: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait before the next try, after `attempts` counted failures."""
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, self.max_retry_after)
        base = min(self.max_backoff, self.min_backoff * 2 ** max(attempts - 1, 0))
        rng = rng or random
        return base / 2 + rng.random() * base / 2  # "equal jitter": never less than half the step

    def exhausted(self, attempts: int, first_attempt_at: datetime | None, now: datetime, counted: bool) -> bool:
        """A job is given up when both the attempts and the time window are used up (as RudderStack does);
        throttled (uncounted) tries are bounded by the time window alone."""
        elapsed = (now - first_attempt_at) if first_attempt_at else timedelta(0)
        window_over = elapsed.total_seconds() >= self.retry_window
        return window_over and (attempts >= self.max_attempts or not counted)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - now).total_seconds())


def policy_for(settings, dest_id: str, dest_type: str) -> RetryPolicy:
    """A destination's retry budget: the router settings, with SLUICE_ROUTER_RETRY_OVERRIDES (JSON keyed by
    destination id or type) on top."""
    base = {"max_attempts": settings.router_max_attempts, "retry_window": settings.router_retry_window_seconds,
            "min_backoff": settings.router_min_backoff, "max_backoff": settings.router_max_backoff}
    if settings.router_retry_overrides:
        table = json.loads(settings.router_retry_overrides)
        if not isinstance(table, dict):
            raise ValueError("SLUICE_ROUTER_RETRY_OVERRIDES: expected a JSON object keyed by destination id or type")
        base.update(table.get(dest_id, table.get(dest_type)) or {})
    return RetryPolicy(**{k: float(v) if k != "max_attempts" else int(v) for k, v in base.items()})


def recover(exc: BaseException, db, stop, log: logging.Logger, dest_id: str, what: str) -> None:
    """After a worker's round failed (call from its `except`): log by kind of error, drop the connection,
    pause. A lost race is retried at once, an outage waits for the connection's backoff, anything else
    waits a second."""
    if isinstance(exc, CONFLICT_ERRORS):
        log.warning("a transaction conflicted with another process; going on",
                    extra={"destination_id": dest_id, "error": str(exc).strip().splitlines()[0][:200]})
        db.drop(failed=False)
    elif isinstance(exc, UNAVAILABLE_ERRORS) and not isinstance(exc, DATA_ERRORS):
        log.warning("database unavailable", extra={"destination_id": dest_id, "error": str(exc)[:200]})
        db.drop()
    else:
        log.exception(f"{what} failed; trying again", extra={"destination_id": dest_id})
        db.drop(failed=False)
        stop.wait(1.0)
