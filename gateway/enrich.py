"""Per-event validation and enrichment: what the gateway checks and adds before an event is queued."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache

import orjson

from gateway.client_ip import valid_ip
from jobsdb.storable import strip_nul

EVENT_TYPES = ("track", "identify", "page", "screen", "group", "alias")
SHORT_TYPES = {"t": "track", "i": "identify", "p": "page", "s": "screen", "g": "group", "a": "alias"}

# The deepest event accepted (the event object is level 1, `properties` level 2). orjson, which every
# stage uses, refuses to encode past 254 levels; half of that leaves room for the stages that wrap an
# event (the processor's batches, the router's requests). Deeper events are that event's own 400.
MAX_EVENT_DEPTH = 128
# A body nested deeper than orjson can parse (1024) has its over-deep values replaced by this marker
# before parsing, so the shallow events beside them are still accepted. Postgres cannot store NUL, so no
# stored event can contain it; an event that holds it is refused as too deep.
TOO_DEEP = "\x00sluice: nested too deeply\x00"
_TOO_DEEP_JSON = json.dumps(TOO_DEEP)[1:-1]  # how it looks inside encoded JSON text
_CUT_DEPTH = MAX_EVENT_DEPTH + 2  # {"batch": [event]}: an event's level 1 is the body's level 3
MAX_CUT_BRACKETS = 100_000  # cutting is a Python-speed scan: past this, a too-deep body is refused whole
_STRUCTURE = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[{](?:\s*[\[{])*|[\]}](?:\s*[\]}])*', re.S)


class InvalidEvent(ValueError):
    """One event that cannot be accepted; the message is the reason given to the client."""


_LONG_DIGITS = re.compile(rb"\d{19}")


class BadJSON(ValueError):
    """The request body is not JSON we can take."""


def parse_body(raw: bytes, cut_too_deep: bool | Callable[[], bool] = True) -> tuple[object, bool]:
    """Parse a request body. Returns (value, exact): exact is False when the lenient parser was needed
    (NaN/Infinity, out-of-range numbers, lone surrogates, nesting too deep); such events are then
    checked one by one. A body nested deeper than the parsers go has its deep parts cut out (see
    cut_deep) when `cut_too_deep` (or what it returns, asked only then), else it is refused whole."""
    if not _LONG_DIGITS.search(raw):  # orjson would turn integers past 64 bits into floats
        try:
            return orjson.loads(raw), True
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(raw), False
    except RecursionError:
        allowed = cut_too_deep() if callable(cut_too_deep) else cut_too_deep
        if not allowed or raw.count(b"[") + raw.count(b"{") > MAX_CUT_BRACKETS:
            raise BadJSON("request body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadJSON(f"request body is not valid JSON: {_one_line(exc)}") from None
    try:
        return json.loads(cut_deep(raw, _CUT_DEPTH)), False
    except RecursionError:
        raise BadJSON("request body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadJSON(f"request body is not valid JSON: {_one_line(exc)}") from None


def cut_deep(raw: bytes, max_depth: int) -> bytes:
    """Replace every array or object nested deeper than `max_depth` by the TOO_DEEP marker string.
    A scan of the body's brackets (strings skipped, runs of brackets counted at once); only run when a
    parser has refused the depth."""
    out: list[bytes] = []
    depth, last, cut_from = 0, 0, -1
    marker = json.dumps(TOO_DEEP).encode()
    for m in _STRUCTURE.finditer(raw):
        run = m.group()
        if run[0] == 0x22:  # a string: brackets inside it do not count
            continue
        n = run.count(b"[") + run.count(b"{")
        if n:  # a run of openers
            if depth <= max_depth < depth + n:
                cut_from = m.start() + _nth_bracket(run, max_depth + 1 - depth)
            depth += n
            continue
        n = run.count(b"]") + run.count(b"}")
        if depth > max_depth >= depth - n and cut_from >= 0:
            end = m.start() + _nth_bracket(run, n - (depth - max_depth) + 1, from_end=True) + 1
            out += (raw[last:cut_from], marker)
            last, cut_from = end, -1
        depth -= n
    if cut_from >= 0:  # unbalanced: what follows is dropped, and the body will not parse
        out += (raw[last:cut_from], marker)
    else:
        out.append(raw[last:])
    return b"".join(out)


def _nth_bracket(run: bytes, n: int, from_end: bool = False) -> int:
    """Offset in `run` (brackets and whitespace) of its n-th bracket, counting from 1 (from the end if
    asked). n is at most the cut depth, so this takes n C-speed searches, whatever the run's length."""
    pos = len(run) if from_end else -1
    for _ in range(n):
        if from_end:
            pos = max(run.rfind(b"]", 0, pos), run.rfind(b"}", 0, pos))
        else:
            found = [i for i in (run.find(b"[", pos + 1), run.find(b"{", pos + 1)) if i >= 0]
            pos = min(found)
    return pos


