"""One event -> its warehouse rows in RudderStack's layout (tracks + the event's table, identifies + users,
pages, screens, groups, aliases): flattening, column names and value types. Pure: the batch router calls
it and loads the rows."""

from __future__ import annotations

import datetime
import functools
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from transformers.errors import TransformError
from transformers.warehouse.column_types import (
    DATETIME,
    JSON,
    STRING,
    classify,
    format_timestamp,
    json_text,
    parse_timestamp,
    strip_nul,
)
from transformers.warehouse.names import column_namer, event_value, table_name

MAX_COLUMNS = 1600  # Postgres's limit on the columns of a table

EVENT_TYPES = ("track", "identify", "page", "screen", "group", "alias")
TABLES = {"page": "pages", "screen": "screens", "group": "groups", "alias": "aliases"}
USERS_TABLE = "users"  # merged per column (latest non-null value by received_at), not per row

# Columns the layout fills itself: a key of the event that would land on one of them is dropped.
COMMON_COLUMNS = frozenset({
    "id", "anonymous_id", "user_id", "sent_at", "timestamp", "received_at", "original_timestamp", "channel",
    "context_ip", "context_request_ip", "context_source_id", "context_source_type", "context_destination_id",
    "context_destination_type", "uuid_ts",
})
_RESERVED = {
    "track": COMMON_COLUMNS | {"event", "event_text"},
    # a trait that would be user_id is kept, as _user_id
    "identify": COMMON_COLUMNS - {"user_id"},
    "page": COMMON_COLUMNS | {"name"},
    "screen": COMMON_COLUMNS | {"name"},
    "group": COMMON_COLUMNS | {"group_id"},
    "alias": COMMON_COLUMNS | {"previous_id"},
}

# Namespace for the deterministic messageId of an event that has none (so a reload gives the same rows).
_AUTO_ID_NAMESPACE = uuid.UUID("5a6c1b2e-9f0d-4c3b-8e7a-1d2f3e4a5b6c")

Columns = dict[str, tuple[str, Any]]


class Discarded(TransformError):
    """The event cannot be loaded at all (not an object, unknown type, too many columns): dead-letter it
    with `reason`. Its other events load."""


@dataclass(frozen=True, slots=True)
class Row:
    """One warehouse row. `columns` is {column: (warehouse type, value)}; values are None, str, int,
    float or bool, datetimes as ISO-8601 UTC strings with milliseconds ("2020-08-24T20:19:05.560Z"), JSON
    as text (JsonText, a str). `id` is the merge key (messageId; the user id in `users`), `received_at`
    orders rows with the same id."""

    table: str
    id: str
    received_at: datetime.datetime
    columns: Columns

    def values(self) -> dict[str, Any]:
        return {column: value for column, (_kind, value) in self.columns.items()}

    def types(self) -> dict[str, str]:
        return {column: kind for column, (kind, _value) in self.columns.items()}


# ---------------------------------------------------------------- settings

