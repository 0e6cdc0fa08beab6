-- The admin page (ops/admin_*.py): what a destination answered and when a job was last tried, and
-- cheap reads of the newest rows of each queue.
-- last_attempt_at: set by the router on every attempt; for a delivered job it is the delivery time.
-- last_response: the destination's answer to a delivery, capped by the router (1 KB). A retry keeps
-- its answer in last_error, as before.
ALTER TABLE rt_jobs ADD COLUMN last_attempt_at timestamptz;
ALTER TABLE rt_jobs ADD COLUMN last_response text;
ALTER TABLE batch_rt_jobs ADD COLUMN last_attempt_at timestamptz;
ALTER TABLE batch_rt_jobs ADD COLUMN last_response text;

-- Block-range (BRIN) summaries: a few bytes per 16 pages, nothing to maintain on most writes, and they
-- let "rows newer than job N / time T" read only the newest pages instead of a whole dataset. The
-- queues keep no btree over all rows (0004), so without these every live-tail poll or overview refresh
-- would scan the datasets.
CREATE INDEX gw_jobs_recent ON gw_jobs USING brin (job_id, received_at)
    WITH (pages_per_range = 16, autosummarize = on);
CREATE INDEX rt_jobs_recent ON rt_jobs USING brin (job_id, created_at, last_attempt_at)
    WITH (pages_per_range = 16, autosummarize = on);
CREATE INDEX batch_rt_jobs_recent ON batch_rt_jobs USING brin (job_id, created_at, last_attempt_at)
    WITH (pages_per_range = 16, autosummarize = on);

-- When the gateway accepted the event of a delivery job (its payload's received_at), or NULL when that
-- is not a valid time: a user transformation may set receivedAt to anything, and a bad value must not
-- break a query that reads many rows. jsonpath's silent mode turns a bad value into NULL, no error.
CREATE FUNCTION sluice_accepted_at(payload jsonb) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE AS $$
SELECT coalesce(
  (jsonb_path_query_first(payload, '$.received_at.datetime("YYYY-MM-DD\"T\"HH24:MI:SS.FF3\"Z\"")', '{}', true)
     #>> '{}')::timestamp AT TIME ZONE 'UTC',
  (jsonb_path_query_first_tz(payload, '$.received_at.datetime() ? (@.type() == "timestamp with time zone")',
                             '{}', true) #>> '{}')::timestamptz)
$$;
