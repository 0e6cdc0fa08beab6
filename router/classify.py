"""What a destination's answer means for the job: the small error vocabulary of the router."""

from __future__ import annotations

import enum


class Verdict(enum.Enum):
    DELIVERED = "delivered"   # 2xx
    RETRY = "retry"           # 408, 5xx, timeout, connection error: backoff, holds the user's later jobs
    THROTTLED = "throttled"   # 429: backoff honouring Retry-After, no attempt counted
    ABORT = "abort"           # any other answer: to failed_jobs at once, replayable


def classify(status: int | None) -> Verdict:
    """`status` is None when no HTTP answer came back (timeout, refused connection, reset)."""
    if status is None:
        return Verdict.RETRY
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if status == 429:
        return Verdict.THROTTLED
    if status == 408 or status >= 500:
        return Verdict.RETRY
    return Verdict.ABORT
