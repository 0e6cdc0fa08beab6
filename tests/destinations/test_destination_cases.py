"""Runs every destination fixture: tests/destinations/<dest>/cases/*.json.

A case is {"description", "event", "destination_config", "now", "expected": [delivery requests]}
or, instead of "expected", "expected_error": a substring of the TransformError reason.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest

from transformers.destinations import DESTINATION_TYPES, transform
from transformers.errors import TransformError

HERE = Path(__file__).parent
FOLDER_TYPES = {"ga4": "GA4", "ga": "GA", "amplitude": "AM", "webhook": "WEBHOOK"}
CASES = sorted(HERE.glob("*/cases/*.json"))


def _load(path: Path) -> dict:
    case = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(case.get("description"), str) and case["description"], f"{path}: no description"
    assert ("expected" in case) != ("expected_error" in case), f"{path}: give expected or expected_error"
    return case


def _now(case: dict) -> datetime.datetime:
    return datetime.datetime.fromisoformat(case["now"]).astimezone(datetime.UTC)


@pytest.mark.parametrize("path", CASES, ids=lambda p: f"{p.parent.parent.name}/{p.stem}")
def test_case(path: Path) -> None:
    case = _load(path)
    dest_type = case.get("dest_type") or FOLDER_TYPES[path.parent.parent.name]
    args = (dest_type, case["event"], case["destination_config"], _now(case))
    if "expected_error" in case:
        with pytest.raises(TransformError) as caught:
            transform(*args)
        assert case["expected_error"] in caught.value.reason
    else:
        assert transform(*args) == case["expected"]


@pytest.mark.parametrize("folder", sorted(FOLDER_TYPES))
def test_every_destination_has_cases(folder: str) -> None:
    assert FOLDER_TYPES[folder] in DESTINATION_TYPES
    assert len(list((HERE / folder / "cases").glob("*.json"))) >= 8


def test_transform_is_deterministic() -> None:
    for path in CASES:
        case = _load(path)
        if "expected" in case:
            dest_type = case.get("dest_type") or FOLDER_TYPES[path.parent.parent.name]
            first = transform(dest_type, case["event"], case["destination_config"], _now(case))
            second = transform(dest_type, case["event"], case["destination_config"], _now(case))
            assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
