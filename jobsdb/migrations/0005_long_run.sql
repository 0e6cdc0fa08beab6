-- Running for months: poison-job attempts, process heartbeats, rate limits shared by every process.
-- A gateway job's claims: one claimed again and again without ever finishing is processed alone,
-- then dead-lettered, instead of taking its processor down at every restart.
ALTER TABLE gw_jobs ADD COLUMN attempts smallint NOT NULL DEFAULT 0;

-- Every Sluice process records that it is alive; `sluice up` records the state of the roles it
-- supervises (restarting, crash-looping). /health and `sluice jobs` read this, never the queues.
CREATE TABLE heartbeats (
    owner      text        PRIMARY KEY,          -- role@host/pid, or up@host/pid:role#n for a supervised slot
    role       text        NOT NULL,
    host       text        NOT NULL,
    pid        integer,
    state      text        NOT NULL DEFAULT 'up', -- up, restarting, crash-looping, stopped
    started_at timestamptz NOT NULL DEFAULT now(),
    beat_at    timestamptz NOT NULL DEFAULT now(),
    detail     jsonb
);
CREATE INDEX heartbeats_beat ON heartbeats (beat_at);

-- Rate limits that hold across processes: one row per key, a GCRA "theoretical arrival time".
CREATE TABLE rate_limits (
    key        text        PRIMARY KEY,          -- gw:<write key> or rt:<destination id>
    tat        timestamptz NOT NULL
);

-- The janitor caps rejection records per source and deletes them after their retention.
CREATE INDEX gw_rejected_source ON gw_rejected (source_id, received_at);
