-- Sluice queue schema, version 1.
-- Queue tables are partitioned by job_id range ("datasets"); finished datasets are dropped whole.
-- Every job row carries its partition key (`part`), and every claim filters by it.

CREATE TABLE sluice_settings (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- Gateway queue: one row per accepted event.
CREATE SEQUENCE gw_jobs_job_id_seq;
CREATE TABLE gw_jobs (
    job_id        bigint      NOT NULL DEFAULT nextval('gw_jobs_job_id_seq'),
    part          smallint    NOT NULL,            -- hash(user_key) % partitions: one owner per part keeps order
    source_id     text        NOT NULL,
    user_key      text        NOT NULL,
    payload       jsonb       NOT NULL,            -- the enriched event
    received_at   timestamptz NOT NULL DEFAULT now(),
    state         smallint    NOT NULL DEFAULT 0,  -- 0 pending, 1 done
    claim_token   bigint,
    claimed_until timestamptz,
    PRIMARY KEY (job_id)
) PARTITION BY RANGE (job_id);
CREATE INDEX gw_jobs_pending ON gw_jobs (part, job_id) WHERE state = 0;

-- Router queue (cloud destinations) and batch-router queue (warehouses): one row per (event, destination).
CREATE SEQUENCE rt_jobs_job_id_seq;
CREATE TABLE rt_jobs (
    job_id           bigint      NOT NULL DEFAULT nextval('rt_jobs_job_id_seq'),
    part             smallint    NOT NULL,
    destination_id   text        NOT NULL,
    source_id        text        NOT NULL,
    user_key         text        NOT NULL,
    message_id       text,
    payload          jsonb       NOT NULL,          -- {event, requests, ...}
    created_at       timestamptz NOT NULL DEFAULT now(),
    state            smallint    NOT NULL DEFAULT 0, -- 0 pending, 1 delivered, 2 aborted (in failed_jobs)
    attempts         smallint    NOT NULL DEFAULT 0,
    first_attempt_at timestamptz,
    next_attempt_at  timestamptz,
    last_status      integer,
    last_error       text,
    claim_token      bigint,
    claimed_until    timestamptz,
    PRIMARY KEY (job_id)
) PARTITION BY RANGE (job_id);
CREATE INDEX rt_jobs_pending ON rt_jobs (destination_id, part, job_id) WHERE state = 0;

CREATE SEQUENCE batch_rt_jobs_job_id_seq;
CREATE TABLE batch_rt_jobs (LIKE rt_jobs INCLUDING DEFAULTS INCLUDING CONSTRAINTS) PARTITION BY RANGE (job_id);
ALTER TABLE batch_rt_jobs ALTER COLUMN job_id SET DEFAULT nextval('batch_rt_jobs_job_id_seq');
ALTER TABLE batch_rt_jobs ADD PRIMARY KEY (job_id);
CREATE INDEX batch_rt_jobs_pending ON batch_rt_jobs (destination_id, part, job_id) WHERE state = 0;

-- Leases on queue partitions: one owner per (queue, scope, part) keeps per-user order across processes.
CREATE TABLE partition_leases (
    queue       text        NOT NULL,
    scope       text        NOT NULL,   -- '' for the gateway queue, destination id for the router
    part        smallint    NOT NULL,
    owner       text        NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (queue, scope, part)
);

-- Live owners per (queue, scope): a newcomer is counted before it holds any part, so others share.
CREATE TABLE lease_owners (
    queue       text        NOT NULL,
    scope       text        NOT NULL,
    owner       text        NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (queue, scope, owner)
);

-- Requests and events the gateway refused: nothing sent to us disappears without a trace.
CREATE TABLE gw_rejected (
    id          bigserial   PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    source_id   text,
    write_key   text,
    request_ip  text,
    endpoint    text,
    status      integer     NOT NULL,
    reason      text        NOT NULL,
    event       jsonb,                  -- the rejected event when it was JSON (never for 401/413)
    raw         text                    -- an excerpt of an unparseable body
);
CREATE INDEX gw_rejected_received ON gw_rejected (received_at);

-- Dead letters: every event a stage gave up on, with why, and replay bookkeeping.
CREATE TABLE failed_jobs (
    id               bigserial   PRIMARY KEY,
    stage            text        NOT NULL,  -- user_transform, dest_transform, router
    source_id        text,
    destination_id   text,
    destination_type text,
    user_key         text,
    message_id       text,
    event            jsonb       NOT NULL,  -- the original event as the stage received it
    payload          jsonb,                 -- what was being delivered, when the router failed
    reason           text        NOT NULL,
    status_code      integer,
    response         text,
    attempts         integer     NOT NULL DEFAULT 0,
    attempt_history  jsonb,
    original_job_id  bigint,
    original_queue   text,
    first_failed_at  timestamptz NOT NULL DEFAULT now(),
    failed_at        timestamptz NOT NULL DEFAULT now(),
    replayed_at      timestamptz,
    replay_count     integer     NOT NULL DEFAULT 0
);
CREATE INDEX failed_jobs_dest ON failed_jobs (destination_id, failed_at);
CREATE INDEX failed_jobs_failed_at ON failed_jobs (failed_at);

-- messageId dedup, shared by every processor process.
CREATE TABLE dedup_keys (
    source_id  text        NOT NULL,
    message_id text        NOT NULL,
    seen_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, message_id)
);
CREATE INDEX dedup_keys_seen ON dedup_keys (seen_at);

-- Events dropped on purpose, counted with the rule that dropped them.
CREATE TABLE filtered_counts (
    source_id      text   NOT NULL,
    destination_id text   NOT NULL,
    rule           text   NOT NULL,
    day            date   NOT NULL DEFAULT current_date,
    count          bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (source_id, destination_id, rule, day)
);
