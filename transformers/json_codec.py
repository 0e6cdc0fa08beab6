"""Fast JSON for the hot path (payload encoding, the V8 round trip, jsonb decoding) with the standard
library's results: orjson does the work, and `json` takes over wherever the two would differ.

Where orjson differs from `json` and what is done about it:
- non-str dict keys, integers beyond 64 bits, lone surrogates, types `json` does not know (datetime,
  dataclasses, subclasses): orjson raises, so `json` encodes (or raises the same error as before);
- NaN and ±Infinity: orjson writes `null` where `json` writes `NaN` (or raises, with allow_nan=False);
  when orjson's output holds a `null`, the value is checked for non-finite floats and `json` encodes it
  if there is one;
- decoding integers beyond 64 bits: orjson returns a float, so text with a run of 19 or more digits is
  decoded by `json`; `NaN` / `Infinity` literals, 1e400 and lone surrogate escapes make orjson raise,
  and `json` decodes them as before.
uuid.UUID and enum members are the one difference left: orjson encodes them, `json` raises. Nothing on
the hot path holds them (everything in it was decoded from JSON).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode
_encode_strict = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_DIGITS_AS_ZERO = bytes(48 if 48 <= b <= 57 else 32 for b in range(256))
_LONG_RUN = b"0" * 19
_orjson_dumps = orjson.dumps
_orjson_loads = orjson.loads


def has_non_finite(value: Any) -> bool:
    """True when a NaN or an infinity is somewhere in this JSON-shaped value (iterative: this runs on
    whole batches, and recursion would cost several times more)."""
    stack = [value]
    pop, push = stack.pop, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind is str or kind is int or item is None or kind is bool:
            continue
        if kind is dict:
            push(item.values())
        elif kind is list:
            push(item)
        elif isinstance(item, float):
            if item - item != 0.0:  # NaN - NaN and inf - inf are NaN
                return True
        elif isinstance(item, dict):
            push(item.values())
        elif isinstance(item, (list, tuple)):
            push(item)
    return False


def dumps_bytes(value: Any) -> bytes | None:
    """orjson's compact UTF-8 encoding, or None where it would differ from `json.dumps`."""
    try:
        out = _orjson_dumps(value, option=_OPTIONS)
    except TypeError:
        return None
    if b"null" in out and has_non_finite(value):
        return None
    return out


def dumps(value: Any) -> str:
    """`json.dumps(value, ensure_ascii=False, separators=(",", ":"))`, faster. NaN stays `NaN`."""
    out = dumps_bytes(value)
    return _encode(value) if out is None else out.decode()


def dumps_strict(value: Any) -> str:
    """As `dumps`, with allow_nan=False: NaN or an infinity raises ValueError, as `json` does."""
    out = dumps_bytes(value)
    return _encode_strict(value) if out is None else out.decode()


def loads(text: str | bytes) -> Any:
    """`json.loads(text)`, faster."""
    try:
        data = text.encode() if isinstance(text, str) else text
    except UnicodeEncodeError:  # lone surrogates: only json takes them
        return json.loads(text)
    # A run of 19 digits may be an integer orjson would turn into a float. (A regular expression
    # costs twenty times more than mapping every digit to "0" and looking for the run.)
    if _LONG_RUN not in data.translate(_DIGITS_AS_ZERO):
        try:
            return _orjson_loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)
