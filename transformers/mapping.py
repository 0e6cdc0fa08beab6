"""The generic mapper every destination shares: reads `<dest>/mapping/*.json` field mappings
(validated when loaded) and applies them to a Segment-spec event, plus the delivery-request shape.

A field mapping file is `{"description": str, "fields": [rule, ...]}`; a table file is
`{"description": str, "mappings": {key: {"options": {...}, "fields": [rule, ...]}}}` for destinations
that pick a mapping by event name. A rule is:

    {"dest": "params.page_title",          # dotted path in the output
     "source": ["properties.title", "context.page.title"],   # first non-empty wins
     "value": "constant",                  # instead of source: a fixed value
     "required": false, "default": ..., "type": "string", "max_length": 100}
"""

from __future__ import annotations

import datetime
import functools
import json
import math
import re
from collections.abc import Callable, Iterable
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers.errors import TransformError


class MappingFileError(ValueError):
    """A mapping file is malformed; raised when the destination module loads it."""


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


# ---------------------------------------------------------------- paths and values


def get_path(obj: Any, path: str) -> Any:
    """Value at a dotted path (`context.page.url`, `properties.products.0.sku`), or MISSING."""
    return walk_path(obj, split_path(path))


@functools.lru_cache(maxsize=4096)
def split_path(path: str) -> tuple[str, ...]:
    return tuple(path.split("."))


def walk_path(obj: Any, parts: tuple[str, ...]) -> Any:
    """get_path with the path already split (mapping rules split theirs once, when loaded)."""
    cur = obj
    for part in parts:
        if type(cur) is dict:  # the common case first: isinstance against an ABC is slow
            cur = cur.get(part, MISSING)
            if cur is MISSING:
                return MISSING
        elif isinstance(cur, MappingABC):
            if part not in cur:
                return MISSING
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return MISSING
    return cur


def is_empty(value: Any) -> bool:
    if value is MISSING or value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    if isinstance(value, (dict, list)):
        return len(value) == 0
    return False


def first_present(obj: Any, paths: Iterable[str]) -> Any:
    for path in paths:
        value = get_path(obj, path)
        if not is_empty(value):
            return value
    return MISSING


def set_path(out: dict, path: str, value: Any) -> None:
    set_parts(out, split_path(path), value)


def set_parts(out: dict, parts: tuple[str, ...], value: Any) -> None:
    cur = out
    for part in parts[:-1]:
        nxt = cur.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[part] = nxt
        cur = nxt
    cur[parts[-1]] = value


