"""The destination registry: turns a Segment-spec event into delivery requests for one destination
type, and merges delivery requests into batches the destination's API accepts.

A destination is a module with `transform(event, config, now) -> list[dict]`; one that can batch
also has `merge_batch(requests) -> dict`, `batch_weight(request) -> (events, bytes)` and
`BATCH_LIMITS = {"events": n, "bytes": n}`. Its requests that may merge carry the same `batch_key`.
"""

from __future__ import annotations

import datetime
from types import ModuleType

from transformers.amplitude import transform as amplitude
from transformers.errors import TransformError, UnknownDestinationError
from transformers.ga import transform as ga
from transformers.ga4 import transform as ga4
from transformers.webhook import transform as webhook

DESTINATION_TYPES: dict[str, ModuleType] = {
    "GA4": ga4,
    "GA": ga,
    "AM": amplitude,
    "WEBHOOK": webhook,
}


def _destination(dest_type: str) -> ModuleType:
    try:
        return DESTINATION_TYPES[dest_type]
    except (KeyError, TypeError):
        raise UnknownDestinationError(dest_type) from None


def transform(dest_type: str, event: dict, destination_config: dict, now: datetime.datetime) -> list[dict]:
    """Delivery requests for one event; raises TransformError when the destination cannot take it."""
    destination = _destination(dest_type)
    if not isinstance(event, dict):
        raise TransformError("Event must be a JSON object")
    if now.tzinfo is None:
        now = now.replace(tzinfo=datetime.UTC)
    return destination.transform(event, destination_config or {}, now)


def supports_batching(dest_type: str) -> bool:
    return hasattr(_destination(dest_type), "merge_batch")


def batch_requests(
    dest_type: str, requests: list[dict], destination_config: dict
) -> list[tuple[dict, list[int]]]:
    """Merge requests into as few API calls as the destination allows.

    Returns (request, input indexes) pairs in the order of their first input. Only requests with
    the same `batch_key` merge, within the destination's limits. A request without a key is a
    barrier: nothing before it merges with anything after it, so per-user order is kept.
    """
    destination = _destination(dest_type)
    if not hasattr(destination, "merge_batch"):
        return [(request, [i]) for i, request in enumerate(requests)]
    limits = destination.BATCH_LIMITS
    groups: list[list[int]] = []
    open_groups: dict[str, tuple[list[int], list[int]]] = {}  # key -> (indexes, [events, bytes])
    for i, request in enumerate(requests):
        key = request.get("batch_key")
        if key is None:
            open_groups.clear()
            groups.append([i])
            continue
        events, size = destination.batch_weight(request)
        current = open_groups.get(key)
        if current is not None:
            indexes, totals = current
            if totals[0] + events <= limits["events"] and totals[1] + size <= limits["bytes"]:
                indexes.append(i)
                totals[0] += events
                totals[1] += size
                continue
        indexes = [i]
        open_groups[key] = (indexes, [events, size])
        groups.append(indexes)
    out = []
    for indexes in groups:
        if len(indexes) == 1:
            out.append((requests[indexes[0]], indexes))
        else:
            out.append((destination.merge_batch([requests[i] for i in indexes]), indexes))
    return out
