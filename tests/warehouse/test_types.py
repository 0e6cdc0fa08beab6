"""Value types, Postgres column types and the schema-evolution rules (reference/warehouse-schema.md,
"Types" and "Schema evolution and conflicts")."""

from __future__ import annotations

import datetime

import pytest

from transformers.warehouse import (
    DISCARDS_COLUMNS,
    DISCARDS_TABLE,
    POSTGRES_TYPES,
    Discard,
    JsonText,
    Row,
    convert,
    event_rows,
    fit_row,
    merge_batch_schema,
    new_columns,
    target_schema,
    warehouse_type,
)
from transformers.warehouse.column_types import classify, format_timestamp, parse_timestamp

UTC = datetime.UTC
RECEIVED = datetime.datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def test_postgres_column_types():
    assert POSTGRES_TYPES == {"int": "bigint", "float": "numeric", "boolean": "boolean",
                              "datetime": "timestamptz", "string": "text", "json": "jsonb"}
    for kind, pg in POSTGRES_TYPES.items():
        assert warehouse_type(pg) == kind
    assert warehouse_type("timestamp with time zone") == "datetime"
    assert warehouse_type("character varying") == "string"
    assert warehouse_type("double precision") == "float"
    assert warehouse_type("integer") == "int"
    assert warehouse_type("uuid") == "uuid"  # unknown: every value meets it as a conflict


@pytest.mark.parametrize("value, expected", [
    (3, ("int", 3)),
    (3.0, ("int", 3)),  # integral counts as int
    (-0.0, ("int", 0)),
    (2**63 - 1, ("int", 2**63 - 1)),
    (2**63, ("float", 2**63)),  # beyond bigint: numeric holds it
    (1e20, ("float", 1e20)),
    (3.5, ("float", 3.5)),
    (True, ("boolean", True)),  # booleans are not numbers
    (False, ("boolean", False)),
    ("hello", ("string", "hello")),
    ("42", ("string", "42")),
    ("2024-05-01T10:00:00.123Z", ("datetime", "2024-05-01T10:00:00.123Z")),
    ("2024-05-01", ("datetime", "2024-05-01T00:00:00.000Z")),
    ("2024-05-01 12:30", ("datetime", "2024-05-01T12:30:00.000Z")),
    ("2024-05-01T12:30:00+02:00", ("datetime", "2024-05-01T10:30:00.000Z")),
    ("2024-05-01T12:30:00.123456789-0130", ("datetime", "2024-05-01T14:00:00.123Z")),
    ("0001-01-01T00:00:00Z", ("datetime", "0001-01-01T00:00:00.000Z")),
    ("9999-12-31T23:59:59.999Z", ("datetime", "9999-12-31T23:59:59.999Z")),
    ("0000-01-01", ("string", "0000-01-01")),  # year 0
    ("0001-01-01T00:00:00+01:00", ("string", "0001-01-01T00:00:00+01:00")),  # year 0 in UTC
    ("9999-12-31T23:00:00-02:00", ("string", "9999-12-31T23:00:00-02:00")),  # year 10000 in UTC
    ("2021-02-30", ("string", "2021-02-30")),
    ("2024-13-01", ("string", "2024-13-01")),
    ("2024-05-01T25:00:00Z", ("string", "2024-05-01T25:00:00Z")),
    ("yesterday", ("string", "yesterday")),
    ("a\x00b", ("string", "ab")),
    ([1, 2], ("string", "[1,2]")),
])
def test_classify(value, expected):
    assert classify(value) == expected


@pytest.mark.parametrize("value", [None, "", [], float("nan"), float("inf"), {"a": 1}])
def test_values_that_make_no_column(value):
    assert classify(value) is None


def test_datetime_strings_at_most_40_characters():
    forty = "2024-05-01T10:00:00.1234567890123456789Z"
    assert len(forty) == 40 and classify(forty)[0] == "datetime"
    assert classify(forty[:-1] + "0Z")[0] == "string"  # 41 characters
    assert parse_timestamp("2024-05-01T10:00:00" + "0" * 10_000) is None


def test_format_timestamp():
    assert format_timestamp(datetime.datetime(5, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)) == "0005-01-02T03:04:05.678Z"
    naive = datetime.datetime(2024, 5, 1, 10, 0)
    assert format_timestamp(naive) == "2024-05-01T10:00:00.000Z"
    plus2 = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    assert format_timestamp(plus2) == "2024-05-01T10:00:00.000Z"


# ---------------------------------------------------------------- conversions

@pytest.mark.parametrize("value, value_type, column_type, expected", [
    (7, "int", "float", 7),  # int into float: fine
    (7.9, "float", "int", 7),  # float into int: truncated
    (-7.9, "float", "int", -7),
    (7, "int", "string", "7"),  # anything into a string column: its text
    (7.5, "float", "string", "7.5"),
    (True, "boolean", "string", "true"),
    ("2024-05-01T10:00:00.000Z", "datetime", "string", "2024-05-01T10:00:00.000Z"),
    (JsonText('{"a":1}'), "json", "string", '{"a":1}'),
    (7, "int", "json", "7"),  # anything into a json column: JSON text
    ("abc", "string", "json", '"abc"'),
    (False, "boolean", "json", "false"),
    (JsonText("[1,2]"), "string", "json", "[1,2]"),  # an array is already JSON
    ("x", "string", "string", "x"),
    (None, "int", "boolean", None),
])
def test_convert(value, value_type, column_type, expected):
    assert convert(value, value_type, column_type) == (expected, None)


