"""Warehouse identifiers: schema, table and column names in RudderStack's form, always `[a-z0-9_]{1,63}`.

A name keeps its runs of ASCII letters and digits, joined with `_`, split into snake_case words; a
leading `_` is kept; a leading digit gets a `_`; it is cut to 63 bytes (Postgres's identifier limit);
a reserved key word gets a `_`. Everything else (quotes, semicolons, `--`, spaces, look-alike letters
such as Cyrillic `а` or full-width `ｓ`) is a separator, so no input can escape the identifier.
A name that keeps nothing becomes `_` + 12 hex digits of a hash of the original (FALLBACK_PREFIX).
"""

from __future__ import annotations

import functools
import hashlib
import re

from transformers.warehouse.reserved import RESERVED_WORDS

MAX_IDENTIFIER_BYTES = 63  # NAMEDATALEN - 1; the output is ASCII, so bytes and characters agree

# Tables the warehouse layout writes itself. An event table with one of the first names gets a `_`
# prefix (RudderStack's rule); `users` and `identifies` always do, and so does the discards table,
# which an event table must never share.
LAYOUT_TABLES = frozenset({"tracks", "pages", "screens", "aliases", "groups", "accounts"})
ISOLATED_TABLES = frozenset({"users", "identifies", "rudder_discards"})

_RUNS = re.compile(r"[A-Za-z0-9]+")
_LEADING_UNDERSCORES = re.compile(r"_*")

# Word splitting (ASCII only: the input is already runs of [A-Za-z0-9] joined with "_"). The order of
# the alternatives matters: the first that matches at a position wins.
_LOWER_WORD = r"[A-Z]?[a-z]+(?=_|[A-Z]|$)"            # word, Word (before a break, a capital or the end)
_UPPER_WORD = r"[A-Z]+(?=_|[A-Z][a-z]|$)"             # HTML in HTMLParser
_ORDINALS = (r"[0-9]*(?:1ST|2ND|3RD|(?![123])[0-9]TH)(?=\b|[a-z_])",
             r"[0-9]*(?:1st|2nd|3rd|(?![123])[0-9]th)(?=\b|[A-Z_])")
_WORDS_DIGITS_ATTACHED = re.compile("|".join((
    r"[A-Z]?[a-z]+[0-9]+", r"[A-Z]+[0-9]+",            # v2, Case123, HTML5
    r"[0-9]+[A-Z]?[a-z]+", r"[0-9]+[A-Z]+",            # 2fa, 3D
    _LOWER_WORD, _UPPER_WORD, r"[A-Z]?[a-z]+", r"[A-Z]+", *_ORDINALS, r"[0-9]+",
)))
_WORDS_DIGITS_DIVIDED = re.compile("|".join((
    _LOWER_WORD, _UPPER_WORD, r"[A-Z]?[a-z]+", r"[A-Z]+", *_ORDINALS, r"[0-9]+",
)))

FALLBACK_PREFIX = "_"


def _fallback(raw: str) -> str:
    """The identifier for a name with no ASCII letter or digit: stable across processes and runs."""
    digest = hashlib.blake2b(raw.encode("utf-8", "surrogatepass"), digest_size=6).hexdigest()
    return FALLBACK_PREFIX + digest


def _snake(raw: str, words: re.Pattern, keep_leading_underscores: bool) -> str:
    """snake_case of the ASCII runs, a kept leading `_`, a `_` before a leading digit; not cut."""
    joined = "_".join(_RUNS.findall(raw))
    name = "_".join(w.lower() for w in words.findall(joined))
    if keep_leading_underscores and raw.startswith("_"):
        name = _LEADING_UNDERSCORES.match(raw).group() + name
    elif name[:1].isdigit():
        name = "_" + name
    return name


def _identifier(raw: str, words: re.Pattern) -> str:
    name = _snake(raw, words, True)[:MAX_IDENTIFIER_BYTES]
    if not name:
        return _fallback(raw)
    if name in RESERVED_WORDS:
        name = "_" + name
    return name


@functools.lru_cache(maxsize=1 << 16)
def _column_attached(raw: str) -> str:
    return _identifier(raw, _WORDS_DIGITS_ATTACHED)


@functools.lru_cache(maxsize=1 << 16)
def _column_divided(raw: str) -> str:
    return _identifier(raw, _WORDS_DIGITS_DIVIDED)


def column_name(name: str, *, underscore_divide_numbers: bool = False) -> str:
    """The column for a (flattened) key: "Plan Type" -> plan_type, "2fa" -> _2fa, "select" -> _select,
    "button clicked v2" -> button_clicked_v2 (button_clicked_v_2 with underscore_divide_numbers)."""
    return (_column_divided if underscore_divide_numbers else _column_attached)(name)


def column_namer(underscore_divide_numbers: bool):
    """column_name with the setting bound: one cached call per key on the hot path."""
    return _column_divided if underscore_divide_numbers else _column_attached


@functools.lru_cache(maxsize=1 << 14)
def event_value(event_name: str, underscore_divide_numbers: bool = False) -> str:
    """The `event` column of a track: the event name in table-name form, not cut and without the
    reserved-word prefix ("Order Completed" -> order_completed, "select" -> select); the fallback
    identifier when nothing is left. "" for a blank name."""
    if not event_name.strip():
        return ""
    words = _WORDS_DIGITS_DIVIDED if underscore_divide_numbers else _WORDS_DIGITS_ATTACHED
    return _snake(event_name, words, True) or _fallback(event_name)


@functools.lru_cache(maxsize=1 << 14)
def table_name(event_name: str, *, underscore_divide_numbers: bool = False) -> str:
    """The table of a track event: the column-name form, with a `_` prefix for names of the layout's own
    tables (tracks, pages, screens, aliases, groups, accounts, users, identifies, rudder_discards)."""
    name = column_name(event_name, underscore_divide_numbers=underscore_divide_numbers)
    if name in LAYOUT_TABLES or name in ISOLATED_TABLES:
        name = "_" + name
    return name


def schema_name(namespace: str | None, source_name: str | None) -> str:
    """The warehouse schema: the destination's `namespace`, else the source name, snake-cased;
    `stringempty` when nothing is left. Also prefixed with `_`: reserved words, and names Postgres keeps
    for itself (`pg_*`, `information_schema`), where a CREATE SCHEMA would fail."""
    raw = namespace if isinstance(namespace, str) and namespace.strip() else source_name
    raw = raw if isinstance(raw, str) else ""
    name = _snake(raw, _WORDS_DIGITS_ATTACHED, False)[:MAX_IDENTIFIER_BYTES] or "stringempty"
    if name in RESERVED_WORDS or name.startswith("pg_") or name == "information_schema":
        name = ("_" + name)[:MAX_IDENTIFIER_BYTES]
    return name