def parse_timestamp(value: Any) -> datetime.datetime | None:
    """An ISO-8601 string (or epoch milliseconds) as an aware UTC datetime; None if unparseable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            return datetime.datetime.fromtimestamp(value / 1000, tz=datetime.UTC)
        except (OverflowError, ValueError, OSError):  # NaN, or past year 9999 / before year 1
            return None
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value.strip())
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=datetime.UTC)
        return parsed.astimezone(datetime.UTC)
    except (ValueError, OverflowError):  # unparseable, or out of range once moved to UTC
        return None


def epoch_ms(moment: datetime.datetime) -> int:
    # integer arithmetic: float timestamps lose a millisecond now and then
    delta = moment - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


_INT_RE = re.compile(r"^[+-]?\d+$")


def to_number(value: Any) -> int | float | None:
    """A JSON number from a number or numeric string; None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        text = value.strip()
        if _INT_RE.match(text):
            return int(text)
        try:
            number = float(text)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def to_string(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    return None


def to_boolean(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if value in (1, "1", "true", "True", "TRUE"):
        return True
    if value in (0, "0", "false", "False", "FALSE"):
        return False
    return None


def to_integer(value: Any) -> int | None:
    number = to_number(value)
    if number is None:
        return None
    return int(round(number))


def to_epoch_ms(value: Any) -> int | None:
    moment = parse_timestamp(value)
    return None if moment is None else epoch_ms(moment)


def _as_is(value: Any) -> Any:
    return value


# A conversion that returns None means "not a valid value": the field counts as missing.
CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "any": _as_is,
    "string": to_string,
    "number": to_number,
    "integer": to_integer,
    "boolean": to_boolean,
    "epoch_ms": to_epoch_ms,
}


def flatten(obj: Any, prefix: str = "", sep: str = "_") -> dict[str, Any]:
    """Nested objects and arrays as one level: {"a": {"b": 1}, "c": [2]} -> {"a_b": 1, "c_0": 2}."""
    out: dict[str, Any] = {}
    if isinstance(obj, MappingABC):
        items: Iterable[tuple[str, Any]] = ((str(k), v) for k, v in obj.items())
    elif isinstance(obj, list):
        items = ((str(i), v) for i, v in enumerate(obj))
    else:
        return {prefix: obj} if prefix else {}
    for key, value in items:
        name = f"{prefix}{sep}{key}" if prefix else key
        if isinstance(value, (MappingABC, list)):
            out.update(flatten(value, name, sep))
        else:
            out[name] = value
    return out


# ---------------------------------------------------------------- mapping files

_RULE_KEYS = {"dest", "source", "value", "required", "default", "type", "max_length", "comment"}


@dataclass(frozen=True)
class FieldRule:
    dest: str
    sources: tuple[str, ...] = ()
    value: Any = MISSING
    required: bool = False
    default: Any = MISSING
    type: str = "any"
    max_length: int | None = None
    # Prepared once when the rule is built, not per event: split paths and the converter.
    _source_parts: tuple[tuple[str, ...], ...] = field(init=False, repr=False, compare=False)
    _dest_parts: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _convert: Callable[[Any], Any] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_source_parts", tuple(split_path(p) for p in self.sources))
        object.__setattr__(self, "_dest_parts", split_path(self.dest))
        # "any" converts nothing: skip the call
        object.__setattr__(self, "_convert", None if self.type == "any" else CONVERTERS[self.type])

    def resolve(self, root: Any) -> Any:
        if self.value is not MISSING:
            return self.value
        convert = self._convert
        for parts in self._source_parts:
            raw = root
            for part in parts:  # walk_path, inlined for plain dicts: this loop runs for every rule
                if type(raw) is dict:
                    raw = raw.get(part, MISSING)
                else:
                    raw = walk_path(raw, (part,))
                if raw is MISSING:
                    break
            if raw is MISSING or raw is None:
                continue
            if type(raw) is str:
                if not raw.strip():
                    continue
            elif is_empty(raw):
                continue
            value = raw if convert is None else convert(raw)
            if value is None:
                continue
            if self.max_length is not None and isinstance(value, str):
                value = value[: self.max_length]
            return value
        if self.default is not MISSING:
            return self.default
        if self.required:
            raise TransformError(f"Missing required value from {json.dumps(list(self.sources))}")
        return MISSING


@dataclass(frozen=True)
class Mapping:
    """An ordered list of field rules; `apply` fills an output dict from an event."""

    name: str
    fields: tuple[FieldRule, ...]
    options: dict[str, Any] = field(default_factory=dict)
    _source_keys: dict[str, frozenset[str]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def apply(self, root: Any, out: dict | None = None) -> dict:
        out = {} if out is None else out
        for rule in self.fields:
            value = rule.resolve(root)
            if value is not MISSING:
                parts = rule._dest_parts
                if len(parts) == 1:
                    out[parts[0]] = value
                else:
                    set_parts(out, parts, value)
        return out

    def source_keys(self, prefix: str) -> set[str]:
        """First path segment after `prefix` of every source, e.g. prefix "properties." -> {"total"}."""
        keys = self._source_keys.get(prefix)
        if keys is None:
            keys = self._source_keys[prefix] = frozenset(
                path[len(prefix) :].split(".")[0]
                for rule in self.fields
                for path in rule.sources
                if path.startswith(prefix)
            )
        return set(keys)  # a set of the caller's own: callers add to it


def _fail(where: str, message: str) -> MappingFileError:
    return MappingFileError(f"{where}: {message}")


def _parse_rule(raw: Any, where: str) -> FieldRule:
    if not isinstance(raw, dict):
        raise _fail(where, "a field rule must be an object")
    unknown = sorted(set(raw) - _RULE_KEYS)
    if unknown:
        raise _fail(where, f"unknown key(s) {unknown}; allowed: {sorted(_RULE_KEYS)}")
    dest = raw.get("dest")
    if not isinstance(dest, str) or not dest or any(not p for p in dest.split(".")):
        raise _fail(where, "'dest' must be a non-empty dotted path string")
    has_source, has_value = "source" in raw, "value" in raw
    if has_source == has_value:
        raise _fail(where, f"field {dest!r} needs exactly one of 'source' or 'value'")
    sources: tuple[str, ...] = ()
    if has_source:
        source = raw["source"]
        source_list = [source] if isinstance(source, str) else source
        if (
            not isinstance(source_list, list)
            or not source_list
            or not all(isinstance(s, str) and s for s in source_list)
        ):
            raise _fail(where, f"field {dest!r}: 'source' must be a path or a non-empty list of paths")
        sources = tuple(source_list)
    required = raw.get("required", False)
    if not isinstance(required, bool):
        raise _fail(where, f"field {dest!r}: 'required' must be true or false")
    type_name = raw.get("type", "any")
    if type_name not in CONVERTERS:
        raise _fail(where, f"field {dest!r}: unknown type {type_name!r}; known: {sorted(CONVERTERS)}")
    max_length = raw.get("max_length")
    if max_length is not None and (
        not isinstance(max_length, int) or isinstance(max_length, bool) or max_length <= 0
    ):
        raise _fail(where, f"field {dest!r}: 'max_length' must be a positive integer")
    if required and "default" in raw:
        raise _fail(where, f"field {dest!r}: a required field cannot have a default")
    return FieldRule(
        dest=dest,
        sources=sources,
        value=raw.get("value", MISSING),
        required=required,
        default=raw.get("default", MISSING),
        type=type_name,
        max_length=max_length,
    )


def _parse_fields(raw: Any, where: str) -> tuple[FieldRule, ...]:
    if not isinstance(raw, list):
        raise _fail(where, "'fields' must be a list of field rules")
    rules = tuple(_parse_rule(item, f"{where}.fields[{i}]") for i, item in enumerate(raw))
    seen: set[str] = set()
    for rule in rules:
        if rule.dest in seen:
            raise _fail(where, f"destination field {rule.dest!r} is mapped twice")
        seen.add(rule.dest)
    return rules


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise _fail(str(path), f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _fail(str(path), "the top level must be an object")
    return data


def load_mapping(path: str | Path) -> Mapping:
    """Load and validate a `{"fields": [...]}` mapping file."""
    path = Path(path)
    data = _read(path)
    unknown = sorted(set(data) - {"description", "fields"})
    if unknown or "fields" not in data:
        raise _fail(str(path), f"expected keys 'description' and 'fields', got {sorted(data)}")
    return Mapping(name=path.stem, fields=_parse_fields(data["fields"], str(path)))


OptionSpec = type | tuple[type, ...] | frozenset | set


def load_mapping_table(
    path: str | Path, options_schema: dict[str, OptionSpec] | None = None
) -> dict[str, Mapping]:
    """Load and validate a `{"mappings": {key: {"options", "fields"}}}` table file.

    `options_schema` names the allowed option keys: each maps to a type (or tuple of types) the
    value must have, or to a set of allowed values.
    """
    path = Path(path)
    data = _read(path)
    unknown = sorted(set(data) - {"description", "mappings"})
    if unknown or not isinstance(data.get("mappings"), dict):
        raise _fail(str(path), "expected keys 'description' and 'mappings' (an object)")
    schema = options_schema or {}
    table: dict[str, Mapping] = {}
    for key, entry in data["mappings"].items():
        where = f"{path}: mappings[{key!r}]"
        if not isinstance(entry, dict) or set(entry) - {"options", "fields", "comment"}:
            raise MappingFileError(f"{where}: an entry has only 'options', 'fields' and 'comment'")
        options = entry.get("options", {})
        if not isinstance(options, dict):
            raise MappingFileError(f"{where}: 'options' must be an object")
        for name, value in options.items():
            if name not in schema:
                raise MappingFileError(f"{where}: unknown option {name!r}; allowed: {sorted(schema)}")
            spec = schema[name]
            ok = isinstance(value, spec) if isinstance(spec, (type, tuple)) else value in spec
            if not ok:
                raise MappingFileError(f"{where}: option {name!r} has a bad value {value!r}")
        table[key] = Mapping(name=key, fields=_parse_fields(entry.get("fields", []), where), options=options)
    return table


# ---------------------------------------------------------------- delivery requests


def delivery_request(
    endpoint: str,
    *,
    method: str = "POST",
    headers: dict | None = None,
    params: dict | None = None,
    json_body: dict | None = None,
    json_array: dict | None = None,
    form: dict | str | None = None,
    batch_key: str | None = None,
) -> dict:
    """A delivery request in rudder-transformer's output shape; `batch_key` marks what may merge."""
    request = {
        "method": method,
        "endpoint": endpoint,
        "headers": headers or {},
        "params": params or {},
        "body": {"JSON": json_body or {}, "JSON_ARRAY": json_array or {}, "XML": {}, "FORM": form or {}},
    }
    if batch_key is not None:
        request["batch_key"] = batch_key
    return request


def event_time(event: dict) -> datetime.datetime | None:
    """When the event happened: `timestamp`, else `originalTimestamp`."""
    for key in ("timestamp", "originalTimestamp"):
        moment = parse_timestamp(event.get(key))
        if moment is not None:
            return moment
    return None


def external_id(event: dict, id_type: str) -> Any:
    """The id of `context.externalId[]` entry with this type (case-insensitive), or MISSING."""
    entries = get_path(event, "context.externalId")
    if isinstance(entries, list):
        for entry in entries:
            if isinstance(entry, dict) and str(entry.get("type", "")).lower() == id_type.lower():
                if not is_empty(entry.get("id")):
                    return entry["id"]
    return MISSING


def mapping_folder(module_file: str) -> Path:
    return Path(module_file).resolve().parent / "mapping"