def _flag(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


_PATH_SEPARATORS = re.compile(r"[,\n]")


@functools.lru_cache(maxsize=256)
def _parse_json_paths(paths: tuple[str, ...]) -> frozenset[tuple[str, ...]]:
    """jsonPaths as key paths from the event's root: "track.properties.a.b" -> ("track", "properties",
    "a", "b"); a path that does not start with an event type is, as in RudderStack, under a track's
    properties: "a.b" -> track properties.a.b (and userProperties.a.b)."""
    out: set[tuple[str, ...]] = set()
    for path in paths:
        parts = tuple(p.strip() for p in path.strip().split("."))
        if not parts or not all(parts):
            continue
        if parts[0] in EVENT_TYPES:
            if len(parts) >= 3:
                out.add(parts)
        else:
            out.add(("track", "properties", *parts))
            out.add(("track", "userProperties", *parts))
    return frozenset(out)


def _path_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return _PATH_SEPARATORS.split(value)
    if isinstance(value, list):
        return [p for p in value if isinstance(p, str)]
    return []


def _options(event: dict, destination_type: str) -> dict:
    integrations = event.get("integrations")
    if not isinstance(integrations, dict):
        return {}
    entry = integrations.get(destination_type) or integrations.get(destination_type.upper())
    options = entry.get("options") if isinstance(entry, dict) else None
    return options if isinstance(options, dict) else {}


def _json_paths(event: dict, config: Mapping, options: dict) -> frozenset[tuple[str, ...]]:
    paths = _path_list(config.get("jsonPaths")) + _path_list(options.get("jsonPaths"))
    integrations = event.get("integrations")
    if isinstance(integrations, dict):  # jsonPaths for every warehouse
        shared = integrations.get("DATA_WAREHOUSE")
        if isinstance(shared, dict) and isinstance(shared.get("options"), dict):
            paths += _path_list(shared["options"].get("jsonPaths"))
    return _parse_json_paths(tuple(paths)) if paths else frozenset()


# ---------------------------------------------------------------- flattening

def _too_many(table: str, count: int) -> Discarded:
    return Discarded(f"event needs more than {MAX_COLUMNS} columns in table {table!r} "
                     f"({count} so far): Postgres tables cannot have more")


class _Flattener:
    """Writes an event's objects into columns: nested keys joined with `_`, arrays as JSON text,
    `jsonPaths` sub-trees as one json column, keys that would land on a reserved column dropped."""

    __slots__ = ("name", "json_paths", "reserved", "table")

    def __init__(self, name, json_paths: frozenset, reserved: frozenset, table: str) -> None:
        self.name = name
        self.json_paths = json_paths
        self.reserved = reserved
        self.table = table

    def add(self, out: Columns, obj: Any, prefix: str, path: tuple[str, ...]) -> None:
        if not isinstance(obj, dict) or not obj:
            return
        name, reserved, json_paths = self.name, self.reserved, self.json_paths
        # An explicit stack of iterators: document order (later duplicates win, as in JavaScript) and no
        # recursion limit on deeply nested input.
        stack = [(iter(obj.items()), prefix, path)]
        while stack:
            items, prefix, path = stack[-1]
            for key, value in items:
                if not isinstance(key, str):
                    key = str(key)
                raw = prefix + key
                sub = path + (key,) if json_paths else path
                if json_paths and sub in json_paths:
                    if value is None or value == "" or value == []:
                        continue
                    typed = (JSON, _json_text(value))
                elif isinstance(value, dict):
                    stack.append((iter(value.items()), raw + "_", sub))
                    break
                else:
                    typed = _classify(value)
                    if typed is None:
                        continue
                column = name(raw)
                if column in reserved:
                    continue
                out[column] = typed
                if len(out) > MAX_COLUMNS:
                    raise _too_many(self.table, len(out))
            else:
                stack.pop()


def _json_text(value: Any):
    try:
        return json_text(value)
    except (RecursionError, ValueError) as exc:
        raise Discarded(f"a jsonPaths value cannot be written as JSON: {exc}") from None


def _classify(value: Any):
    try:
        return classify(value)
    except (RecursionError, ValueError) as exc:  # an array nested too deeply to write as JSON
        raise Discarded(f"an array cannot be written as JSON: {exc}") from None


# ---------------------------------------------------------------- common columns

def _text(value: Any) -> str | None:
    """An identifier-like value (ids, channel, ip, event name) as text; None for blanks and objects."""
    if value is None or isinstance(value, (dict, list)):
        return None
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = strip_nul(value if isinstance(value, str) else str(value))
    return text or None


def _put_text(out: Columns, column: str, value: Any) -> None:
    text = _text(value)
    if text is not None:
        out[column] = (STRING, text)


def _put_time(out: Columns, column: str, value: Any) -> None:
    """sent_at, timestamp, original_timestamp: datetime when the value is one, else its text (the
    loader then meets it as a conflict if the column is a timestamptz)."""
    if isinstance(value, str):
        typed = classify(value)
        if typed is not None:
            out[column] = typed
    elif value is not None and not isinstance(value, (dict, list)):
        _put_text(out, column, value)


def _first_text(*values: Any) -> str | None:
    for value in values:
        text = _text(value)
        if text is not None:
            return text
    return None


def _message_id(event: dict) -> str:
    text = _text(event.get("messageId"))
    if text is not None:
        return text
    # No messageId (Sluice's gateway always sets one): derived from the event, so a reload merges.
    canonical = json.dumps(event, sort_keys=True, default=str, ensure_ascii=False)
    return "auto-" + str(uuid.uuid5(_AUTO_ID_NAMESPACE, canonical))


# ---------------------------------------------------------------- the rows

def event_rows(
    event: Any,
    *,
    source_id: str | None,
    source_type: str | None,
    destination_id: str | None,
    destination_type: str,
    config: Mapping[str, Any] | None,
    uuid_ts: datetime.datetime,
) -> list[Row]:
    """The warehouse rows of one event (see the package docstring). Raises Discarded for an event that
    cannot be loaded: not an object, unknown type, or a row of more than MAX_COLUMNS columns."""
    if not isinstance(event, dict):
        raise Discarded("event is not a JSON object")
    etype = event.get("type")
    etype = etype.strip().lower() if isinstance(etype, str) else etype
    if etype not in EVENT_TYPES:
        raise Discarded(f"unknown event type {etype!r} for a warehouse (expected one of {', '.join(EVENT_TYPES)})")
    config = config if isinstance(config, Mapping) else {}
    options = _options(event, destination_type or "")
    divide = _flag(config.get("underscoreDivideNumbers"))
    json_paths = _json_paths(event, config, options)
    name = column_namer(divide)

    uuid_text = format_timestamp(uuid_ts)
    received = event.get("receivedAt")
    received_at = parse_timestamp(received) if isinstance(received, str) else None
    if received_at is None:  # Sluice's gateway always sets it; the load time is the next best
        received_at = uuid_ts if uuid_ts.tzinfo else uuid_ts.replace(tzinfo=datetime.UTC)
    received_text = format_timestamp(received_at)
    message_id = _message_id(event)
    context = event.get("context") if isinstance(event.get("context"), dict) else {}
    request_ip = event.get("request_ip")

    # Columns from the context every table has, and those of rows with the event's own id.
    context_columns: Columns = {}
    _put_text(context_columns, "context_ip", _first_text(context.get("ip"), request_ip))
    _put_text(context_columns, "context_request_ip", request_ip)
    _put_text(context_columns, "context_source_id", source_id)
    _put_text(context_columns, "context_source_type", source_type)
    _put_text(context_columns, "context_destination_id", destination_id)
    _put_text(context_columns, "context_destination_type", destination_type)
    times: Columns = {}
    for column, key in (("sent_at", "sentAt"), ("timestamp", "timestamp"),
                        ("original_timestamp", "originalTimestamp")):
        _put_time(times, column, event.get(key))
    common: Columns = {}
    common["id"] = (STRING, message_id)
    _put_text(common, "anonymous_id", event.get("anonymousId"))
    _put_text(common, "user_id", event.get("userId"))
    common.update(times)
    common["received_at"] = (DATETIME, received_text)
    _put_text(common, "channel", event.get("channel"))
    common.update(context_columns)
    common["uuid_ts"] = (DATETIME, uuid_text)

    def flattener(table: str) -> _Flattener:
        return _Flattener(name, json_paths, _RESERVED[etype], table)

    def row(table: str, columns: Columns, row_id: str = message_id) -> Row:
        if len(columns) > MAX_COLUMNS:
            raise _too_many(table, len(columns))
        return Row(table, row_id, received_at, columns)

    rows: list[Row] = []
    if etype == "track":
        event_text = event.get("event")
        if not isinstance(event_text, str):
            event_text = _text(event_text) or ""
        event_text = strip_nul(event_text)
        shared: Columns = {}
        flattener("tracks").add(shared, context, "context_", ("track", "context"))
        shared.update(common)
        if event_text:
            shared["event_text"] = (STRING, event_text)
        shared["event"] = (STRING, event_value(event_text, divide))
        if not (_flag(config.get("skipTracksTable")) or _flag(options.get("skipTracksTable"))):
            rows.append(row("tracks", dict(shared)))
        if event_text.strip():
            table = table_name(event_text, underscore_divide_numbers=divide)
            own: Columns = {}
            flat = flattener(table)
            flat.add(own, event.get("properties"), "", ("track", "properties"))
            flat.add(own, event.get("userProperties"), "", ("track", "userProperties"))
            own.update(shared)
            rows.append(row(table, own))
        return rows

    if etype == "identify":
        traits: Columns = {}
        flat = flattener("identifies")
        flat.add(traits, event.get("userProperties"), "", ("identify", "userProperties"))
        if _flag(config.get("allowUsersContextTraits")):
            flat.add(traits, context.get("traits"), "", ("identify", "context", "traits"))
        flat.add(traits, event.get("traits"), "", ("identify", "traits"))
        flat.add(traits, context, "context_", ("identify", "context"))
        if "user_id" in traits:
            traits["_user_id"] = traits.pop("user_id")
        rows.append(row("identifies", {**traits, **common}))
        user_id = _text(event.get("userId"))
        skip_users = _flag(config.get("skipUsersTable")) or _flag(options.get("skipUsersTable"))
        if user_id is not None and user_id.strip() and not skip_users:
            user: Columns = {**traits, **context_columns, **times}
            user["id"] = (STRING, user_id)
            user["received_at"] = (DATETIME, received_text)
            user["uuid_ts"] = (DATETIME, uuid_text)
            rows.append(row(USERS_TABLE, user, user_id))
        return rows

    table = TABLES[etype]
    columns: Columns = {}
    flat = flattener(table)
    if etype in ("page", "screen"):
        properties = event.get("properties") if isinstance(event.get("properties"), dict) else {}
        flat.add(columns, properties, "", (etype, "properties"))
        flat.add(columns, context, "context_", (etype, "context"))
        columns.update(common)
        _put_text(columns, "name", _first_text(event.get("name"), properties.get("name")))
    else:  # group, alias
        flat.add(columns, event.get("traits"), "", (etype, "traits"))
        flat.add(columns, context, "context_", (etype, "context"))
        columns.update(common)
        if etype == "group":
            _put_text(columns, "group_id", event.get("groupId"))
        else:
            _put_text(columns, "previous_id", event.get("previousId"))
    rows.append(row(table, columns))
    return rows
