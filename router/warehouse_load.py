"""Loading rows into a Postgres warehouse, in RudderStack's layout: one transaction per load, in the
warehouse (another database than Sluice's queue).

For each table: new columns are added as they appear (the warehouse's existing type wins), values that
cannot take the column's type become NULL plus a row in `rudder_discards`, the batch is COPYed into a
temporary staging table shaped like the target, and merged on `id`: matching rows deleted, then the latest
row per `id` (by `received_at`) inserted. A batch loaded twice gives the same rows. `users` merges
column by column: each keeps its latest non-null value by `received_at`, across loads.

Every identifier is quoted as one (psycopg2.sql.Identifier), after the naming rules made it safe; no
value is ever formatted into SQL. The warehouse password appears in no error this module raises.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from transformers import warehouse as wh

log = logging.getLogger("sluice.warehouse")

USERS_TABLE = "users"
LOCK_PREFIX = "sluice-warehouse:"
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


class WarehouseError(Exception):
    """The warehouse could not be reached or refused the load. The message never holds the password."""

    def __init__(self, message: str, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


@dataclass
class LoadResult:
    rows: int = 0
    discards: int = 0
    tables: dict[str, int] = field(default_factory=dict)


def connection_params(config: dict, connect_timeout: float = 10.0) -> dict:
    """psycopg2 connect() keywords from a POSTGRES destination's config (RudderStack's keys, or `url`)."""
    params: dict = {"connect_timeout": max(1, int(connect_timeout)), "application_name": "sluice-warehouse"}
    url = config.get("url")
    if isinstance(url, str) and url.strip():
        params["dsn"] = url.strip()
    else:
        params.update(host=str(config.get("host") or ""), dbname=str(config.get("database") or ""),
                      user=str(config.get("user") or ""), password=str(config.get("password") or ""))
        port = config.get("port")
        if port not in (None, ""):
            params["port"] = str(port)
    mode = config.get("sslMode")
    if isinstance(mode, str) and mode in _SSL_MODES:
        params["sslmode"] = mode
    return params


def secrets_of(config: dict) -> list[str]:
    """Strings that must never appear in a log line or an error: the password, and a URL's password."""
    out = []
    password = config.get("password")
    if isinstance(password, str) and password:
        out.append(password)
    url = config.get("url")
    if isinstance(url, str):
        m = re.match(r"^[a-z]+://[^:/@]*:([^@]*)@", url.strip())
        if m and m.group(1):
            out.append(m.group(1))
        m = re.search(r"password=(\S+)", url)
        if m:
            out.append(m.group(1))
    return out


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class PostgresWarehouse:
    """One warehouse destination's connection and cached schema."""

    def __init__(self, config: dict, connect_timeout: float = 10.0):
        self.config = config
        self.params = connection_params(config, connect_timeout)
        self.secrets = secrets_of(config)
        self.conn: psycopg2.extensions.connection | None = None
        self._schema_cache: dict[str, dict[str, dict[str, str]]] = {}  # schema -> table -> column -> type

    # -- connection --------------------------------------------------------------------------------

    def _connect(self) -> psycopg2.extensions.connection:
        if self.conn is None or self.conn.closed:
            try:
                self.conn = psycopg2.connect(**self.params)
            except psycopg2.Error as exc:
                raise WarehouseError(self._describe(exc)) from None
        return self.conn

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _describe(self, exc: BaseException) -> str:
        text = str(exc).strip() or type(exc).__name__
        return redact(" ".join(text.split())[:500], self.secrets)

    # -- loading -----------------------------------------------------------------------------------

    def load(self, schema: str, rows: Sequence[wh.Row], uuid_ts: datetime.datetime) -> LoadResult:
        """Load rows into `schema` in one warehouse transaction. Raises WarehouseError."""
        if not rows:
            return LoadResult()
        for attempt in (1, 2):
            conn = self._connect()
            try:
                with conn.cursor() as cur:
                    result = self._load(cur, schema, rows, uuid_ts)
                conn.commit()
                return result
            except (psycopg2.errors.UndefinedColumn, psycopg2.errors.UndefinedTable, psycopg2.errors.DuplicateColumn,
                    psycopg2.errors.DatatypeMismatch, psycopg2.errors.DuplicateTable) as exc:
                # The warehouse changed under our cached schema (another loader, an operator): read it again.
                with contextlib.suppress(Exception):
                    conn.rollback()
                self._schema_cache.pop(schema, None)
                if attempt == 2:
                    raise WarehouseError(self._describe(exc)) from None
            except psycopg2.Error as exc:
                with contextlib.suppress(Exception):
                    conn.rollback()
                self._schema_cache.pop(schema, None)
                if isinstance(exc, psycopg2.DataError | psycopg2.IntegrityError | psycopg2.errors.ProgramLimitExceeded):
                    # The rows are at fault, not the warehouse: trying the same rows again will not help.
                    raise WarehouseError(self._describe(exc), retryable=False) from None
                if isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError):
                    self.close()
                raise WarehouseError(self._describe(exc)) from None
        raise AssertionError("unreachable")

    def _load(self, cur, schema: str, rows: Sequence[wh.Row], uuid_ts: datetime.datetime) -> LoadResult:
        # One loader per schema at a time: DDL and merges of two processes never interleave.
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (LOCK_PREFIX + schema,))
        existing = self._existing(cur, schema)
        by_table: dict[str, list[wh.Row]] = defaultdict(list)
        for row in rows:
            by_table[row.table].append(row)
        batch = wh.merge_batch_schema(rows)  # first type seen wins, string always wins
        result = LoadResult()
        discards: list[wh.Discard] = []
        for n, (table, table_rows) in enumerate(by_table.items()):
            columns = self._ensure_table(cur, schema, table, batch[table], existing)  # the warehouse's type wins
            prepared = []
            for row in table_rows:
                values, row_discards = wh.fit_row(row, columns)
                prepared.append(values)
                discards += row_discards
            names = sorted(columns)
            self._stage_and_merge(cur, schema, table, f"sluice_stage_{n}", names, prepared, users=(table == USERS_TABLE))
            result.tables[table] = len(prepared)
            result.rows += len(prepared)
        if discards:
            self._ensure_discards(cur, schema, existing)
            names = list(wh.DISCARDS_COLUMNS)
            self._copy(cur, sql.Identifier(schema, wh.DISCARDS_TABLE), names,
                       ([d.values()[c] for c in names] for d in discards))
            result.discards = len(discards)
        return result

    def _existing(self, cur, schema: str) -> dict[str, dict[str, str]]:
        cached = self._schema_cache.get(schema)
        if cached is not None:
            return cached
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        cur.execute("SELECT table_name, column_name, data_type FROM information_schema.columns "
                    "WHERE table_schema = %s", (schema,))
        tables: dict[str, dict[str, str]] = defaultdict(dict)
        for table, column, data_type in cur.fetchall():
            tables[table][column] = wh.warehouse_type(data_type)
        self._schema_cache[schema] = dict(tables)
        return self._schema_cache[schema]

    def _ensure_table(self, cur, schema: str, table: str, wanted: dict[str, str],
                      existing: dict[str, dict[str, str]]) -> dict[str, str]:
        """Create the table or add the columns it lacks; returns the table's columns and their types
        (the warehouse's type wherever a column already existed)."""
        have = existing.get(table)
        ident = sql.Identifier(schema, table)
        if have is None:
            cols = sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(wh.POSTGRES_TYPES[t])) for c, t in sorted(wanted.items()))
            cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(ident, cols))
            if "id" in wanted:
                # The merge deletes by id: without an index every load would scan the whole table.
                cur.execute(sql.SQL("CREATE INDEX ON {} (id)").format(ident))
            have = existing[table] = dict(wanted)
            return have
        missing = {c: t for c, t in wanted.items() if c not in have}
        if missing:
            adds = sql.SQL(", ").join(
                sql.SQL("ADD COLUMN IF NOT EXISTS {} {}").format(sql.Identifier(c), sql.SQL(wh.POSTGRES_TYPES[t]))
                for c, t in sorted(missing.items()))
            cur.execute(sql.SQL("ALTER TABLE {} {}").format(ident, adds))
            have.update(missing)
        return have

    def _ensure_discards(self, cur, schema: str, existing: dict[str, dict[str, str]]) -> None:
        self._ensure_table(cur, schema, wh.DISCARDS_TABLE, dict(wh.DISCARDS_COLUMNS), existing)

    def _stage_and_merge(self, cur, schema: str, table: str, stage_name: str, names: list[str], rows: list[dict],
                         users: bool) -> None:
        target = sql.Identifier(schema, table)
        stage = sql.Identifier(stage_name)
        cols = sql.SQL(", ").join(map(sql.Identifier, names))
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(stage))
        cur.execute(sql.SQL("CREATE TEMPORARY TABLE {} (LIKE {}) ON COMMIT DROP").format(stage, target))
        self._copy(cur, stage, names, ([row.get(c) for c in names] for row in rows))
        if users:
            self._merge_users(cur, target, stage, names)
            return
        cur.execute(sql.SQL("DELETE FROM {t} AS t USING (SELECT DISTINCT id FROM {s}) AS s WHERE t.id = s.id").format(
            t=target, s=stage))
        cur.execute(sql.SQL("INSERT INTO {t} ({c}) SELECT DISTINCT ON (id) {c} FROM {s} "
                            "ORDER BY id, received_at DESC NULLS LAST").format(t=target, c=cols, s=stage))

    def _merge_users(self, cur, target, stage, names: list[str]) -> None:
        """Each column keeps its latest non-null value by received_at, over the stored row and the new ones."""
        cols = sql.SQL(", ").join(map(sql.Identifier, names))
        cur.execute(sql.SQL("INSERT INTO {s} ({c}) SELECT {c} FROM {t} WHERE id IN (SELECT id FROM {s})").format(
            s=stage, c=cols, t=target))
        picks = []
        for name in names:
            col = sql.Identifier(name)
            if name == "id":
                picks.append(col)
            elif name == "received_at":
                picks.append(sql.SQL("max(received_at)"))
            else:
                picks.append(sql.SQL("(array_agg({c} ORDER BY received_at DESC NULLS LAST) "
                                     "FILTER (WHERE {c} IS NOT NULL))[1]").format(c=col))
        cur.execute(sql.SQL("DELETE FROM {t} WHERE id IN (SELECT id FROM {s})").format(t=target, s=stage))
        cur.execute(sql.SQL("INSERT INTO {t} ({c}) SELECT {p} FROM {s} GROUP BY id").format(
            t=target, c=cols, p=sql.SQL(", ").join(picks), s=stage))

    @staticmethod
    def _copy(cur, table, names: Sequence[str], rows: Iterable[Sequence]) -> None:
        buf = io.StringIO()
        write = buf.write
        for row in rows:
            write(_copy_line(row))
        buf.seek(0)
        cur.copy_expert(sql.SQL("COPY {} ({}) FROM STDIN").format(
            table, sql.SQL(", ").join(map(sql.Identifier, names))).as_string(cur), buf)


# A row becomes one COPY text line with one translate for the whole line instead of one per value: fields
# are joined with a separator holding NUL, which no value contains (NUL is stripped before), and a NULL
# field is a lone NUL; after escaping, the separators become tabs and the lone NULs \N.
_SEP = "\x00\x01\x00"


def _copy_line(row: Sequence) -> str:
    line = _SEP.join(["\x00" if v is None else (v if type(v) is str else _copy_text(v)) for v in row])
    return line.translate(_COPY_ESCAPES).replace(_SEP, "\t").replace("\x00", "\\N") + "\n"


def _copy_text(value) -> str:
    if value is True:
        return "t"
    if value is False:
        return "f"
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, dict | list):
        value = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value).replace("\x00", "")
