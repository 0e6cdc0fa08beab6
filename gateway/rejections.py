"""Records of refused requests and events (table gw_rejected), made safe to store and bounded.

Every field is sanitised so Postgres can always take it (no NUL, no lone surrogates, capped sizes, and
a rendering of any parsed value that never recurses), and each source may write at most
`gw_rejected_per_minute` records per gateway process: past the cap records are only counted
(`sluice_gateway_rejections_unrecorded_total`), so a flood of bad requests cannot fill the disk.
Requests without a valid write key share one cap as well, and keep at most
`gw_rejected_unauthenticated_bytes` of their body.
"""

from __future__ import annotations

import json
import re
import threading
import time
from functools import cache

import orjson

from jobsdb.storable import strip_nul

EVENT_BYTES = 8192  # a rejected event of an authenticated request is kept as JSON up to this size
EXCERPT_BYTES = 2048  # else (and for unparseable bodies) a text excerpt of this size
WINDOW_SECONDS = 60.0
_SURROGATE = re.compile("[\ud800-\udfff]")
NO_EVENT = object()  # record(event=...) default: the record is about the request, not one event
_LIMITS = {"write_key": 256, "request_ip": 64, "endpoint": 256, "reason": 1000}


def clean_text(value, limit: int) -> str | None:
    """Text Postgres accepts: NUL removed, lone surrogates replaced, at most `limit` UTF-8 bytes."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    text = text[:limit].replace("\x00", "")
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        data = _SURROGATE.sub("\ufffd", text).encode("utf-8")
    return data[:limit].decode("utf-8", "ignore")


def excerpt(value, limit: int = EXCERPT_BYTES) -> str:
    """A JSON-like text of any parsed value, at most `limit` characters, built without recursion (for
    what cannot be stored as JSON: nested too deep, lone surrogates, huge integers). ASCII only."""
    out: list[str] = []
    size = 0
    stack: list = [value]
    while stack and size < limit:
        top = stack.pop()
        if isinstance(top, _Open):
            try:
                item = next(top.items)
            except StopIteration:
                piece = top.closer
            else:
                stack.append(top)
                piece = "," if top.started else ""
                top.started = True
                if top.closer == "}":
                    key, item = item
                    piece += _scalar(str(key), limit) + ":"
                stack.append(item)
                if not piece:
                    continue
        elif isinstance(top, dict):
            stack.append(_Open(iter(top.items()), "}"))
            piece = "{"
        elif isinstance(top, list | tuple):
            stack.append(_Open(iter(top), "]"))
            piece = "["
        else:
            piece = _scalar(top, limit)
        out.append(piece)
        size += len(piece)
    return "".join(out)[:limit]


class _Open:
    __slots__ = ("items", "closer", "started")

    def __init__(self, items, closer: str):
        self.items, self.closer, self.started = items, closer, False


def _scalar(value, limit: int) -> str:
    if isinstance(value, str):
        return json.dumps(value[:limit])  # ASCII: NUL and surrogates become \u escapes
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int):
        return str(value) if value.bit_length() < 1000 else f"<integer of {value.bit_length()} bits>"
    if isinstance(value, float):
        return repr(value)
    return f"<{type(value).__name__}>"


def storable_json(value, limit: int = EVENT_BYTES) -> str | None:
    """`value` as JSON text jsonb accepts, or None when it cannot be (or is longer than `limit`)."""
    try:
        text = orjson.dumps(value).decode()  # refuses lone surrogates, > 254 levels, > 64-bit integers
        if "\\u0000" in text:
            text = orjson.dumps(strip_nul(value)).decode()
    except (TypeError, RecursionError):
        return None
    return text if len(text) <= limit else None


class RejectionLog:
    """Builds gw_rejected rows (tuples for jobsdb.queue.insert_rejected) within the per-minute caps."""

    def __init__(self, per_minute: int, unauthenticated_bytes: int, clock=time.monotonic):
        self.per_minute = max(0, per_minute)
        self.unauthenticated_bytes = max(0, unauthenticated_bytes)
        self.clock = clock
        self._lock = threading.Lock()
        self._window = clock()
        self._counts: dict[str, int] = {}
        self._unauthenticated = 0

    def admit(self, source_id: str | None, write_key: str | None, request_ip: str | None) -> bool:
        """One more record for this source (or, without a valid write key, this client): within the cap?"""
        key = f"src:{source_id}" if source_id else f"ip:{request_ip}" if request_ip else f"key:{write_key}"
        with self._lock:
            now = self.clock()
            if now - self._window >= WINDOW_SECONDS:
                self._window, self._counts, self._unauthenticated = now, {}, 0
            if not source_id and self._unauthenticated >= self.per_minute:
                return False  # every unauthenticated client together: a spoofed address gains nothing
            n = self._counts.get(key, 0)
            if n >= self.per_minute:
                return False
            self._counts[key] = n + 1
            if not source_id:
                self._unauthenticated += 1
            return True

    def record(self, *, source_id: str | None, write_key: str | None, request_ip: str | None, endpoint: str | None,
               status: int, reason: str, event=NO_EVENT, body: bytes | None = None) -> tuple | None:
        """A storable row, or None when over the cap (then counted in the metric)."""
        if not self.admit(source_id, write_key, request_ip):
            count_unrecorded("over_cap")
            return None
        event_json, raw = None, None
        if source_id:
            if event is not NO_EVENT:
                event_json = storable_json(event)
                if event_json is None:
                    raw = excerpt(event)
            elif body is not None:
                raw = clean_text(body[:EXCERPT_BYTES].decode("utf-8", "replace"), EXCERPT_BYTES)
        else:
            # No valid write key: anyone can send these, so keep only a short excerpt of what was sent.
            limit = self.unauthenticated_bytes
            if body is not None:
                raw = clean_text(body[:limit].decode("utf-8", "replace"), limit)
            elif event is not NO_EVENT:
                raw = clean_text(excerpt(event, limit), limit)
            raw = raw or None
        return (clean_text(source_id, 256), clean_text(write_key, _LIMITS["write_key"]),
                clean_text(request_ip, _LIMITS["request_ip"]), clean_text(endpoint, _LIMITS["endpoint"]),
                int(status), clean_text(reason, _LIMITS["reason"]) or "rejected", event_json, raw)


def degrade(row: tuple) -> tuple:
    """A last-resort form of a row Postgres refused: no event JSON, ASCII text only."""
    ascii_only = [None if v is None else v.encode("ascii", "replace").decode() if isinstance(v, str) else v
                  for v in row]
    ascii_only[6] = None
    return tuple(ascii_only)


@cache
def _unrecorded():
    from prometheus_client import Counter

    return Counter("sluice_gateway_rejections_unrecorded", "Rejection records not stored in gw_rejected",
                   ["reason"])


def count_unrecorded(reason: str, n: int = 1) -> None:
    """reason: over_cap (the per-minute cap), store_failed (Postgres refused them), buffer_full."""
    if n:
        _unrecorded().labels(reason).inc(n)
