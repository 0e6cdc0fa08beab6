"""event_rows: which tables each message type writes and which columns each row has, checked against
column sets written from reference/warehouse-schema.md (not from the code's output)."""

from __future__ import annotations

import datetime
import json

import pytest

from transformers.errors import TransformError
from transformers.warehouse import MAX_COLUMNS, Discarded, JsonText, event_rows

UUID_TS = datetime.datetime(2024, 5, 1, 10, 5, tzinfo=datetime.UTC)
SOURCE = {"source_id": "src-1", "source_type": "HTTP", "destination_id": "dst-1", "destination_type": "POSTGRES"}

COMMON = {
    "id", "anonymous_id", "user_id", "sent_at", "timestamp", "received_at", "original_timestamp", "channel",
    "context_ip", "context_request_ip", "context_source_id", "context_source_type", "context_destination_id",
    "context_destination_type", "uuid_ts",
}
CONTEXT = {"context_library_name", "context_library_version", "context_page_path", "context_traits_email"}


def base(kind: str, **fields) -> dict:
    """An event as Sluice's gateway stores it."""
    event = {
        "type": kind,
        "messageId": "msg-1",
        "anonymousId": "anon-1",
        "userId": "user-1",
        "channel": "web",
        "request_ip": "203.0.113.9",
        "receivedAt": "2024-05-01T10:00:00.123Z",
        "sentAt": "2024-05-01T09:59:58.000Z",
        "originalTimestamp": "2024-05-01T09:59:57.000Z",
        "timestamp": "2024-05-01T09:59:59.123Z",
        "context": {
            "library": {"name": "analytics.js", "version": "3.0.1"},
            "page": {"path": "/cart"},
            "traits": {"email": "ada@example.com"},
        },
    }
    event.update(fields)
    return event


def rows_of(event, config=None, **overrides):
    args = {**SOURCE, **overrides}
    return event_rows(event, config=config or {}, uuid_ts=UUID_TS, **args)


def by_table(rows):
    tables = [r.table for r in rows]
    assert len(tables) == len(set(tables))
    return {r.table: r for r in rows}


# ---------------------------------------------------------------- tables and columns per message type

def test_track_writes_tracks_and_the_event_table():
    event = base("track", event="Order Completed", properties={
        "revenue": 10.5, "currency": "USD", "shipping": {"method": "ground", "cost": 5},
        "products": [{"sku": "a"}, {"sku": "b"}],
    })
    rows = by_table(rows_of(event))
    assert set(rows) == {"tracks", "order_completed"}
    tracks, own = rows["tracks"], rows["order_completed"]
    assert set(tracks.columns) == COMMON | CONTEXT | {"event", "event_text"}
    assert set(own.columns) == COMMON | CONTEXT | {"event", "event_text", "revenue", "currency",
                                                   "shipping_method", "shipping_cost", "products"}
    assert tracks.values()["event"] == own.values()["event"] == "order_completed"
    assert tracks.values()["event_text"] == "Order Completed"
    assert own.columns["revenue"] == ("float", 10.5)
    assert own.columns["shipping_cost"] == ("int", 5)
    assert own.columns["products"] == ("string", '[{"sku":"a"},{"sku":"b"}]')
    assert tracks.id == own.id == "msg-1"


def test_track_common_column_values():
    row = by_table(rows_of(base("track", event="Signed Up")))["tracks"]
    assert row.values() == {
        "id": "msg-1",
        "anonymous_id": "anon-1",
        "user_id": "user-1",
        "sent_at": "2024-05-01T09:59:58.000Z",
        "timestamp": "2024-05-01T09:59:59.123Z",
        "received_at": "2024-05-01T10:00:00.123Z",
        "original_timestamp": "2024-05-01T09:59:57.000Z",
        "channel": "web",
        "context_ip": "203.0.113.9",
        "context_request_ip": "203.0.113.9",
        "context_source_id": "src-1",
        "context_source_type": "HTTP",
        "context_destination_id": "dst-1",
        "context_destination_type": "POSTGRES",
        "uuid_ts": "2024-05-01T10:05:00.000Z",
        "context_library_name": "analytics.js",
        "context_library_version": "3.0.1",
        "context_page_path": "/cart",
        "context_traits_email": "ada@example.com",
        "event": "signed_up",
        "event_text": "Signed Up",
    }
    assert row.types()["received_at"] == "datetime" and row.types()["id"] == "string"
    assert row.received_at == datetime.datetime(2024, 5, 1, 10, 0, 0, 123000, tzinfo=datetime.UTC)


