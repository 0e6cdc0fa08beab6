"""Mapping files are validated when they load; a broken one fails with a message naming the problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from transformers.mapping import MappingFileError, load_mapping, load_mapping_table

TRANSFORMERS = Path(__file__).resolve().parents[2] / "transformers"


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "broken.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_every_shipped_mapping_file_loads() -> None:
    files = sorted(TRANSFORMERS.glob("*/mapping/*.json"))
    assert len(files) >= 10
    for path in files:
        data = json.loads(path.read_text())
        if "mappings" in data:
            load_mapping_table(
                path, {k: object for e in data["mappings"].values() for k in e.get("options", {})}
            )
        else:
            load_mapping(path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("{not json", "not valid JSON"),
        ([], "the top level must be an object"),
        ({"fields": [{"dest": "a", "sorce": "b"}]}, "fields[0]: unknown key(s) ['sorce']"),
        ({"fields": [{"source": "b"}]}, "'dest' must be a non-empty dotted path string"),
        ({"fields": [{"dest": "a"}]}, "field 'a' needs exactly one of 'source' or 'value'"),
        ({"fields": [{"dest": "a", "source": []}]}, "'source' must be a path or a non-empty list of paths"),
        ({"fields": [{"dest": "a", "source": "b", "type": "float"}]}, "unknown type 'float'"),
        (
            {"fields": [{"dest": "a", "source": "b", "max_length": 0}]},
            "'max_length' must be a positive integer",
        ),
        ({"fields": [{"dest": "a", "source": "b", "required": "yes"}]}, "'required' must be true or false"),
        ({"fields": [{"dest": "a", "source": "b", "required": True, "default": 1}]}, "cannot have a default"),
        ({"fields": [{"dest": "a", "source": "b"}, {"dest": "a", "source": "c"}]}, "'a' is mapped twice"),
        ({"rules": []}, "expected keys 'description' and 'fields'"),
    ],
)
def test_broken_mapping_file(tmp_path: Path, data, message: str) -> None:
    path = _write(tmp_path, data)
    with pytest.raises(MappingFileError) as caught:
        load_mapping(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)


def test_broken_table_option(tmp_path: Path) -> None:
    path = _write(tmp_path, {"mappings": {"ORDER": {"options": {"items": "many"}, "fields": []}}})
    with pytest.raises(MappingFileError, match=r"mappings\['ORDER'\]: option 'items' has a bad value 'many'"):
        load_mapping_table(path, {"items": {"none", "products"}})
    with pytest.raises(MappingFileError, match="unknown option 'items'"):
        load_mapping_table(path, {})


def test_mapping_applies_rules(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {
            "fields": [
                {"dest": "out.name", "source": ["properties.name", "context.traits.name"], "max_length": 3},
                {"dest": "out.count", "source": "properties.count", "type": "integer"},
                {"dest": "kind", "value": "fixed"},
                {"dest": "label", "source": "properties.label", "default": "none"},
                {"dest": "when", "source": "timestamp", "type": "epoch_ms"},
                {"dest": "id", "source": "messageId", "required": True},
            ]
        },
    )
    mapping = load_mapping(path)
    event = {
        "properties": {"name": "", "count": "4.6"},
        "context": {"traits": {"name": "Alexandra"}},
        "timestamp": "2024-01-01T00:00:01.5Z",
        "messageId": "m",
    }
    assert mapping.apply(event) == {
        "out": {"name": "Ale", "count": 5},
        "kind": "fixed",
        "label": "none",
        "when": 1704067201500,
        "id": "m",
    }
    from transformers.errors import TransformError

    with pytest.raises(TransformError, match=r'Missing required value from \["messageId"\]'):
        mapping.apply({})


def test_a_broken_shipped_file_would_fail_the_import(tmp_path: Path) -> None:
    """The destination modules load their files at import time, so a typo stops start-up."""
    source = (TRANSFORMERS / "ga4" / "mapping" / "item.json").read_text()
    broken = _write(tmp_path, source.replace('"dest": "item_name"', '"dst": "item_name"'))
    with pytest.raises(MappingFileError, match=r"fields\[1\]: unknown key\(s\) \['dst'\]"):
        load_mapping(broken)
