"""Warehouse column types: the type of an event value, its Postgres column type, and the schema-evolution
rules the loader applies when a batch meets the warehouse (first type wins, string always wins, the
warehouse's type beats the batch's, a value that cannot be converted becomes NULL plus a discard row).
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from transformers.json_codec import dumps, has_non_finite

INT, FLOAT, BOOLEAN, DATETIME, STRING, JSON = "int", "float", "boolean", "datetime", "string", "json"
WAREHOUSE_TYPES = (INT, FLOAT, BOOLEAN, DATETIME, STRING, JSON)

POSTGRES_TYPES = {
    INT: "bigint",
    FLOAT: "numeric",
    BOOLEAN: "boolean",
    DATETIME: "timestamptz",
    STRING: "text",
    JSON: "jsonb",
}

# information_schema.columns.data_type (and common aliases) -> warehouse type, for reading the
# warehouse's existing schema. A column someone changed to another type keeps that type's name.
_FROM_POSTGRES = {
    "bigint": INT, "integer": INT, "smallint": INT, "int8": INT, "int4": INT, "int2": INT, "int": INT,
    "numeric": FLOAT, "decimal": FLOAT, "double precision": FLOAT, "real": FLOAT, "float8": FLOAT,
    "float4": FLOAT,
    "boolean": BOOLEAN, "bool": BOOLEAN,
    "timestamp with time zone": DATETIME, "timestamptz": DATETIME, "timestamp without time zone": DATETIME,
    "timestamp": DATETIME, "date": DATETIME,
    "text": STRING, "character varying": STRING, "varchar": STRING, "character": STRING, "char": STRING,
    "jsonb": JSON, "json": JSON,
}

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def warehouse_type(postgres_type: str) -> str:
    """The warehouse type of an existing Postgres column ("bigint" -> "int"); an unknown type (a column
    someone altered, e.g. "uuid") is returned as it is, and any value meets it as a conflict."""
    key = postgres_type.strip().lower()
    return _FROM_POSTGRES.get(key, key)


class JsonText(str):
    """A value that is already JSON text (an array, or a `jsonPaths` sub-tree): a plain str for COPY,
    and written unchanged into a json column instead of being quoted again."""

    __slots__ = ()


# ---------------------------------------------------------------- values

# ISO-8601-like: a date, optionally a time (minutes at least), optionally a zone. Checked only on
# strings of at most 40 characters; the year must stay within 1..9999 once moved to UTC.
MAX_TIMESTAMP_CHARS = 40
_TIMESTAMP = re.compile(
    r"([0-9]{4})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"(?:[T ]([01][0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9])(?:[.,]([0-9]+))?)?"
    r"(?:(Z|z)|([+-])([01][0-9]|2[0-3])(?::?([0-5][0-9]))?)?)?",
    re.ASCII,
)
_UTC = datetime.UTC


def parse_timestamp(text: str) -> datetime.datetime | None:
    """An aware UTC datetime for a string that the layout types as `datetime`; None for any other."""
    if len(text) > MAX_TIMESTAMP_CHARS:
        return None
    m = _TIMESTAMP.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute, second, fraction, _z, sign, off_h, off_m = m.groups()
    try:
        moment = datetime.datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0),
                                   int(second or 0), int((fraction or "0")[:6].ljust(6, "0")), tzinfo=_UTC)
        if sign:
            offset = datetime.timedelta(hours=int(off_h), minutes=int(off_m or 0))
            moment = moment - offset if sign == "+" else moment + offset
    except (ValueError, OverflowError):  # 2021-02-30, year 0, or out of range once moved to UTC
        return None
    return moment


def format_timestamp(moment: datetime.datetime) -> str:
    """ISO-8601 in UTC with milliseconds, as RudderStack writes them: 2020-08-24T20:19:05.560Z.
    A naive datetime is taken as UTC."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(_UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="milliseconds") + "Z"


def strip_nul(text: str) -> str:
    # Postgres text and jsonb cannot hold NUL.
    return text.replace("\x00", "") if "\x00" in text else text


