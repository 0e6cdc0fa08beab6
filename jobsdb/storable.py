"""What Postgres can store: text without NUL or lone surrogates, JSON that jsonb accepts.

Nothing a client sends or a transformation returns may stop a stage, so every value headed for the
database either passes here or fails alone, with a reason (invariant 7). The fast path is one orjson
encode (which writes NaN and infinities as null, as JavaScript's JSON.stringify does); the careful
path runs only when orjson refuses the value."""

from __future__ import annotations

import json
from typing import Any

import orjson

_strict = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


class Unstorable(ValueError):
    """A value Postgres cannot hold; the message says why, in a few words."""


def text(value: Any, limit: int | None = None) -> str | None:
    """A string Postgres `text` accepts: NUL removed, lone surrogates replaced, optionally cut."""
    if value is None:
        return None
    s = value if isinstance(value, str) else str(value)
    if "\x00" in s:
        s = s.replace("\x00", "")
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        s = s.encode("utf-8", "replace").decode("utf-8")
    return s if limit is None or len(s) <= limit else s[:limit]


def strip_nul(value: Any) -> Any:
    """The value with NUL characters removed from every string and key (iterative: any depth)."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if not isinstance(value, dict | list):
        return value
    root: list = [value]
    stack: list[tuple[Any, Any, Any]] = [(root, 0, value)]  # (container, key, original child)
    while stack:
        parent, key, item = stack.pop()
        if isinstance(item, dict):
            copy: dict = {}
            parent[key] = copy
            for k, v in item.items():
                nk = k.replace("\x00", "") if isinstance(k, str) else k
                copy[nk] = v
                if isinstance(v, str):
                    copy[nk] = v.replace("\x00", "")
                elif isinstance(v, dict | list):
                    stack.append((copy, nk, v))
        elif isinstance(item, list):
            copy_list = list(item)
            parent[key] = copy_list
            for i, v in enumerate(copy_list):
                if isinstance(v, str):
                    copy_list[i] = v.replace("\x00", "")
                elif isinstance(v, dict | list):
                    stack.append((copy_list, i, v))
    return root[0]


def json_text(value: Any, max_bytes: int | None = None) -> str:
    """JSON text that jsonb accepts, NUL removed from strings. Raises Unstorable (lone surrogates,
    NaN or infinities, unencodable or too deeply nested values, more than max_bytes)."""
    out = _encode(value)
    if "\\u0000" in out:
        out = _encode(strip_nul(value))
    if max_bytes is not None and len(out) > max_bytes // 4 and len(out.encode("utf-8")) > max_bytes:
        raise Unstorable(f"{len(out.encode('utf-8'))} bytes, more than the limit of {max_bytes}")
    return out


def _encode(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        pass
    try:
        text_ = _strict(value)
    except ValueError as exc:
        if "Circular" in str(exc):
            raise Unstorable("a circular reference") from None
        raise Unstorable("NaN or Infinity, which JSON cannot carry") from None
    except RecursionError:
        raise Unstorable("nested too deeply") from None
    except TypeError as exc:
        raise Unstorable(f"not JSON: {exc}") from None
    try:
        text_.encode("utf-8")
    except UnicodeEncodeError:
        raise Unstorable("invalid Unicode (a lone surrogate)") from None
    return text_


def json_or_note(value: Any, max_bytes: int | None = None) -> str | None:
    """json_text, or — for a record that must be kept whatever it holds (a dead letter) — a small JSON
    object saying what could not be stored and an excerpt of it."""
    if value is None:
        return None
    try:
        return json_text(value, max_bytes)
    except Unstorable as exc:
        return orjson.dumps({"_sluice_unstorable": str(exc), "excerpt": excerpt(value)}).decode()


def excerpt(value: Any, limit: int = 2000) -> str:
    """A short text picture of any value, safe at any nesting depth (never recursion-limited)."""
    try:
        s = json.dumps(value, ensure_ascii=True, default=repr, check_circular=True)[:limit]
    except (ValueError, TypeError, RecursionError):
        s = f"<{type(value).__name__}>"
    return text(s, limit) or ""
