"""Errors a destination transformer raises for an event it cannot turn into a delivery request.

The processor records such an event as aborted (into failed_jobs, replayable) with `reason`.
"""

from __future__ import annotations


class TransformError(Exception):
    """The destination cannot take this event (bad event or bad destination config)."""

    def __init__(self, reason: str, status: int = 400, kind: str = "instrumentation") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        # "instrumentation" (the event is wrong) or "configuration" (the destination config is wrong)
        self.kind = kind

    def __str__(self) -> str:
        return self.reason


class ConfigurationError(TransformError):
    """The destination config is missing or has a bad value; every event will fail the same way."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason, status=status, kind="configuration")


class UnknownDestinationError(TransformError, KeyError):
    """No transformer is registered for this destination type."""

    def __init__(self, dest_type: str) -> None:
        super().__init__(f"Unknown destination type: {dest_type!r}", kind="configuration")
        self.dest_type = dest_type

    def __str__(self) -> str:  # KeyError would quote the message
        return self.reason
