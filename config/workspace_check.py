"""Validation vocabulary for the workspace config: problems with JSON paths, and the per-destination
config rules. `config.workspace` walks the file and calls into here; nothing here reads files."""

from __future__ import annotations

import re
from dataclasses import dataclass

from transformers.config_rules import MISSING, Rules, expected, found, json_type
from transformers.registry import SPECS, spec_of

__all__ = ["MISSING", "Problem", "child", "expected", "found", "json_type", "check_destination_config",
           "unsupported_type", "unsupported_warehouse", "WAREHOUSE_TYPES", "SUPPORTED_WAREHOUSE_TYPES"]


@dataclass(frozen=True)
class Problem:
    path: str  # JSON path, e.g. "$.sources[1].destinations[0].config.apiKey"
    message: str  # what was expected and what was found
    warning: bool = False  # True: only its destination is affected (it is off), the file loads

    def format(self, file: str) -> str:
        return f"{file}: {'warning: ' if self.warning else ''}{self.path}: {self.message}"


_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def child(path: str, key: str | int) -> str:
    """The JSON path of `key` (an object key or an array index) under `path`."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _IDENT.match(key):
        return f"{path}.{key}"
    escaped = key.replace("\\", "\\\\").replace('"', '\\"')
    return f'{path}["{escaped}"]'


# Warehouse destinations go to the batch router instead of the per-event router.
WAREHOUSE_TYPES = frozenset(
    {
        "POSTGRES",
        "RS",
        "BQ",
        "SNOWFLAKE",
        "CLICKHOUSE",
        "MSSQL",
        "AZURE_SYNAPSE",
        "DELTALAKE",
        "S3_DATALAKE",
        "GCS_DATALAKE",
        "AZURE_DATALAKE",
    }
)

# The warehouse types Sluice loads today; the others are recognised, warned about by `config check`, and
# their events dead-lettered with unsupported_warehouse() (replayable once support exists).
SUPPORTED_WAREHOUSE_TYPES = frozenset({"POSTGRES"})


def unsupported_warehouse(dest_type: str) -> str:
    return (f"warehouse destination type {dest_type} is not supported yet (only "
            f"{', '.join(sorted(SUPPORTED_WAREHOUSE_TYPES))} is); replay these events once it is")


EVENT_FILTERING_OPTIONS = ("disable", "whitelistedEvents", "blacklistedEvents")


def check_event_filtering(r: Rules) -> None:
    option = r.config.get("eventFilteringOption", MISSING)
    if option is not MISSING and option is not None:
        r.one_of("eventFilteringOption", EVENT_FILTERING_OPTIONS)
    for key in ("whitelistedEvents", "blacklistedEvents"):
        events = r.config.get(key, MISSING)
        if events is MISSING or events is None:
            continue
        if not isinstance(events, list):
            r.add(key, expected("array of {eventName} objects", events))
            continue
        for i, item in enumerate(events):
            if not isinstance(item, dict):
                r.add((key, i), expected("object {eventName}", item))
                continue
            name = item.get("eventName", MISSING)
            if not isinstance(name, str):
                r.add((key, i, "eventName"), expected("string", name))


def check_destination_config(dest_type: str, config: dict, path: str) -> list[Problem]:
    """Problems in one destination's `config` object at JSON path `path`: the rules the destination
    declares (transformers/<dest>/spec.py) and the event filtering every destination shares."""
    rules = Rules(config)
    spec = spec_of(dest_type)
    if spec is not None:
        spec.check(rules)
    check_event_filtering(rules)
    out = []
    for rel, message in rules.problems:
        where = path
        for key in rel:
            where = child(where, key)
        out.append(Problem(where, message))
    return out


def unsupported_type(dest_type: str) -> str | None:
    """Why Sluice cannot deliver to this destination type, or None when it can."""
    if dest_type in WAREHOUSE_TYPES and dest_type not in SUPPORTED_WAREHOUSE_TYPES:
        return unsupported_warehouse(dest_type)
    if spec_of(dest_type) is None:
        known = ", ".join(sorted(SPECS))
        return f"destination type {dest_type or '(none)'} is not supported (Sluice delivers to {known})"
    return None


def schema_problems(schema: dict, config: dict, path: str) -> list[Problem]:
    """A destination's config checked against its definition's `configSchema` (RudderStack's JSON Schema
    for that destination), when the workspace carries one. Messages name the rule, never the value (a
    config holds secrets)."""
    import jsonschema

    try:
        validator_class = jsonschema.validators.validator_for(schema)
        validator_class.check_schema(schema)
    except jsonschema.SchemaError:
        return [Problem(path, "the destination definition's configSchema is not a valid JSON Schema; not used")]
    out = []
    for error in sorted(validator_class(schema).iter_errors(config), key=lambda e: list(e.absolute_path)):
        where = path
        for key in error.absolute_path:
            where = child(where, key)
        if error.validator == "required":
            missing = error.message.split("'")[1] if error.message.count("'") >= 2 else "a key"
            out.append(Problem(child(where, missing), "required by the destination's configSchema, found nothing"))
            continue
        rule = str(error.validator_value)
        rule = rule if len(rule) <= 80 else rule[:77] + "..."
        out.append(Problem(where, f"does not match the destination's configSchema ({error.validator}: {rule})"))
    return out