def test_identify_writes_identifies_and_users():
    event = base("identify", traits={"email": "ada@example.com", "Plan Type": "pro", "logins": 3.0,
                                     "userId": "legacy-7", "address": {"city": "Paris"}})
    rows = by_table(rows_of(event))
    assert set(rows) == {"identifies", "users"}
    identifies, users = rows["identifies"], rows["users"]
    traits = {"email", "plan_type", "logins", "_user_id", "address_city"}
    assert set(identifies.columns) == COMMON | CONTEXT | traits
    assert identifies.values()["user_id"] == "user-1"
    assert identifies.values()["_user_id"] == "legacy-7"
    assert identifies.columns["logins"] == ("int", 3)
    assert identifies.id == "msg-1"
    # users: one row per user id, traits and context, merged by the loader on id by received_at
    assert set(users.columns) == traits | CONTEXT | {
        "id", "received_at", "uuid_ts", "sent_at", "timestamp", "original_timestamp", "context_ip",
        "context_request_ip", "context_source_id", "context_source_type", "context_destination_id",
        "context_destination_type"}
    assert users.id == users.values()["id"] == "user-1"
    assert users.received_at == identifies.received_at


def test_identify_without_user_id_or_with_skip_users_table_has_no_users_row():
    anonymous = base("identify", traits={"a": 1})
    del anonymous["userId"]
    assert [r.table for r in rows_of(anonymous)] == ["identifies"]
    assert [r.table for r in rows_of(base("identify", userId="  "))] == ["identifies"]
    assert [r.table for r in rows_of(base("identify"), {"skipUsersTable": True})] == ["identifies"]
    on_event = base("identify", integrations={"POSTGRES": {"options": {"skipUsersTable": True}}})
    assert [r.table for r in rows_of(on_event)] == ["identifies"]


def test_identify_context_traits_stay_prefixed_unless_allowed_at_top_level():
    event = base("identify", traits={"plan": "pro"})
    assert "email" not in by_table(rows_of(event))["identifies"].columns
    row = by_table(rows_of(event, {"allowUsersContextTraits": True}))["identifies"]
    assert {"email", "context_traits_email", "plan"} <= set(row.columns)


@pytest.mark.parametrize("kind, table", [("page", "pages"), ("screen", "screens")])
def test_page_and_screen(kind, table):
    event = base(kind, name="Cart", properties={"path": "/cart", "referrer": "", "title": "Your cart"})
    rows = by_table(rows_of(event))
    assert set(rows) == {table}
    row = rows[table]
    assert set(row.columns) == COMMON | CONTEXT | {"name", "path", "title"}  # "" makes no column
    assert row.values()["name"] == "Cart"


def test_page_name_falls_back_to_properties_name():
    row = rows_of(base("page", properties={"name": "Home"}))[0]
    assert row.values()["name"] == "Home"


def test_group():
    event = base("group", groupId="acme", traits={"name": "Acme Inc", "employees": 420})
    rows = by_table(rows_of(event))
    assert set(rows) == {"groups"}
    assert set(rows["groups"].columns) == COMMON | CONTEXT | {"group_id", "name", "employees"}
    assert rows["groups"].values()["group_id"] == "acme"


def test_alias():
    rows = by_table(rows_of(base("alias", previousId="anon-1")))
    assert set(rows) == {"aliases"}
    assert set(rows["aliases"].columns) == COMMON | CONTEXT | {"previous_id"}
    assert rows["aliases"].values()["previous_id"] == "anon-1"


def test_skip_tracks_table():
    event = base("track", event="Clicked")
    assert [r.table for r in rows_of(event, {"skipTracksTable": True})] == ["clicked"]


# ---------------------------------------------------------------- common columns

def test_event_fields_never_overwrite_common_columns():
    event = base("track", event="Clicked", properties={
        "id": "evil", "user_id": "evil", "userId": "evil", "received_at": "evil", "uuid_ts": "evil",
        "event": "evil", "event_text": "evil", "context_ip": "evil", "Context IP": "evil", "channel": "evil",
    }, context={"ip": "198.51.100.1", "sourceId": "evil", "destination": {"type": "evil"}})
    for row in rows_of(event):
        values = row.values()
        assert "evil" not in values.values(), row.table
        assert values["context_ip"] == "198.51.100.1"
        assert values["context_request_ip"] == "203.0.113.9"
        assert values["context_source_id"] == "src-1"
        assert values["context_destination_type"] == "POSTGRES"