@pytest.mark.parametrize("value, value_type, column_type", [
    (1, "int", "boolean"),
    (True, "boolean", "int"),
    (True, "boolean", "float"),
    (1.5, "float", "boolean"),
    ("abc", "string", "int"),
    ("abc", "string", "float"),
    ("abc", "string", "datetime"),
    ("abc", "string", "boolean"),
    ("2024-05-01T10:00:00.000Z", "datetime", "int"),
    (5, "int", "datetime"),
    (JsonText("{}"), "json", "int"),
    ("abc", "string", "uuid"),
])
def test_conflicts_give_null_and_a_reason(value, value_type, column_type):
    assert convert(value, value_type, column_type) == (
        None, f"incompatible schema conversion from {value_type} to {column_type}")


def test_a_float_beyond_bigint_into_an_int_column_is_a_conflict():
    value, reason = convert(1e300, "float", "int")
    assert value is None and reason.startswith("incompatible schema conversion from float to int")


# ---------------------------------------------------------------- batch and warehouse schemas

def row(table, row_id, **columns):
    return Row(table, row_id, RECEIVED, {c: v for c, v in columns.items()})


def test_first_type_seen_wins_in_a_batch():
    rows = [row("t", "1", a=("int", 1), b=("boolean", True)),
            row("t", "2", a=("float", 1.5), b=("int", 2)),
            row("u", "3", a=("datetime", "2024-05-01T00:00:00.000Z"))]
    assert merge_batch_schema(rows) == {"t": {"a": "int", "b": "boolean"}, "u": {"a": "datetime"}}


def test_string_always_wins_in_a_batch():
    rows = [row("t", "1", a=("int", 1), b=("string", "x")),
            row("t", "2", a=("string", "x"), b=("int", 2)),
            row("t", "3", a=("float", 2.5))]
    assert merge_batch_schema(rows) == {"t": {"a": "string", "b": "string"}}


def test_the_warehouse_type_beats_the_batch_type():
    batch = {"t": {"a": "string", "b": "int", "c": "float"}, "new": {"x": "int"}}
    warehouse = {"t": {"a": "int", "b": "float", "z": "boolean"}}
    assert target_schema(batch, warehouse) == {"t": {"a": "int", "b": "float", "c": "float"},
                                              "new": {"x": "int"}}
    assert new_columns(batch, warehouse) == {"t": {"c": "float"}, "new": {"x": "int"}}
    assert new_columns({"t": {"a": "int"}}, {"t": {"a": "string"}}) == {}


def test_fit_row_converts_and_discards():
    uuid_ts = "2024-05-01T10:05:00.000Z"
    r = row("tracks", "msg-1", a=("int", 5), b=("float", 2.7), c=("int", 1), d=("boolean", True),
            e=("string", "x"), uuid_ts=("datetime", uuid_ts))
    types = {"a": "float", "b": "int", "c": "boolean", "d": "string", "e": "json", "uuid_ts": "datetime"}
    values, discards = fit_row(r, types)
    assert values == {"a": 5, "b": 2, "c": None, "d": "true", "e": '"x"', "uuid_ts": uuid_ts}
    assert discards == [Discard(table_name="tracks", row_id="msg-1", column_name="c", column_value="1",
                                received_at="2024-05-01T10:00:00.000Z", uuid_ts=uuid_ts,
                                reason="incompatible schema conversion from int to boolean")]
    assert set(discards[0].values()) == set(DISCARDS_COLUMNS)
    assert DISCARDS_TABLE == "rudder_discards"


def test_a_batch_of_events_end_to_end():
    """Two events disagree on a column; the warehouse already has another column as int."""
    uuid_ts = datetime.datetime(2024, 5, 1, 10, 5, tzinfo=UTC)

    def rows_for(message_id, props):
        return event_rows({"type": "track", "event": "Paid", "messageId": message_id, "userId": "u",
                           "receivedAt": "2024-05-01T10:00:00.000Z", "properties": props},
                          source_id="s", source_type="HTTP", destination_id="d", destination_type="POSTGRES",
                          config={}, uuid_ts=uuid_ts)

    rows = rows_for("m1", {"amount": 10, "coupon": True}) + rows_for("m2", {"amount": 10.5, "coupon": "SPRING"})
    batch = merge_batch_schema(rows)
    assert batch["paid"]["amount"] == "int" and batch["paid"]["coupon"] == "string"
    warehouse = {"paid": {"amount": "float", "id": "string"}}
    types = target_schema(batch, warehouse)["paid"]
    paid = [r for r in rows if r.table == "paid"]
    first, none = fit_row(paid[0], types)
    second, _ = fit_row(paid[1], types)
    assert none == []
    assert (first["amount"], first["coupon"]) == (10, "true")
    assert (second["amount"], second["coupon"]) == (10.5, "SPRING")
    assert "amount" not in new_columns(batch, warehouse)["paid"]
