-- Warehouse loads: what each warehouse destination's last syncs did, for scheduling and for operators
-- (`sluice jobs`, /metrics). One row per destination, written by the batch router after every attempt.
CREATE TABLE warehouse_syncs (
    destination_id   text        PRIMARY KEY,
    destination_type text        NOT NULL,
    last_attempt_at  timestamptz,
    last_success_at  timestamptz,
    last_error       text,                 -- never holds the warehouse password
    last_error_at    timestamptz,
    rows_loaded      bigint      NOT NULL DEFAULT 0,  -- in total, every table
    events_loaded    bigint      NOT NULL DEFAULT 0,
    discards         bigint      NOT NULL DEFAULT 0,  -- values that went to rudder_discards
    loads            bigint      NOT NULL DEFAULT 0
);