def _clean(value: Any) -> Any:
    """A JSON value without NaN/infinities (written as null, as JavaScript does) and NUL characters."""
    if isinstance(value, str):
        return strip_nul(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {strip_nul(str(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def json_text(value: Any) -> JsonText:
    """Compact JSON text that Postgres's jsonb accepts. Raises RecursionError for absurd nesting."""
    text = dumps(value)
    if "\\u0000" in text or "\x00" in text or has_non_finite(value):
        text = dumps(_clean(value))
    return JsonText(text)


def classify(value: Any) -> tuple[str, Any] | None:
    """(warehouse type, value ready for COPY) for one leaf value of an event; None when the value makes
    no column (null, "", [], NaN, an object — objects are flattened by the caller).

    Integral numbers (3.0 too) are int unless outside bigint's range (then float: numeric holds them);
    booleans are never numbers; an ISO-8601-like string is datetime (value normalised to UTC with
    milliseconds); an array is its JSON text (type string)."""
    kind = type(value)
    if kind is str:
        if not value:
            return None
        moment = parse_timestamp(value)
        if moment is not None:
            return DATETIME, format_timestamp(moment)
        return STRING, strip_nul(value)
    if kind is bool:
        return BOOLEAN, value
    if kind is int:
        return (INT if INT64_MIN <= value <= INT64_MAX else FLOAT), value
    if kind is float:
        if not math.isfinite(value):
            return None
        if value.is_integer() and INT64_MIN <= value <= INT64_MAX:
            return INT, int(value)
        return FLOAT, value
    if value is None or isinstance(value, dict):
        return None
    if isinstance(value, (list, tuple)):
        return (STRING, json_text(value)) if value else None
    if isinstance(value, str):  # a str subclass
        return classify(str(value))
    if isinstance(value, bool):
        return BOOLEAN, bool(value)
    if isinstance(value, int):
        return classify(int(value))
    if isinstance(value, float):
        return classify(float(value))
    return STRING, strip_nul(str(value))


def as_text(value: Any) -> str | None:
    """A value as the text a string column gets: true/false for booleans, JSON text stays as it is."""
    if value is None:
        return None
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


# ---------------------------------------------------------------- schema evolution

def convert(value: Any, value_type: str, column_type: str) -> tuple[Any, str | None]:
    """The value to write into a column of `column_type`, and None; or (None, reason) when the value
    cannot go there (the loader writes NULL and a discard row with the reason).

    Anything into a string column is its text; int into float as it is; float into int truncated
    (outside bigint's range it is a conflict); anything into a json column is JSON text."""
    if value is None:
        return None, None
    if value_type == column_type:
        return value, None
    if column_type == STRING:
        return as_text(value), None
    if column_type == JSON:
        return (value if isinstance(value, JsonText) else json_text(value)), None
    if column_type == FLOAT and value_type == INT:
        return value, None
    if column_type == INT and value_type == FLOAT:
        truncated = math.trunc(value)
        if INT64_MIN <= truncated <= INT64_MAX:
            return truncated, None
        return None, f"incompatible schema conversion from {value_type} to {column_type}: out of range"
    return None, f"incompatible schema conversion from {value_type} to {column_type}"


def merge_batch_schema(rows: Iterable[Any]) -> dict[str, dict[str, str]]:
    """{table: {column: type}} for a batch of Rows: the first type seen for a column wins, except that
    string always wins."""
    schema: dict[str, dict[str, str]] = {}
    for row in rows:
        table = schema.get(row.table)
        if table is None:
            table = schema[row.table] = {}
        for column, (kind, _value) in row.columns.items():
            seen = table.get(column)
            if seen is None or (kind == STRING and seen != STRING):
                table[column] = kind
    return schema


def target_schema(batch_schema: Mapping[str, Mapping[str, str]],
                  warehouse_schema: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
    """The type each batch column is written as: the warehouse's existing type where the column exists
    (warehouse_schema in warehouse types, see warehouse_type()), else the batch's."""
    out: dict[str, dict[str, str]] = {}
    for table, columns in batch_schema.items():
        existing = warehouse_schema.get(table) or {}
        out[table] = {column: existing.get(column, kind) for column, kind in columns.items()}
    return out


def new_columns(batch_schema: Mapping[str, Mapping[str, str]],
                warehouse_schema: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
    """The columns to create (CREATE TABLE / ALTER TABLE ADD COLUMN), by table: those of the batch the
    warehouse does not have yet. A table missing from the warehouse appears with all its columns."""
    out: dict[str, dict[str, str]] = {}
    for table, columns in batch_schema.items():
        existing = warehouse_schema.get(table) or {}
        missing = {column: kind for column, kind in columns.items() if column not in existing}
        if missing:
            out[table] = missing
    return out


DISCARDS_TABLE = "rudder_discards"
DISCARDS_COLUMNS = {
    "table_name": STRING,
    "row_id": STRING,
    "column_name": STRING,
    "column_value": STRING,
    "received_at": DATETIME,
    "uuid_ts": DATETIME,
    "reason": STRING,
}


@dataclass(frozen=True, slots=True)
class Discard:
    """One value that could not be written (a row of `rudder_discards`)."""

    table_name: str
    row_id: str
    column_name: str
    column_value: str | None
    received_at: str  # ISO-8601 UTC, as every datetime value here
    uuid_ts: str | None
    reason: str

    def values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in DISCARDS_COLUMNS}


def fit_row(row: Any, column_types: Mapping[str, str]) -> tuple[dict[str, Any], list[Discard]]:
    """A Row's values converted to its table's column types ({column: value}, NULL where a value cannot
    be converted) and a Discard for each such value. A column missing from column_types keeps its own
    type."""
    values: dict[str, Any] = {}
    discards: list[Discard] = []
    uuid_ts = row.columns.get("uuid_ts", (None, None))[1]
    received_at = format_timestamp(row.received_at)
    for column, (kind, value) in row.columns.items():
        target = column_types.get(column, kind)
        if target == kind:
            values[column] = value
            continue
        converted, reason = convert(value, kind, target)
        values[column] = converted
        if reason is not None:
            discards.append(Discard(row.table, row.id, column, as_text(value), received_at, uuid_ts, reason))
    return values, discards
