"""What a user transformation run hands back: one result per input event, the log lines, or a batch error."""

from __future__ import annotations

import json
from dataclasses import dataclass, field


class TransformationError(Exception):
    """The whole batch failed: compile error, bad exports, timeout or memory limit."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class EventResult:
    index: int  # index of the input event
    outputs: list[dict] = field(default_factory=list)  # [] when dropped
    error: str | None = None  # per-event JS error (message + trimmed stack)

    @property
    def dropped(self) -> bool:
        return self.error is None and not self.outputs


@dataclass
class BatchResult:
    results: list[EventResult]  # one per input, in input order
    logs: list[str] = field(default_factory=list)
    batch_error: str | None = None  # set when the whole batch failed; every result then carries it

    @classmethod
    def failed(cls, count: int, reason: str, logs: list[str] | None = None) -> BatchResult:
        return cls(
            results=[EventResult(index=i, outputs=[], error=reason) for i in range(count)],
            logs=logs or [],
            batch_error=reason,
        )


def format_preview(result: BatchResult, events: list[dict]) -> list[str]:
    """One JSON line per input event, for `sluice transform`."""
    lines = []
    for item in result.results:
        line: dict = {"index": item.index}
        event = events[item.index] if item.index < len(events) else None
        if isinstance(event, dict) and "messageId" in event:
            line["messageId"] = event["messageId"]
        if item.error is not None:
            line["error"] = item.error
            if item.outputs:
                line["outputs"] = item.outputs
        elif not item.outputs:
            line["dropped"] = True
        else:
            line["outputs"] = item.outputs
        lines.append(json.dumps(line, ensure_ascii=False, sort_keys=False))
    return lines
