"""Warehouse identifiers: RudderStack's naming rules (reference/warehouse-schema.md) and safety against
hostile names: whatever comes in, what comes out is [a-z0-9_]{1,63}."""

from __future__ import annotations

import random
import re

import pytest

from transformers.warehouse import RESERVED_WORDS, column_name, schema_name, table_name
from transformers.warehouse.names import event_value

SAFE = re.compile(r"[a-z0-9_]{1,63}")


@pytest.mark.parametrize("raw, expected", [
    # the reference's own examples
    ("Plan Type", "plan_type"),
    ("2fa", "_2fa"),
    ("select", "_select"),
    ("button clicked v2", "button_clicked_v2"),
    # runs of [A-Za-z0-9] joined with one "_"
    ("ome$ga", "ome_ga"),
    ("omega$", "omega"),
    ("ome_ ga", "ome_ga"),
    ("9mega________-________90", "_9mega_90"),
    ("path to $1,00,000", "path_to_1_00_000"),
    ("Cízǔ", "c_z"),
    # camelCase and acronyms
    ("userId", "user_id"),
    ("firstName", "first_name"),
    ("CamelCase123Key", "camel_case123_key"),
    ("HTMLParser", "html_parser"),
    ("ABC123def", "abc123_def"),
    ("context_library_name", "context_library_name"),
    # a leading "_" is kept (all of them)
    ("_timestamp", "_timestamp"),
    ("__private key", "__private_key"),
    # Postgres reserved words, whatever the case
    ("Order", "_order"),
    ("user", "_user"),
    ("FROM", "_from"),
    ("left", "_left"),  # reserved (can be function or type)
    ("timestamp", "timestamp"),  # a column-name key word: allowed unquoted
    ("name", "name"),
])
def test_column_names(raw, expected):
    assert column_name(raw) == expected


@pytest.mark.parametrize("raw, expected", [
    ("button clicked v2", "button_clicked_v_2"),
    ("2fa", "_2_fa"),
    ("CamelCase123Key", "camel_case_123_key"),
    ("9mega________-________90", "_9_mega_90"),
    ("1st place", "_1st_place"),  # ordinals stay whole
])
def test_underscore_divide_numbers(raw, expected):
    assert column_name(raw, underscore_divide_numbers=True) == expected


def test_every_reserved_word_gets_a_prefix():
    assert {"all", "order", "user", "table", "select", "join", "is"} <= RESERVED_WORDS
    for word in RESERVED_WORDS:
        assert column_name(word) == "_" + word
        assert column_name(word.upper()) == "_" + word
        assert table_name(word) == "_" + word


def test_cut_to_63_bytes():
    assert column_name("a" * 200) == "a" * 63
    assert column_name("Segment" * 20) == ("segment_" * 20)[:63]  # camelCase words
    # multi-byte characters are separators, never half-cut bytes
    name = column_name("é" * 40 + "b" * 70)
    assert name == "b" * 63 and len(name.encode()) == 63
    name = column_name("x" * 60 + "日本語" + "y" * 10)
    assert name == ("x" * 60 + "_" + "y" * 10)[:63]
    assert len(column_name("€a" * 100).encode("utf-8")) <= 63


@pytest.mark.parametrize("event, table", [
    ("Order Completed", "order_completed"),
    ("tracks", "_tracks"),
    ("Pages", "_pages"),
    ("screens", "_screens"),
    ("aliases", "_aliases"),
    ("groups", "_groups"),
    ("accounts", "_accounts"),
    ("users", "_users"),
    ("Identifies", "_identifies"),
    ("rudder discards", "_rudder_discards"),  # the discards table, never an event's
    ("order", "_order"),  # reserved word
    ("button clicked v2", "button_clicked_v2"),
])
def test_event_tables(event, table):
    assert table_name(event) == table


def test_event_column_value_is_the_uncut_table_form():
    assert event_value("Order Completed") == "order_completed"
    assert event_value("order") == "order"  # the table is _order; the value as RudderStack writes it
    assert event_value("button clicked v2", True) == "button_clicked_v_2"
    assert event_value("x" * 100) == "x" * 100
    assert event_value("  ") == ""
    assert event_value("名前") == table_name("名前")


@pytest.mark.parametrize("namespace, source, expected", [
    ("", "My Source", "my_source"),
    (None, "iOS App v2", "i_os_app_v2"),
    ("Analytics Prod", "ignored", "analytics_prod"),
    ("  ", "web", "web"),
    (None, "", "stringempty"),
    (None, "日本", "stringempty"),
    (None, None, "stringempty"),
    (None, "2020 events", "_2020_events"),
    (None, "select", "_select"),
    (None, "PG Events", "_pg_events"),  # CREATE SCHEMA pg_* is refused by Postgres
    (None, "information_schema", "_information_schema"),
])
def test_schema_names(namespace, source, expected):
    assert schema_name(namespace, source) == expected


HOSTILE = [
    'name"; DROP TABLE users; --',
    "a'b",
    "semi;colon",
    "-- comment",
    "/* x */",
    '"quoted"',
    "back\\slash",
    "tab\there",
    "new\nline",
    "nul\x00byte",
    "pаssword",  # Cyrillic а
    "ｓｅｌｅｃｔ",  # full-width
    "ＳＥＬＥＣＴ",
    "ѕеlесt",  # Cyrillic look-alikes of "select"
    "١٢٣",  # Arabic-Indic digits
    "²³",
    "名前",
    "😀",
    "",
    " ",
    "$$",
    "_",
    "___",
    "x" * 200,
    "ж" * 200,
    "\ud800",  # a lone surrogate
    "İ",  # lowers to two code points
    "ǅ",  # title case
]


@pytest.mark.parametrize("raw", HOSTILE)
def test_hostile_names_give_safe_identifiers(raw):
    for divide in (False, True):
        name = column_name(raw, underscore_divide_numbers=divide)
        assert SAFE.fullmatch(name), name
        assert SAFE.fullmatch(table_name(raw, underscore_divide_numbers=divide))
        assert name not in RESERVED_WORDS
    assert SAFE.fullmatch(schema_name(None, raw))


def test_look_alikes_never_become_the_word_they_imitate():
    assert column_name("ｓｅｌｅｃｔ") != "select"
    assert column_name("ѕеlесt") not in {"select", "_select"}
    assert column_name("pаssword") == "p_ssword"


def test_empty_names_fall_back_to_a_stable_hash():
    assert column_name("名前") == column_name("名前")
    assert column_name("名前") != column_name("住所")
    assert re.fullmatch(r"_[0-9a-f]{12}", column_name("名前"))
    assert re.fullmatch(r"_[0-9a-f]{12}", column_name(""))


def test_random_names_are_always_safe():
    rng = random.Random(20240501)
    alphabet = "aZ9_ -;'\"\\\x00.éж日😀ｓ\t$"
    for _ in range(3000):
        raw = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120)))
        assert SAFE.fullmatch(column_name(raw)), raw
        assert SAFE.fullmatch(column_name(raw, underscore_divide_numbers=True)), raw
        assert SAFE.fullmatch(table_name(raw)), raw
