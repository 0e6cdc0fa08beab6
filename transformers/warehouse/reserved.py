"""Postgres's reserved key words, as data: a name equal to one of them gets a `_` prefix, so that the
warehouse's users can write it in SQL without quotes.

Taken from PostgreSQL 16.2 with
    SELECT word FROM pg_get_keywords() WHERE catcode IN ('R', 'T') ORDER BY word
'R' is "reserved"; 'T' is "reserved (can be function or type name)": neither can name a column or a
table unquoted. The other categories ('U' unreserved, 'C' column name, e.g. `timestamp`) can.
"""

from __future__ import annotations

RESERVED = frozenset("""
all analyse analyze and any array as asc asymmetric both case cast check collate column constraint create
current_catalog current_date current_role current_time current_timestamp current_user default deferrable
desc distinct do else end except false fetch for foreign from grant group having in initially intersect
into lateral leading limit localtime localtimestamp not null offset on only or order placing primary
references returning select session_user some symmetric system_user table then to trailing true union
unique user using variadic when where window with
""".split())

RESERVED_FUNCTION_OR_TYPE = frozenset("""
authorization binary collation concurrently cross current_schema freeze full ilike inner is isnull join
left like natural notnull outer overlaps right similar tablesample verbose
""".split())

RESERVED_WORDS = RESERVED | RESERVED_FUNCTION_OR_TYPE