def test_a_reserved_column_without_a_value_is_left_out_not_filled_by_a_property():
    event = base("track", event="Clicked", properties={"channel": "from-properties"})
    del event["channel"]
    for row in rows_of(event):
        assert "channel" not in row.columns


def test_context_ip_falls_back_to_the_request_ip():
    event = base("page")
    row = rows_of(event)[0]
    assert row.values()["context_ip"] == "203.0.113.9"
    event["context"]["ip"] = "198.51.100.1"
    row = rows_of(event)[0]
    assert row.values()["context_ip"] == "198.51.100.1"
    assert row.values()["context_request_ip"] == "203.0.113.9"


def test_bad_client_times_stay_text_and_received_at_falls_back_to_the_load_time():
    event = base("track", event="x", sentAt="yesterday", receivedAt="garbage")
    row = rows_of(event)[0]
    assert row.columns["sent_at"] == ("string", "yesterday")
    assert row.columns["received_at"] == ("datetime", "2024-05-01T10:05:00.000Z")
    assert row.received_at == UUID_TS


def test_a_missing_message_id_gets_a_stable_one():
    event = base("track", event="x")
    del event["messageId"]
    first, again = rows_of(event)[0].id, rows_of(json.loads(json.dumps(event)))[0].id
    assert first == again and first.startswith("auto-")


# ---------------------------------------------------------------- flattening

def test_nested_objects_join_with_underscores_and_arrays_are_json_text():
    event = base("track", event="x", properties={
        "a": {"b": {"c": 1, "dEf": True}}, "list": [1, "two", {"three": 3}], "empty": [], "none": None,
        "blank_obj": {}, "zero": 0, "no": False, "nan": float("nan"),
    })
    row = by_table(rows_of(event))["x"]
    assert row.columns["a_b_c"] == ("int", 1)
    assert row.columns["a_b_d_ef"] == ("boolean", True)
    assert row.columns["list"] == ("string", '[1,"two",{"three":3}]')
    assert isinstance(row.columns["list"][1], JsonText)
    assert row.columns["zero"] == ("int", 0)
    assert row.columns["no"] == ("boolean", False)
    for absent in ("empty", "none", "blank_obj", "nan"):
        assert absent not in row.columns


def test_duplicate_names_after_conversion_keep_the_last_key():
    event = base("track", event="x", properties={"plan type": 1, "plan_type": 2, "planType": 3})
    assert by_table(rows_of(event))["x"].columns["plan_type"] == ("int", 3)


def test_deep_nesting_does_not_recurse():
    deep: dict = {"leaf": 1}
    for _ in range(5000):
        deep = {"k": deep}
    row = by_table(rows_of(base("track", event="x", properties={"d": deep})))["x"]
    names = [c for c in row.columns if c.startswith("d_k")]
    assert len(names) == 1 and len(names[0]) == 63


def test_json_paths_from_the_destination_config():
    event = base("track", event="Checkout", properties={
        "address": {"city": "Paris", "zip": "75001"}, "cart": {"items": {"a": 1}, "total": 3},
    }, context={"ctest": {"nested": {"x": 1}}, "library": {"name": "js"}})
    config = {"jsonPaths": "track.properties.address, track.properties.cart.items\ntrack.context.ctest.nested"}
    rows = by_table(rows_of(event, config))
    own = rows["checkout"]
    assert own.columns["address"] == ("json", '{"city":"Paris","zip":"75001"}')
    assert own.columns["cart_items"] == ("json", '{"a":1}')
    assert own.columns["cart_total"] == ("int", 3)
    assert own.columns["context_ctest_nested"] == ("json", '{"x":1}')
    assert rows["tracks"].columns["context_ctest_nested"] == ("json", '{"x":1}')
    assert "address_city" not in own.columns


def test_json_paths_without_an_event_type_mean_track_properties():
    # RudderStack's rule: a path without the event type is under a track's `properties`, so
    # "address" is properties.address and "properties.address" would be properties.properties.address.
    event = base("track", event="x", properties={"address": {"city": "Paris"}})
    assert by_table(rows_of(event, {"jsonPaths": "address"}))["x"].columns["address"][0] == "json"
    assert "address" not in by_table(rows_of(event, {"jsonPaths": "properties.address"}))["x"].columns
    identify = base("identify", traits={"address": {"city": "Paris"}})
    assert "address" not in by_table(rows_of(identify, {"jsonPaths": "address"}))["identifies"].columns


