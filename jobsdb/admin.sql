-- Named queries for the admin page (ops/admin_*.py) and `sluice jobs`: the newest rows of each queue,
-- per-destination figures, lookups, and an operator's "abort now". `{table}` is rt_jobs or
-- batch_rt_jobs (never user input); `{where}` is the dead-letter selection of replay.sql.
-- Reads of recent rows filter on job_id, received_at, created_at or last_attempt_at, which the BRIN
-- indexes of migration 0007 turn into reads of the newest pages only.

-- name: admin_sequences
SELECT (SELECT last_value FROM gw_jobs_job_id_seq), (SELECT last_value FROM rt_jobs_job_id_seq),
       (SELECT last_value FROM batch_rt_jobs_job_id_seq);

-- name: admin_brin_indexes
-- The block-range indexes (0007) of the given datasets.
SELECT c.oid::regclass::text
  FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_am am ON am.oid = c.relam
 WHERE t.relname = ANY(%(tables)s) AND am.amname = 'brin';

-- name: admin_brin_summarize
-- Summarise the pages written since the last summary, so the next read of the newest rows skips the rest.
SELECT brin_summarize_new_values(%(index)s::regclass);

-- ---- the live tail -------------------------------------------------------------------------------

-- name: admin_tail_gw
-- Accepted events after a job id, oldest first; the event only when it is small enough to show.
SELECT job_id, source_id, user_key, received_at, state, payload->>'type', coalesce(payload->>'event', payload->>'name'),
       payload->>'messageId', payload->>'userId', payload->>'anonymousId',
       CASE WHEN pg_column_size(payload) <= %(max_bytes)s THEN payload END
  FROM gw_jobs
 WHERE job_id > %(after)s AND NOT job_id = ANY(%(seen)s::bigint[])
 ORDER BY job_id
 LIMIT %(limit)s;

-- name: admin_tail_delivery
-- Delivery jobs after a job id: the transformed event and the requests that will be sent.
SELECT job_id, destination_id, source_id, user_key, message_id, created_at, state, attempts, last_status,
       last_attempt_at, next_attempt_at, left(last_error, 500), left(last_response, 1024),
       payload->'event'->>'type', coalesce(payload->'event'->>'event', payload->'event'->>'name'),
       payload->'event'->>'userId', payload->'event'->>'anonymousId', payload->>'dest_type',
       CASE WHEN pg_column_size(payload) <= %(max_bytes)s THEN payload->'requests' END
  FROM {table}
 WHERE job_id > %(after)s AND NOT job_id = ANY(%(seen)s::bigint[])
 ORDER BY job_id
 LIMIT %(limit)s;

-- name: admin_tail_status
-- Where delivery jobs the tail showed stand now: one BRIN range read per run of ids. `job_id + 0` keeps the
-- id list out of the index condition (a BRIN index tests every id against every range: 100 times slower).
SELECT t.job_id, t.state, t.attempts, t.last_status, t.last_attempt_at, t.next_attempt_at, left(t.last_error, 500),
       left(t.last_response, 1024)
  FROM unnest(%(lows)s::bigint[], %(highs)s::bigint[]) AS r(lo, hi)
  JOIN {table} t ON t.job_id BETWEEN r.lo AND r.hi
 WHERE t.job_id + 0 = ANY(%(ids)s::bigint[]);

-- name: admin_dead_letter_reasons
-- Why recent delivery jobs became dead letters, found through the destination index.
SELECT original_job_id, reason, status_code, left(response, 1024), failed_at
  FROM failed_jobs
 WHERE destination_id = ANY(%(dests)s) AND failed_at > now() - interval '1 hour'
   AND original_queue = %(queue)s AND original_job_id = ANY(%(ids)s);

-- ---- the overview: counts per 10 seconds ---------------------------------------------------------

-- name: admin_accepted_buckets
SELECT source_id, date_bin('10 seconds', received_at, timestamptz '2000-01-01 00:00:00+00'), count(*)
  FROM gw_jobs
 WHERE received_at >= %(since)s
 GROUP BY 1, 2;

