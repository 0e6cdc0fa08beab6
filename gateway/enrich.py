"""Per-event validation and enrichment: what the gateway checks and adds before an event is queued."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from functools import lru_cache

import orjson

EVENT_TYPES = ("track", "identify", "page", "screen", "group", "alias")
SHORT_TYPES = {"t": "track", "i": "identify", "p": "page", "s": "screen", "g": "group", "a": "alias"}


class InvalidEvent(ValueError):
    """One event that cannot be accepted; the message is the reason given to the client."""


_LONG_DIGITS = re.compile(rb"\d{19}")


class BadJSON(ValueError):
    """The request body is not JSON we can take."""


def parse_body(raw: bytes) -> tuple[object, bool]:
    """Parse a request body. Returns (value, exact): exact is False when the lenient parser was needed
    (NaN/Infinity, out-of-range numbers, lone surrogates); such events are then checked one by one."""
    if not _LONG_DIGITS.search(raw):  # orjson would turn integers past 64 bits into floats
        try:
            return orjson.loads(raw), True
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(raw), False
    except RecursionError:
        raise BadJSON("request body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadJSON(f"request body is not valid JSON: {exc}") from None


def dumps(event: dict, exact: bool = True) -> str:
    """Encode an event for the queue; raises InvalidEvent for what Postgres' jsonb cannot hold."""
    if exact:
        try:
            return orjson.dumps(event).decode()
        except TypeError:
            pass  # integers past 64 bits, or strings with lone surrogates: the careful path decides
    try:
        text = json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidEvent("event contains invalid Unicode (a lone surrogate)") from None
    except ValueError:
        raise InvalidEvent("event contains NaN or Infinity, which JSON cannot carry") from None
    except (TypeError, RecursionError) as exc:
        raise InvalidEvent(f"event cannot be encoded: {exc}") from None
    return text


@lru_cache(maxsize=4096)  # a batch's events mostly share their sentAt and timestamps
def iso_ms(dt: datetime) -> str:
    """RFC 3339 UTC with milliseconds, e.g. 2026-11-23T10:00:00.000Z."""
    return dt.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def parse_time(value) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt


def _id(value) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        value = str(value)
    if isinstance(value, str):
        value = value.replace("\x00", "").strip()
        return value or None
    return None


def _strip_nul(value):
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_strip_nul(k): _strip_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_nul(v) for v in value]
    return value


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
        raise InvalidEvent(f"type must be one of {', '.join(EVENT_TYPES)} (found {json.dumps(etype)[:40]})")
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
    if request_ip and not event.get("request_ip"):
        event["request_ip"] = request_ip

    # Clock-skew correction, as Segment does: timestamp = receivedAt - (sentAt - originalTimestamp).
    original = parse_time(event.get("originalTimestamp")) or parse_time(event.get("timestamp"))
    sent = parse_time(event.get("sentAt")) or (
        batch_sent_at if isinstance(batch_sent_at, datetime) else parse_time(batch_sent_at))
    if original is None:
        original = received_at
    if sent is None:
        sent = received_at
    event["originalTimestamp"] = iso_ms(original)
    event["sentAt"] = event["receivedAt"] if sent is received_at else iso_ms(sent)
    event["timestamp"] = event["originalTimestamp"] if sent is original else iso_ms(received_at - (sent - original))

    payload = dumps(event, exact)
    if "\\u0000" in payload:
        event = _strip_nul(event)  # Postgres cannot store NUL characters in jsonb
        payload = dumps(event, exact)
    if len(payload.encode("utf-8")) > max_event_size:
        raise InvalidEvent(f"event is {len(payload)} bytes, more than the {max_event_size} byte limit")
    return event, user_id or anonymous_id, payload


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
