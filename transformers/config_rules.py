"""The vocabulary a destination uses to declare the rules of its `config` object (required keys, choices,
URLs, nested lists). Problems come out as (relative path, message); `config/` turns them into JSON
paths of the workspace file. Pure: no I/O, nothing of ours imported."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

MISSING = object()  # a key that is absent, distinct from an explicit null
Path = tuple[str | int, ...]  # keys / indexes below the destination's `config`


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


def found(value: Any) -> str:
    return "nothing (key is missing)" if value is MISSING else json_type(value)


def expected(what: str, value: Any) -> str:
    return f"expected {what}, found {found(value)}"


class Rules:
    """Collects the problems of one destination's `config` object (keys are case-sensitive there:
    rudder-server keeps destination config as a plain map)."""

    def __init__(self, config: dict):
        self.config = config
        self.problems: list[tuple[Path, str]] = []

    def add(self, path: str | Path, message: str) -> None:
        self.problems.append(((path,) if isinstance(path, str) else tuple(path), message))

    def get(self, key: str) -> Any:
        return self.config.get(key, MISSING)

    def required_string(self, key: str, why: str = "") -> str | None:
        value = self.get(key)
        if isinstance(value, str) and value.strip():
            return value
        self.add(key, expected("non-empty string" + why, value))
        return None

    def optional_string(self, key: str) -> str | None:
        value = self.get(key)
        if value is MISSING or value is None:
            return None
        if isinstance(value, str):
            return value
        self.add(key, expected("string", value))
        return None

    def one_of(self, key: str, choices: tuple[str, ...]) -> None:
        value = self.get(key)
        if value is MISSING or value is None:
            return
        if value not in choices:
            shown = f"{value!r}" if isinstance(value, str) else json_type(value)
            self.add(key, f"expected one of {', '.join(repr(c) for c in choices)}, found {shown}")

    def http_url(self, key: str) -> None:
        url = self.required_string(key)
        if url is None:
            return
        parts = urlsplit(url.strip())
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            # The URL itself may carry a token: say what is wrong without echoing it.
            what = f"scheme {parts.scheme!r}" if parts.scheme else "a string with no scheme"
            if parts.scheme.lower() in ("http", "https"):
                what = "a URL with no host"
            self.add(key, f"expected an http:// or https:// URL, found {what}")

    def number_like(self, key: str, what: str) -> None:
        """An optional number, or a string of one (RudderStack's UI stores many numbers as strings)."""
        value = self.get(key)
        if value is MISSING or value in (None, ""):
            return
        if isinstance(value, bool):
            self.add(key, expected(what, value))
            return
        try:
            float(value)
        except (TypeError, ValueError):
            self.add(key, expected(what, value))
