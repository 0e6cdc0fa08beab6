-- Named queries for the queue. `{table}` is one of gw_jobs, rt_jobs, batch_rt_jobs (never user input).

-- name: claim_gw
-- Oldest pending jobs of the given parts that no unexpired claim holds. Fenced by the partition lease:
-- only parts this owner holds unexpired are claimed, and those lease rows stay locked (FOR SHARE) until
-- the claim commits, so a new owner cannot take a part over — and void its claims — half-way through a
-- claim. Every claim counts an attempt.
-- A row another transaction has locked is waited for, never skipped: after a takeover the old owner's
-- ack keeps the rows it could no longer ack locked until it rolls back, and skipping them let a user's
-- later jobs overtake that batch. Only the part's owner claims in it, so the wait is for a commit or a
-- rollback already under way (acks, releases, a takeover's voiding), never for another claimer.
WITH mine AS (
  SELECT l.part FROM partition_leases l
   WHERE l.queue = 'gw' AND l.scope = '' AND l.owner = %(owner)s AND l.part = ANY(%(parts)s)
     AND l.expires_at > now()
     FOR SHARE
)
UPDATE gw_jobs AS j
   SET claim_token = %(token)s, claimed_until = now() + make_interval(secs => %(lease)s),
       attempts = least(j.attempts + 1, 32767)
  FROM (SELECT job_id FROM gw_jobs
         WHERE state = 0
           AND part = ANY(ARRAY(SELECT part FROM mine))
           AND (claimed_until IS NULL OR claimed_until < now())
         ORDER BY job_id
         LIMIT %(limit)s
           FOR UPDATE) AS c
 WHERE j.job_id = c.job_id AND j.state = 0
RETURNING j.job_id, j.part, j.source_id, j.user_key, j.payload, j.received_at, j.attempts;

-- name: ack_gw
UPDATE gw_jobs SET state = 1, claimed_until = NULL
 WHERE job_id = ANY(%(ids)s) AND claim_token = %(token)s AND state = 0;

-- name: release_gw
-- Give claimed gateway jobs back; a claim given back unused (not a failure) does not count as an attempt.
UPDATE gw_jobs SET claimed_until = NULL, claim_token = NULL,
       attempts = CASE WHEN %(count_attempt)s THEN attempts ELSE greatest(attempts - 1, 0) END
 WHERE job_id = ANY(%(ids)s) AND claim_token = %(token)s AND state = 0;

-- name: release
UPDATE {table} SET claimed_until = NULL, claim_token = NULL
 WHERE job_id = ANY(%(ids)s) AND claim_token = %(token)s AND state = 0;

-- name: reset_part_claims
-- A new owner of parts fences the previous owner: its unfinished claims there are voided. Rows are locked
-- in job_id order, the order acks and releases lock them in, so a takeover and the old owner's commit
-- wait for each other instead of deadlocking.
UPDATE {table} AS j SET claimed_until = NULL, claim_token = NULL
  FROM (SELECT job_id FROM {table}
         WHERE state = 0 AND part = ANY(%(parts)s) AND {scope_filter} AND claimed_until IS NOT NULL
         ORDER BY job_id
           FOR UPDATE) AS c
 WHERE j.job_id = c.job_id AND j.state = 0;

-- name: queue_counts
SELECT state, count(*) AS n, min({time_column}) AS oldest FROM {table} GROUP BY state;

-- name: lease_keep
-- Renew the parts this owner still holds (nobody took them over, even if they ran out meanwhile).
UPDATE partition_leases SET expires_at = now() + make_interval(secs => %(ttl)s)
 WHERE queue = %(queue)s AND scope = %(scope)s AND owner = %(owner)s AND part = ANY(%(parts)s)
RETURNING part;

-- name: lease_rows
SELECT part FROM partition_leases WHERE queue = %(queue)s AND scope = %(scope)s;

-- name: lease_take_free
-- A part nobody has ever held. Never waits on a live owner's row (there is none).
INSERT INTO partition_leases (queue, scope, part, owner, expires_at)
VALUES (%(queue)s, %(scope)s, %(part)s, %(owner)s, now() + make_interval(secs => %(ttl)s))
ON CONFLICT (queue, scope, part) DO NOTHING
RETURNING part;

-- name: lease_take_expired
-- Parts whose owner stopped renewing. Rows another transaction has locked (an owner recording a round
-- under its lease, another process taking it) are skipped, never waited for: no deadlock, no stall.
UPDATE partition_leases AS l SET owner = %(owner)s, expires_at = now() + make_interval(secs => %(ttl)s)
  FROM (SELECT part FROM partition_leases
         WHERE queue = %(queue)s AND scope = %(scope)s AND expires_at < now() AND owner <> %(owner)s
         ORDER BY part LIMIT %(limit)s
           FOR UPDATE SKIP LOCKED) AS c
 WHERE l.queue = %(queue)s AND l.scope = %(scope)s AND l.part = c.part
RETURNING l.part;

-- name: heartbeat_owner
INSERT INTO lease_owners (queue, scope, owner, expires_at)
VALUES (%(queue)s, %(scope)s, %(owner)s, now() + make_interval(secs => %(ttl)s))
ON CONFLICT (queue, scope, owner) DO UPDATE SET expires_at = excluded.expires_at;

-- name: live_owners
SELECT count(*) FROM lease_owners WHERE queue = %(queue)s AND scope = %(scope)s AND expires_at > now();

-- name: release_part
DELETE FROM partition_leases
 WHERE queue = %(queue)s AND scope = %(scope)s AND part = %(part)s AND owner = %(owner)s;

-- name: release_leases
DELETE FROM partition_leases WHERE owner = %(owner)s;
DELETE FROM lease_owners WHERE owner = %(owner)s;

-- name: insert_rejected
INSERT INTO gw_rejected (source_id, write_key, request_ip, endpoint, status, reason, event, raw)
VALUES %s;

-- name: insert_failed
INSERT INTO failed_jobs (stage, source_id, destination_id, destination_type, user_key, message_id, event,
                         payload, reason, status_code, response, attempts, attempt_history,
                         original_job_id, original_queue)
VALUES %s;

-- name: dedup_expire
DELETE FROM dedup_keys WHERE seen_at < now() - make_interval(secs => %(window)s);

-- name: dedup_new_keys
-- Keys that are new (or last seen before the window); the rest are duplicates. Parallel arrays; keys are inserted in sorted order so two processors never deadlock.
INSERT INTO dedup_keys AS d (source_id, message_id, seen_at)
SELECT s, m, now() FROM unnest(%(sources)s::text[], %(ids)s::text[]) AS k(s, m) ORDER BY s, m
ON CONFLICT (source_id, message_id) DO UPDATE SET seen_at = excluded.seen_at
 WHERE d.seen_at < now() - make_interval(secs => %(window)s)
RETURNING source_id, message_id;

-- name: filtered_add
-- Add to the per-day counts of events dropped on purpose; rows sorted so concurrent writers never deadlock.
INSERT INTO filtered_counts AS f (source_id, destination_id, rule, day, count)
SELECT s, d, r, current_date, n
  FROM unnest(%(sources)s::text[], %(destinations)s::text[], %(rules)s::text[], %(counts)s::bigint[]) AS c(s, d, r, n)
 ORDER BY s, d, r
ON CONFLICT (source_id, destination_id, rule, day) DO UPDATE SET count = f.count + excluded.count;

-- name: failed_expire
-- failed_jobs is not a queue table: rows past the retention are deleted, oldest first, in slices.
DELETE FROM failed_jobs WHERE id IN (
  SELECT id FROM failed_jobs WHERE failed_at < now() - %(days)s * interval '1 day' ORDER BY failed_at LIMIT %(limit)s);

-- name: lease_owners
SELECT DISTINCT owner FROM partition_leases WHERE queue = %(queue)s AND owner LIKE %(prefix)s;

-- name: expire_owner_leases
-- Leases of owners known to be dead (their process is gone) expire now instead of at their TTL.
UPDATE partition_leases SET expires_at = now() - interval '1 second' WHERE owner = ANY(%(owners)s);
UPDATE lease_owners SET expires_at = now() - interval '1 second' WHERE owner = ANY(%(owners)s);

-- name: gw_oldest_pending
-- The oldest pending gateway job and its age in seconds: one entry of the pending index
-- gw_jobs_pending (job_id) WHERE state = 0, whatever the backlog (/health reads it; never count(*)).
SELECT received_at, extract(epoch FROM now() - received_at)::float8 AS age_s
  FROM gw_jobs WHERE state = 0 ORDER BY job_id LIMIT 1;

-- name: renew_leases
-- Extend the parts this owner still holds (unexpired), in one statement; answers each part and the
-- seconds left on its lease by the database's clock.
UPDATE partition_leases SET expires_at = now() + make_interval(secs => %(ttl)s)
 WHERE queue = %(queue)s AND scope = %(scope)s AND owner = %(owner)s AND part = ANY(%(parts)s)
   AND expires_at > now()
RETURNING part, extract(epoch FROM expires_at - now())::float8;

-- name: queue_pending
-- A queue's pending jobs (a walk of its pending index, for /metrics) and the oldest one's age, read
-- from the first entry of that index in job order.
SELECT (SELECT count(*) FROM {table} WHERE state = 0),
       (SELECT extract(epoch FROM now() - {time_column})::float8 FROM {table} WHERE state = 0
         ORDER BY job_id LIMIT 1);

-- name: failed_open_by_destination
SELECT coalesce(destination_id, ''), stage, count(*) FROM failed_jobs WHERE replayed_at IS NULL GROUP BY 1, 2;
