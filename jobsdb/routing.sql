-- Named queries for the router and batch router. `{table}` is rt_jobs or batch_rt_jobs.

-- name: active_destinations
-- Destinations with pending jobs: a loose index scan, one probe per destination, not a scan of the queue.
WITH RECURSIVE d(destination_id) AS (
    (SELECT destination_id FROM {table} WHERE state = 0 ORDER BY destination_id LIMIT 1)
  UNION ALL
    SELECT (SELECT t.destination_id FROM {table} t
             WHERE t.state = 0 AND t.destination_id > d.destination_id ORDER BY t.destination_id LIMIT 1)
      FROM d WHERE d.destination_id IS NOT NULL
)
SELECT destination_id FROM d WHERE destination_id IS NOT NULL;

-- name: blocked_users
-- The barrier: users with a job in backoff; none of their later jobs may go before it.
SELECT DISTINCT user_key FROM {table}
 WHERE destination_id = %(dest)s AND part = ANY(%(parts)s) AND state = 0 AND next_attempt_at > now();

-- name: next_retry_at
SELECT min(next_attempt_at) FROM {table}
 WHERE destination_id = %(dest)s AND part = ANY(%(parts)s) AND state = 0 AND next_attempt_at IS NOT NULL;

-- name: rt_ready
-- Oldest ready jobs of the owned parts, leaving out users held back by the barrier, in job_id order.
-- A plain read: only the owner of a part reads it, and outcomes are fenced by the lease (rt_hold_parts).
SELECT job_id, part, user_key, source_id, message_id, payload, attempts, first_attempt_at, created_at
  FROM {table}
 WHERE destination_id = %(dest)s AND part = ANY(%(parts)s) AND state = 0
   AND (next_attempt_at IS NULL OR next_attempt_at <= now())
   AND NOT (user_key = ANY(%(blocked)s))
 ORDER BY job_id
 LIMIT %(limit)s;

-- name: rt_hold_parts
-- The fence: our leases on these parts, locked until commit. A takeover waits for us; if we lost a part,
-- it is missing here and the round's outcomes are rolled back (they are re-done by the new owner).
SELECT part FROM partition_leases
 WHERE queue = %(queue)s AND scope = %(dest)s AND owner = %(owner)s AND part = ANY(%(parts)s) AND expires_at > now()
   FOR SHARE;

-- name: rt_delivered
-- last_attempt_at is the delivery time; last_response what the destination answered (capped by the caller).
UPDATE {table} AS j
   SET state = 1, attempts = j.attempts + 1, last_status = v.status, last_error = NULL,
       last_attempt_at = now(), last_response = v.response
  FROM unnest(%(ids)s::bigint[], %(statuses)s::int[], %(responses)s::text[]) AS v(job_id, status, response)
 WHERE j.job_id = v.job_id AND j.state = 0 AND j.destination_id = %(dest)s;

-- name: rt_retry
UPDATE {table} AS j
   SET attempts = j.attempts + v.counted, first_attempt_at = coalesce(j.first_attempt_at, now()),
       next_attempt_at = now() + make_interval(secs => v.delay), last_status = v.status, last_error = v.error,
       last_attempt_at = now()
  FROM unnest(%(ids)s::bigint[], %(counted)s::int[], %(delays)s::float8[], %(statuses)s::int[], %(errors)s::text[])
       AS v(job_id, counted, delay, status, error)
 WHERE j.job_id = v.job_id AND j.state = 0 AND j.destination_id = %(dest)s;

-- name: rt_aborted
UPDATE {table} SET state = 2
 WHERE job_id = ANY(%(ids)s) AND state = 0 AND destination_id = %(dest)s;

-- name: rt_drain_batch
-- Pending jobs of a destination that no longer takes deliveries (disabled or deleted), oldest first.
UPDATE {table} AS j SET state = 2, claim_token = NULL, claimed_until = NULL
  FROM (SELECT job_id FROM {table} WHERE destination_id = %(dest)s AND state = 0
         ORDER BY job_id LIMIT %(limit)s FOR UPDATE SKIP LOCKED) AS c
 WHERE j.job_id = c.job_id AND j.state = 0 AND j.destination_id = %(dest)s  -- lets the join use the pending index
RETURNING j.job_id, j.user_key, j.source_id, j.message_id, j.payload, j.attempts, j.last_status, j.last_error;
