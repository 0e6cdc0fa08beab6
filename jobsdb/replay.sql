-- Named queries for dead letters: selection, listing, replay bookkeeping, the `sluice jobs` summary.
-- `{where}` is the fragment failed_where (never user input); every selector is a bound parameter,
-- and a NULL selector matches everything.

-- name: failed_where
    (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))
AND (%(destinations)s::text[] IS NULL OR destination_id = ANY(%(destinations)s::text[]))
AND (%(sources)s::text[] IS NULL OR source_id = ANY(%(sources)s::text[]))
AND (%(stages)s::text[] IS NULL OR stage = ANY(%(stages)s::text[]))
AND (%(statuses)s::int[] IS NULL OR status_code = ANY(%(statuses)s::int[]))
AND (%(reason)s::text IS NULL OR strpos(lower(reason), lower(%(reason)s::text)) > 0)
AND (%(since)s::timestamptz IS NULL OR failed_at >= %(since)s::timestamptz)
AND (%(until)s::timestamptz IS NULL OR failed_at < %(until)s::timestamptz)
AND (%(include_replayed)s OR replayed_at IS NULL)

-- name: failed_count
SELECT count(*), min(id), max(id) FROM failed_jobs WHERE {where};

-- name: failed_list
-- One page of a selection in failure order, keyset-paginated by id.
SELECT id, stage, source_id, destination_id, destination_type, user_key, message_id, status_code, reason,
       left(response, 500) AS response, attempts, original_job_id, original_queue, first_failed_at, failed_at,
       replayed_at, replay_count, replayed_into, replayed_by
  FROM failed_jobs
 WHERE {where} AND id > %(after_id)s
 ORDER BY id
 LIMIT %(limit)s;

-- name: failed_lock_slice
-- The next slice to replay, locked: a concurrent replay of the same rows waits, then re-checks
-- `replayed_at IS NULL` and skips what this one replayed.
SELECT id, stage, source_id, destination_id, destination_type, user_key, message_id, event, original_queue
  FROM failed_jobs
 WHERE {where} AND id > %(after_id)s
 ORDER BY id
 LIMIT %(limit)s
   FOR UPDATE;

-- name: failed_mark_replayed
-- Mark, never delete: the row stays for the audit trail and leaves with the failed_jobs retention.
UPDATE failed_jobs AS f
   SET replayed_at = now(), replay_count = f.replay_count + 1, replayed_into = r.queue, replayed_by = %(by)s
  FROM unnest(%(ids)s::bigint[], %(queues)s::text[]) AS r(id, queue)
 WHERE f.id = r.id;

-- name: failed_summary
-- Dead letters by destination, stage and reason: how many still wait for a replay, how many were replayed.
SELECT coalesce(destination_id, '') AS destination_id, coalesce(destination_type, '') AS destination_type, stage,
       left(reason, 120) AS reason,
       count(*) FILTER (WHERE replayed_at IS NULL) AS open,
       count(*) FILTER (WHERE replayed_at IS NOT NULL) AS replayed,
       max(failed_at) AS last_failed_at
  FROM failed_jobs
 GROUP BY 1, 2, 3, 4
 ORDER BY 5 DESC, 6 DESC, 1, 3
 LIMIT %(limit)s;

-- name: rejected_count
SELECT count(*) FROM gw_rejected;