-- name: admin_rejected_buckets
SELECT coalesce(source_id, ''), date_bin('10 seconds', received_at, timestamptz '2000-01-01 00:00:00+00'), count(*)
  FROM gw_rejected
 WHERE received_at >= %(since)s
 GROUP BY 1, 2;

-- name: admin_delivered_buckets
-- Delivered jobs per destination and 10 s of delivery, with the latency from acceptance at the gateway in
-- bins an eighth of a power of two wide (floor(8 * log2(ms))); NULL when the acceptance time is unknown.
SELECT destination_id,
       floor(8 * ln(greatest(1.0, 1000 * extract(epoch FROM last_attempt_at - sluice_accepted_at(payload))::float8))
             / ln(2.0))::int,
       date_bin('10 seconds', last_attempt_at, timestamptz '2000-01-01 00:00:00+00'),
       count(*)
  FROM {table}
 WHERE last_attempt_at >= %(since)s AND state = 1
 GROUP BY 1, 2, 3;

-- name: admin_failed_buckets
SELECT coalesce(destination_id, ''), date_bin('10 seconds', failed_at, timestamptz '2000-01-01 00:00:00+00'), count(*)
  FROM failed_jobs
 WHERE failed_at >= %(since)s
 GROUP BY 1, 2;

-- ---- the overview: now -----------------------------------------------------------------------------

-- name: admin_retrying
-- Destinations with jobs in backoff: how many, the next attempt due, and the latest answer.
SELECT d.destination_id, d.n, d.next_at, d.max_attempts, l.last_status, l.last_error, l.last_attempt_at
  FROM (SELECT destination_id, count(*) AS n, min(next_attempt_at) AS next_at, max(attempts) AS max_attempts
          FROM {table}
         WHERE state = 0 AND next_attempt_at IS NOT NULL
         GROUP BY destination_id) AS d
 CROSS JOIN LATERAL (
        SELECT j.last_status, left(j.last_error, 500) AS last_error, j.last_attempt_at
          FROM {table} AS j
         WHERE j.destination_id = d.destination_id AND j.state = 0 AND j.next_attempt_at IS NOT NULL
         ORDER BY j.last_attempt_at DESC NULLS LAST
         LIMIT 1) AS l
 ORDER BY d.destination_id;

-- name: admin_waiting
-- Jobs held back by the barrier: ready themselves, but their user has a job in backoff for that destination.
SELECT p.destination_id, count(*)
  FROM (SELECT DISTINCT destination_id, user_key FROM {table} WHERE state = 0 AND next_attempt_at > now()) AS b
  JOIN {table} AS p ON p.destination_id = b.destination_id AND p.user_key = b.user_key
 WHERE p.state = 0 AND (p.next_attempt_at IS NULL OR p.next_attempt_at <= now())
 GROUP BY p.destination_id;

-- name: admin_pending
-- A destination's pending jobs, counted up to a cap (a walk of the pending index), and the oldest one's age.
SELECT (SELECT count(*) FROM (SELECT 1 FROM {table} WHERE destination_id = %(dest)s AND state = 0
                               LIMIT %(cap)s) AS p),
       (SELECT extract(epoch FROM now() - created_at)::float8 FROM {table}
         WHERE destination_id = %(dest)s AND state = 0 ORDER BY job_id LIMIT 1);

-- name: admin_filtered_today
SELECT source_id, destination_id, rule, count FROM filtered_counts WHERE day = current_date;

-- name: admin_now
SELECT now();

-- ---- failures ---------------------------------------------------------------------------------------

-- name: admin_failed_page
-- A page of a dead-letter selection, newest first (keyset by id).
SELECT id, stage, source_id, destination_id, destination_type, user_key, message_id, status_code, reason,
       left(response, 500) AS response, attempts, failed_at, replayed_at, replay_count
  FROM failed_jobs
 WHERE {where} AND id < %(before_id)s
 ORDER BY id DESC
 LIMIT %(limit)s;

-- name: admin_failed_one
SELECT id, stage, source_id, destination_id, destination_type, user_key, message_id, event, payload, reason,
       status_code, response, attempts, attempt_history, original_job_id, original_queue, first_failed_at,
       failed_at, replayed_at, replay_count, replayed_into, replayed_by
  FROM failed_jobs
 WHERE id = %(id)s;

