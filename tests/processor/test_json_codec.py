"""The hot path's JSON (orjson underneath) must give exactly what the standard library gives."""

from __future__ import annotations

import dataclasses
import datetime
import json

import pytest

from transformers import json_codec


def _std(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@pytest.mark.parametrize("value", [
    {"a": "é ☃ 😀 \u2028", "b": [1, 2.5, -0.0, 1e16, 1e-7, True, None], "c": {}},
    {"big": 2**70, "neg": -(2**64)},                    # beyond 64 bits: orjson refuses, json encodes
    {1: "int key", None: "none key", False: "bool key", 2.5: "float key"},
    {"nan": float("nan"), "inf": float("inf"), "nested": [{"x": -float("inf")}], "n": None},
    {"lone": "\ud800"},
    ("tuple", 1),
])
def test_dumps_matches_json(value) -> None:
    # The same text, but for the spelling of some floats (1e-7 vs 1e-07): the same value either way.
    ours, std = json_codec.dumps(value), _std(value)
    assert repr(json.loads(ours)) == repr(json.loads(std))
    assert ours.replace("e-0", "e-") == std.replace("e-0", "e-")


def test_dumps_keeps_types_json_refuses_refused() -> None:
    @dataclasses.dataclass
    class Point:
        x: int

    for value in ({"when": datetime.datetime(2024, 1, 1)}, {"p": Point(1)}, {"s": {1, 2}}):
        with pytest.raises(TypeError):
            _std(value)
        with pytest.raises(TypeError):
            json_codec.dumps(value)


def test_dumps_strict_refuses_nan_like_json() -> None:
    assert json_codec.dumps_strict({"a": None, "b": 1.5}) == '{"a":null,"b":1.5}'
    for value in ({"a": float("nan")}, [None, float("inf")]):
        with pytest.raises(ValueError):
            json_codec.dumps_strict(value)


def test_has_non_finite() -> None:
    assert not json_codec.has_non_finite({"a": [1, 2.5, None, "x", {"b": True}]})
    assert json_codec.has_non_finite({"a": [1, {"b": (float("nan"),)}]})
    assert json_codec.has_non_finite(float("-inf"))


@pytest.mark.parametrize("text", [
    '{"a":1,"b":[1.5,-0.0,1e16,"\\u00e9"],"c":null}',
    '{"big":123456789012345678901234567890}',      # orjson would give a float
    '{"neg":-9999999999999999999}',                 # beyond int64, 19 digits
    '{"x":18446744073709551616}',
    '{"a":NaN,"b":Infinity,"c":-Infinity}',         # json accepts these literals
    '{"a":1e400}',
    '{"lone":"\\ud800"}',
    '{"id":"12345678901234567890"}',                # a long digit run inside a string
])
def test_loads_matches_json(text: str) -> None:
    expected = json.loads(text)
    for given in (text, text.encode()):
        got = json_codec.loads(given)
        assert repr(got) == repr(expected)
        assert json.dumps(got) == json.dumps(expected)


def test_loads_errors_like_json() -> None:
    for text in ("{", '{"a":1}x', '"a\x01b"', "\ufeff[1]"):
        with pytest.raises(json.JSONDecodeError):
            json_codec.loads(text)
