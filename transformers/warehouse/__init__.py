"""Warehouse rows in RudderStack's table layout (POSTGRES first): pure code the batch router's loader calls
to turn events into rows and to reconcile a batch's column types with the warehouse's. No I/O.

Layout (facts: reference/warehouse-schema.md, RudderStack's public warehouse docs):
    track     -> `tracks` (common + context columns, `event`, `event_text`; no properties)
                 and the event's own table table_name(event) (the same + flattened properties)
    identify  -> `identifies` (traits as top-level columns, a `user_id` trait as `_user_id`, context)
                 and `users` (id = userId; traits, context, sent_at/timestamp/original_timestamp,
                 received_at, uuid_ts) unless `skipUsersTable` or the userId is empty
    page, screen, group, alias -> `pages` (+ `name`), `screens` (+ `name`), `groups` (traits, `group_id`),
                 `aliases` (traits, `previous_id`)
Every row has the common columns `id` (messageId), `anonymous_id`, `user_id`, `sent_at`, `timestamp`,
`received_at`, `original_timestamp`, `channel`, `context_ip` (context.ip, else the request IP),
`context_request_ip`, `context_source_id`/`_type`, `context_destination_id`/`_type`, `uuid_ts`
(columns whose value is absent are left out). Event keys never overwrite them.

API
    schema_name(namespace, source_name) -> str
        The warehouse schema: namespace, else the source name, snake-cased; "stringempty" if empty.
    event_rows(event, *, source_id, source_type, destination_id, destination_type, config, uuid_ts)
            -> list[Row]
        The rows of one event. `config` is the destination's config (jsonPaths, skipUsersTable,
        skipTracksTable, underscoreDivideNumbers, allowUsersContextTraits); the event's
        `integrations.<destination_type>.options` (jsonPaths, skipUsersTable, skipTracksTable) and
        `integrations.DATA_WAREHOUSE.options.jsonPaths` count too. `uuid_ts` is the load time.
        Raises Discarded(reason) for an event that cannot be loaded at all.
    Row(table, id, received_at, columns)
        columns = {column: (warehouse type, value)}. Values: None, str, int, float, bool; datetimes are
        ISO-8601 UTC strings with milliseconds ("2020-08-24T20:19:05.560Z"); arrays and jsonPaths values
        are JSON text (JsonText, a str). `id` is the merge key (the user id for `users`);
        `received_at` is an aware datetime. Row.values(), Row.types(). USERS_TABLE = "users" (the
        table the loader merges column by column).
    Discarded(TransformError): .reason says why (not an object, unknown type, > MAX_COLUMNS columns).
    table_name(event_name, *, underscore_divide_numbers=False) -> str   the event's own table
    column_name(name, *, underscore_divide_numbers=False) -> str        a key's column
        Both always give [a-z0-9_]{1,63}; a name with no ASCII letter or digit gets a stable fallback,
        "_" + 12 hex digits of a hash of the name.

    Types: INT, FLOAT, BOOLEAN, DATETIME, STRING, JSON ("int", "float", ...), WAREHOUSE_TYPES,
        POSTGRES_TYPES {type: Postgres column type}, warehouse_type(postgres data_type) -> type.
    merge_batch_schema(rows) -> {table: {column: type}}: first type wins, string always wins.
    target_schema(batch_schema, warehouse_schema) -> {table: {column: type}}: the warehouse's type wins.
    new_columns(batch_schema, warehouse_schema) -> {table: {column: type}}: what to create or add.
    convert(value, value_type, column_type) -> (value, None) or (None, reason)
    fit_row(row, column_types) -> ({column: value}, [Discard]): a row converted to its table's types.
    Discard(table_name, row_id, column_name, column_value, received_at, uuid_ts, reason), .values();
        DISCARDS_TABLE ("rudder_discards"), DISCARDS_COLUMNS {column: type}.
"""

from transformers.warehouse.column_types import (
    BOOLEAN,
    DATETIME,
    DISCARDS_COLUMNS,
    DISCARDS_TABLE,
    FLOAT,
    INT,
    JSON,
    POSTGRES_TYPES,
    STRING,
    WAREHOUSE_TYPES,
    Discard,
    JsonText,
    convert,
    fit_row,
    merge_batch_schema,
    new_columns,
    target_schema,
    warehouse_type,
)
from transformers.warehouse.names import column_name, schema_name, table_name
from transformers.warehouse.reserved import RESERVED_WORDS
from transformers.warehouse.rows import MAX_COLUMNS, USERS_TABLE, Discarded, Row, event_rows

__all__ = [
    "BOOLEAN", "DATETIME", "DISCARDS_COLUMNS", "DISCARDS_TABLE", "FLOAT", "INT", "JSON", "MAX_COLUMNS",
    "POSTGRES_TYPES", "RESERVED_WORDS", "STRING", "USERS_TABLE", "WAREHOUSE_TYPES", "Discard", "Discarded", "JsonText", "Row",
    "column_name", "convert", "event_rows", "fit_row", "merge_batch_schema", "new_columns", "schema_name",
    "table_name", "target_schema", "warehouse_type",
]