-- name: admin_retrying_jobs
-- Jobs in backoff, the next due first.
SELECT job_id, destination_id, source_id, user_key, message_id, attempts, first_attempt_at, last_attempt_at,
       next_attempt_at, last_status, left(last_error, 500), created_at
  FROM {table}
 WHERE state = 0 AND next_attempt_at IS NOT NULL AND (%(dest)s::text IS NULL OR destination_id = %(dest)s)
 ORDER BY next_attempt_at, job_id
 LIMIT %(limit)s;

-- name: admin_waiting_by_user
-- Ready jobs of the given users waiting behind their job in backoff, per destination and user.
SELECT destination_id, user_key, count(*)
  FROM {table}
 WHERE state = 0 AND destination_id = ANY(%(dests)s) AND user_key = ANY(%(users)s)
   AND (next_attempt_at IS NULL OR next_attempt_at <= now())
 GROUP BY 1, 2;

-- name: admin_abort_retrying
-- "Abort now" for a job in backoff. Fenced against the router: only while its next attempt is further
-- away than the margin. A router claims a job only once next_attempt_at has passed and sets a new one
-- (or finishes the job) when it records the attempt, so a job this matches is in no router's hands.
UPDATE {table} SET state = 2
 WHERE job_id = %(id)s AND state = 0 AND next_attempt_at > now() + make_interval(secs => %(margin)s)
RETURNING job_id, destination_id, source_id, user_key, message_id, payload, attempts, first_attempt_at,
          last_attempt_at, last_status, last_error, last_response;

-- ---- one job, and lookups -------------------------------------------------------------------------

-- name: admin_gw_job
SELECT job_id, part, source_id, user_key, received_at, state, attempts, claimed_until, payload
  FROM gw_jobs
 WHERE job_id = %(id)s;

-- name: admin_delivery_job
SELECT job_id, part, destination_id, source_id, user_key, message_id, created_at, state, attempts,
       first_attempt_at, last_attempt_at, next_attempt_at, last_status, last_error, last_response, payload
  FROM {table}
 WHERE job_id = %(id)s;

-- name: admin_lookup_gw_by_message
-- Accepted events with this messageId since a time: the time bounds the scan (BRIN on received_at).
SELECT job_id, source_id, user_key, received_at, state, attempts, claimed_until, payload
  FROM gw_jobs
 WHERE received_at >= %(since)s AND payload->>'messageId' = %(value)s
 ORDER BY job_id DESC
 LIMIT %(limit)s;

-- name: admin_lookup_gw_by_user
SELECT job_id, source_id, user_key, received_at, state, attempts, claimed_until, payload
  FROM gw_jobs
 WHERE received_at >= %(since)s
   AND (user_key = %(value)s OR payload->>'userId' = %(value)s OR payload->>'anonymousId' = %(value)s)
 ORDER BY job_id DESC
 LIMIT %(limit)s;

-- name: admin_lookup_delivery
SELECT job_id, destination_id, source_id, user_key, message_id, created_at, state, attempts, first_attempt_at,
       last_attempt_at, next_attempt_at, last_status, left(last_error, 1000) AS last_error, last_response, payload
  FROM {table}
 WHERE created_at >= %(since)s AND message_id = ANY(%(message_ids)s)
 ORDER BY job_id
 LIMIT %(limit)s;

-- name: admin_lookup_failed
SELECT id, stage, source_id, destination_id, destination_type, message_id, reason, status_code,
       left(response, 2000) AS response, attempts, attempt_history, original_job_id, original_queue, failed_at, replayed_at,
       replay_count, replayed_into, event, payload
  FROM failed_jobs
 WHERE failed_at >= %(since)s AND message_id = ANY(%(message_ids)s)
 ORDER BY id
 LIMIT %(limit)s;

-- name: admin_blocking_job
-- The job in backoff that holds a pending job back (the barrier): the same destination and user, earlier.
SELECT job_id, next_attempt_at
  FROM {table}
 WHERE destination_id = %(dest)s AND user_key = %(user)s AND state = 0 AND next_attempt_at > now()
   AND job_id < %(job_id)s
 ORDER BY job_id
 LIMIT 1;