def depth_exceeds(value, limit: int) -> bool:
    """True when arrays and objects nest more than `limit` levels deep (`value` itself is level 1).
    Iterative: it must work on anything a client can send."""
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if level > limit:
            return True
        stack.extend((c, level + 1) for c in children if isinstance(c, dict | list))
    return False


def brief(value, limit: int = 40) -> str:
    """A short, safe rendering of a client value for an error message (never recurses)."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return json.dumps(value[:limit])
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int):
        return str(value) if value.bit_length() < 128 else "a large integer"
    if isinstance(value, float):
        return repr(value)
    return type(value).__name__


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def dumps(event: dict, exact: bool = True) -> str:
    """Encode an event for the queue; raises InvalidEvent for what Postgres' jsonb cannot hold and for
    events nested deeper than MAX_EVENT_DEPTH."""
    if exact:
        try:
            text = orjson.dumps(event).decode()
        except TypeError:
            pass  # integers past 64 bits, lone surrogates, or too deep: the careful path decides
        else:
            # Nesting N levels takes at least N brackets, so only a bracket-rich event needs the exact count.
            if text.count("{") + text.count("[") > MAX_EVENT_DEPTH and depth_exceeds(event, MAX_EVENT_DEPTH):
                raise InvalidEvent(f"event is nested more than {MAX_EVENT_DEPTH} levels deep")
            return text
    if depth_exceeds(event, MAX_EVENT_DEPTH):
        raise InvalidEvent(f"event is nested more than {MAX_EVENT_DEPTH} levels deep")
    try:
        text = json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidEvent("event contains invalid Unicode (a lone surrogate)") from None
    except ValueError:
        raise InvalidEvent("event contains NaN or Infinity, which JSON cannot carry") from None
    except (TypeError, RecursionError) as exc:
        raise InvalidEvent(f"event cannot be encoded: {_one_line(exc)}") from None
    if _TOO_DEEP_JSON in text:  # a value the body parser cut out (see cut_deep)
        raise InvalidEvent(f"event is nested more than {MAX_EVENT_DEPTH} levels deep")
    return text


@lru_cache(maxsize=4096)  # a batch's events mostly share their sentAt and timestamps
def iso_ms(dt: datetime) -> str:
    """RFC 3339 UTC with milliseconds, e.g. 2026-11-23T10:00:00.000Z."""
    return dt.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def parse_time(value) -> datetime | None:
    """A client's ISO-8601 time as an aware UTC datetime; None when absent, unparseable or out of range
    (a year-9999 time with a negative offset is past datetime's range once in UTC)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value.strip())
        if dt.tzinfo is None:
            return dt.replace(tzinfo=UTC)
        return dt if dt.tzinfo is UTC else dt.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _id(value) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        value = str(value)
    if isinstance(value, str):
        value = value.replace("\x00", "").strip()
        return value or None
    return None


def enrich(
    event,
    *,
    event_type: str | None,
    received_at: datetime,
    request_ip: str | None,
    batch_sent_at=None,
    batch_context=None,
    batch_integrations=None,
    max_event_size: int = 32768,
    exact: bool = True,
    received_iso: str | None = None,
) -> tuple[dict, str, str]:
    """Validate one event and add the gateway's fields. Returns (event, user_key, payload_json)."""
    if not isinstance(event, dict):
        raise InvalidEvent("event is not a JSON object")
    event = dict(event)
    if event_type is not None:
        event["type"] = event_type
    etype = event.get("type")
    if not isinstance(etype, str) or etype.strip().lower() not in EVENT_TYPES:
        raise InvalidEvent(f"type must be one of {', '.join(EVENT_TYPES)} (found {brief(etype)})")
    etype = event["type"] = etype.strip().lower()
    event.pop("writeKey", None)

    user_id, anonymous_id = _id(event.get("userId")), _id(event.get("anonymousId"))
    if user_id is None and anonymous_id is None:
        raise InvalidEvent("event has neither userId nor anonymousId")
    if user_id is not None:
        event["userId"] = user_id
    if anonymous_id is not None:
        event["anonymousId"] = anonymous_id
    if etype == "track":
        name = event.get("event")
        if not isinstance(name, str) or not name.strip():
            raise InvalidEvent("track event has no event name (field 'event')")
    if etype == "group" and _id(event.get("groupId")) is None:
        raise InvalidEvent("group event has no groupId")
    if etype == "alias" and _id(event.get("previousId")) is None:
        raise InvalidEvent("alias event has no previousId")
    for key in ("properties", "traits", "context", "integrations"):
        if key in event and event[key] is not None and not isinstance(event[key], dict):
            raise InvalidEvent(f"{key} must be a JSON object")

    if batch_context and isinstance(batch_context, dict):
        event["context"] = {**batch_context, **(event.get("context") or {})}
    if batch_integrations and isinstance(batch_integrations, dict):
        event["integrations"] = {**batch_integrations, **(event.get("integrations") or {})}

    message_id = _id(event.get("messageId"))
    event["messageId"] = message_id or str(uuid.uuid4())

    event["receivedAt"] = received_iso or iso_ms(received_at)
    # A request_ip the client sent is kept (as rudder-server does) only when it is an IP address.
    own_ip = valid_ip(event.get("request_ip")) or request_ip
    if own_ip:
        event["request_ip"] = own_ip
    else:
        event.pop("request_ip", None)

    _set_times(event, received_at, event["receivedAt"], batch_sent_at)

    payload = dumps(event, exact)
    if "\\u0000" in payload:
        event = strip_nul(event)  # Postgres cannot store NUL characters in jsonb
        payload = dumps(event, exact)
    if len(payload.encode("utf-8")) > max_event_size:
        raise InvalidEvent(f"event is {len(payload)} bytes, more than the {max_event_size} byte limit")
    return event, user_id or anonymous_id, payload


def _set_times(event: dict, received_at: datetime, received_iso: str, batch_sent_at) -> None:
    """originalTimestamp, sentAt and timestamp. Clock-skew correction, as Segment does:
    timestamp = receivedAt - (sentAt - originalTimestamp). A client time that is unparseable or out of
    range is kept as the client sent it, and timestamp falls back to receivedAt."""
    original = bad_original = None
    for key in ("originalTimestamp", "timestamp"):
        value = event.get(key)
        if value is None or value == "":
            continue
        original = parse_time(value)
        if original is not None:
            bad_original = None
            break
        if bad_original is None:
            bad_original = value
    sent_value = event.get("sentAt")
    if sent_value is None or sent_value == "":
        sent_value = batch_sent_at
    bad_sent = None
    if isinstance(sent_value, datetime) or sent_value is None or sent_value == "":
        sent = sent_value or None
    else:
        sent = parse_time(sent_value)
        if sent is None:
            bad_sent = sent_value
    if bad_original is not None or bad_sent is not None:
        event["originalTimestamp"] = bad_original if bad_original is not None else \
            iso_ms(original) if original else received_iso
        event["sentAt"] = bad_sent if bad_sent is not None else iso_ms(sent) if sent else received_iso
        event["timestamp"] = received_iso
        return
    if original is None:
        original = received_at
    if sent is None:
        sent = received_at
    event["originalTimestamp"] = iso_ms(original)
    event["sentAt"] = received_iso if sent is received_at else iso_ms(sent)
    if sent is original:
        event["timestamp"] = event["originalTimestamp"]
        return
    try:
        event["timestamp"] = iso_ms(received_at - (sent - original))
    except OverflowError:  # the correction lands outside datetime's range (years 1 to 9999)
        event["timestamp"] = received_iso


def pixel_event(event_type: str, args) -> dict:
    """Build an event from a pixel's query string: dotted keys nest (properties.plan=pro)."""
    event: dict = {"channel": "web", "integrations": {"All": True}}
    for key, value in args.items(multi=False):
        if key == "writeKey":
            continue
        target = event
        parts = key.split(".")
        for part in parts[:-1]:
            nxt = target.get(part)
            if not isinstance(nxt, dict):
                nxt = target[part] = {}
            target = nxt
        target[parts[-1]] = value
    if isinstance(event.get("anonymousId"), str):
        event["anonymousId"] = event["anonymousId"].strip('"')
    if event_type == "page" and not event.get("name"):
        event["name"] = "Unknown Page"
    return event