def test_json_paths_for_other_event_types_and_from_the_event():
    identify = base("identify", traits={"prefs": {"mail": True}})
    config = {"jsonPaths": "identify.traits.prefs"}
    rows = by_table(rows_of(identify, config))
    assert rows["identifies"].columns["prefs"] == ("json", '{"mail":true}')
    assert rows["users"].columns["prefs"] == ("json", '{"mail":true}')
    page = base("page", properties={"utm": {"source": "x"}},
                integrations={"POSTGRES": {"options": {"jsonPaths": ["page.properties.utm"]}}})
    assert rows_of(page)[0].columns["utm"] == ("json", '{"source":"x"}')
    group = base("group", groupId="g", traits={"meta": [1, 2]},
                 integrations={"DATA_WAREHOUSE": {"options": {"jsonPaths": ["group.traits.meta"]}}})
    assert rows_of(group)[0].columns["meta"] == ("json", "[1,2]")


def test_json_path_values_are_valid_jsonb_text():
    event = base("track", event="x", properties={"blob": {"n": float("nan"), "s": "a\x00b"}})
    value = by_table(rows_of(event, {"jsonPaths": "blob"}))["x"].columns["blob"][1]
    assert json.loads(value) == {"n": None, "s": "ab"}


def test_underscore_divide_numbers_setting():
    event = base("track", event="button clicked v2", properties={"step2done": 1})
    rows = by_table(rows_of(event, {"underscoreDivideNumbers": True}))
    assert set(rows) == {"tracks", "button_clicked_v_2"}
    assert rows["tracks"].values()["event"] == "button_clicked_v_2"
    assert "step_2_done" in rows["button_clicked_v_2"].columns
    assert "step2_done" in by_table(rows_of(event))["button_clicked_v2"].columns  # digits stay with the word before


@pytest.mark.parametrize("name, table", [
    ("tracks", "_tracks"), ("users", "_users"), ("identifies", "_identifies"), ("Groups", "_groups"),
    ("order", "_order"), ("rudder_discards", "_rudder_discards"),
])
def test_event_tables_never_collide_with_the_layouts_tables(name, table):
    rows = by_table(rows_of(base("track", event=name)))
    assert set(rows) == {"tracks", table}


def test_hostile_keys_and_event_names_make_safe_identifiers():
    import re
    safe = re.compile(r"[a-z0-9_]{1,63}")
    event = base("track", event='x"; DROP TABLE tracks; --', properties={
        'a"b': 1, "c;d": 2, "--": 3, "pаss": 4, "ｓｅｌｅｃｔ": 5, "y" * 200: 6, "名前": 7, "": 8,
    })
    for row in rows_of(event):
        assert safe.fullmatch(row.table)
        for column in row.columns:
            assert safe.fullmatch(column), column
    own = [r for r in rows_of(event) if r.table != "tracks"][0]
    assert own.table == "x_drop_table_tracks"
    assert own.columns["y" * 63] == ("int", 6)


# ---------------------------------------------------------------- events that cannot be loaded

def test_too_many_columns_is_discarded():
    wide = {f"p{i}": i for i in range(MAX_COLUMNS + 1)}
    with pytest.raises(Discarded) as caught:
        rows_of(base("track", event="wide", properties=wide))
    assert "1600" in caught.value.reason and "wide" in caught.value.reason
    assert isinstance(caught.value, TransformError)
    # just under the limit, with the common columns counted
    fits = {f"p{i}": i for i in range(MAX_COLUMNS - 40)}
    assert len(by_table(rows_of(base("track", event="wide", properties=fits)))["wide"].columns) <= MAX_COLUMNS


@pytest.mark.parametrize("event", [None, [], "track", 42, {"type": "merge"}, {"type": None}, {}])
def test_events_that_are_not_loadable(event):
    with pytest.raises(Discarded):
        rows_of(event)


def test_an_absurdly_nested_array_is_discarded_not_a_crash():
    deep: list = [1]
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(Discarded):
        rows_of(base("track", event="x", properties={"d": deep}))
    with pytest.raises(Discarded):
        rows_of(base("track", event="x", properties={"d": {"e": deep}}), {"jsonPaths": "d"})
