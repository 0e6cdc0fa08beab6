"""Validation vocabulary for the workspace config: problems with JSON paths, and the per-destination
config rules. `config.workspace` walks the file and calls into here; nothing here reads files."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Problem:
    path: str  # JSON path, e.g. "$.sources[1].destinations[0].config.apiKey"
    message: str  # what was expected and what was found

    def format(self, file: str) -> str:
        return f"{file}: {self.path}: {self.message}"


_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def child(path: str, key: str | int) -> str:
    """The JSON path of `key` (an object key or an array index) under `path`."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _IDENT.match(key):
        return f"{path}.{key}"
    escaped = key.replace("\\", "\\\\").replace('"', '\\"')
    return f'{path}["{escaped}"]'


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, as a user reading the file would call it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "empty string" if value == "" else "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


MISSING = object()  # a key that is absent, distinct from an explicit null


def found(value: Any) -> str:
    return "nothing (key is missing)" if value is MISSING else json_type(value)


def expected(what: str, value: Any) -> str:
    return f"expected {what}, found {found(value)}"


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
WEBHOOK_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
AM_RESIDENCY = ("standard", "EU")
GA4_CLIENT_TYPES = ("gtag", "firebase")


class _Rules:
    """Collects problems for one destination's `config` object (keys are case-sensitive there:
    rudder-server keeps destination config as a plain map)."""

    def __init__(self, config: dict, path: str, problems: list[Problem]):
        self.config = config
        self.path = path
        self.problems = problems

    def add(self, key: str, message: str) -> None:
        self.problems.append(Problem(child(self.path, key), message))

    def required_string(self, key: str, why: str = "") -> str | None:
        value = self.config.get(key, MISSING)
        if isinstance(value, str) and value.strip():
            return value
        self.add(key, expected("non-empty string" + why, value))
        return None

    def optional_string(self, key: str) -> str | None:
        value = self.config.get(key, MISSING)
        if value is MISSING or value is None:
            return None
        if isinstance(value, str):
            return value
        self.add(key, expected("string", value))
        return None

    def one_of(self, key: str, choices: tuple[str, ...]) -> None:
        value = self.config.get(key, MISSING)
        if value is MISSING or value is None:
            return
        if value not in choices:
            shown = f"{value!r}" if isinstance(value, str) else json_type(value)
            self.add(key, f"expected one of {', '.join(repr(c) for c in choices)}, found {shown}")


def _ga4(r: _Rules) -> None:
    r.required_string("apiSecret")
    r.one_of("typesOfClient", GA4_CLIENT_TYPES)
    if r.config.get("typesOfClient") == "firebase":
        r.required_string("firebaseAppId", ' (typesOfClient is "firebase")')
    else:
        r.required_string("measurementId")


def _ga(r: _Rules) -> None:
    r.required_string("trackingID")


def _am(r: _Rules) -> None:
    r.required_string("apiKey")
    r.one_of("residencyServer", AM_RESIDENCY)


def _webhook(r: _Rules) -> None:
    url = r.required_string("webhookUrl")
    if url is not None:
        parts = urlsplit(url.strip())
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            # The URL itself may carry a token: say what is wrong without echoing it.
            what = f"scheme {parts.scheme!r}" if parts.scheme else "a string with no scheme"
            if parts.scheme.lower() in ("http", "https"):
                what = "a URL with no host"
            r.add("webhookUrl", f"expected an http:// or https:// URL, found {what}")
    r.one_of("webhookMethod", WEBHOOK_METHODS)
    headers = r.config.get("headers", MISSING)
    if headers is MISSING or headers is None:
        return
    if not isinstance(headers, list):
        r.add("headers", expected("array of {from, to} objects", headers))
        return
    hpath = child(r.path, "headers")
    for i, header in enumerate(headers):
        ipath = child(hpath, i)
        if not isinstance(header, dict):
            r.problems.append(Problem(ipath, expected("object {from, to}", header)))
            continue
        for key in ("from", "to"):
            value = header.get(key, MISSING)
            if not isinstance(value, str):
                r.problems.append(Problem(child(ipath, key), expected("string", value)))


def _postgres(r: _Rules) -> None:
    url = r.config.get("url", MISSING)
    if url is not MISSING and url is not None and not isinstance(url, str):
        r.add("url", expected("string (postgresql://user:password@host:port/database)", url))
    if not (isinstance(url, str) and url.strip()):  # a url stands in for the connection keys
        for key in ("host", "database", "user"):
            r.required_string(key)
    port = r.config.get("port", MISSING)
    if port is not MISSING and port is not None:
        ok = (isinstance(port, int) and not isinstance(port, bool)) or (
            isinstance(port, str) and port.isdigit()
        )
        if not ok:
            r.add("port", expected("port number (number or digit string)", port))
    mode = r.config.get("sslMode", MISSING)
    if mode is not MISSING and mode not in (None, ""):
        r.one_of("sslMode", ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"))
    frequency = r.config.get("syncFrequency", MISSING)
    if frequency is not MISSING and frequency not in (None, ""):
        try:
            float(frequency)
        except (TypeError, ValueError):
            r.add("syncFrequency", expected("minutes, as a number or a digit string", frequency))


# Required-key rules per destinationDefinition.name. Unknown types are accepted unchecked.
DESTINATION_RULES = {"GA4": _ga4, "GA": _ga, "AM": _am, "WEBHOOK": _webhook, "POSTGRES": _postgres}


def check_event_filtering(r: _Rules) -> None:
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
        lpath = child(r.path, key)
        for i, item in enumerate(events):
            ipath = child(lpath, i)
            if not isinstance(item, dict):
                r.problems.append(Problem(ipath, expected("object {eventName}", item)))
                continue
            name = item.get("eventName", MISSING)
            if not isinstance(name, str):
                r.problems.append(Problem(child(ipath, "eventName"), expected("string", name)))


def check_destination_config(dest_type: str, config: dict, path: str) -> list[Problem]:
    """Problems in one destination's `config` object at JSON path `path`."""
    problems: list[Problem] = []
    rules = _Rules(config, path, problems)
    rule = DESTINATION_RULES.get(dest_type)
    if rule is not None:
        rule(rules)
    check_event_filtering(rules)
    return problems
