-- Named queries for the batch router (warehouse destinations): sync bookkeeping in warehouse_syncs.
-- Claims, outcomes and dead letters use the router's queries on batch_rt_jobs.

-- name: warehouse_sync_get
SELECT last_attempt_at, last_success_at, extract(epoch FROM now() - last_attempt_at)::float8
  FROM warehouse_syncs WHERE destination_id = %(dest)s;

-- name: warehouse_sync_attempt
INSERT INTO warehouse_syncs AS w (destination_id, destination_type, last_attempt_at)
VALUES (%(dest)s, %(type)s, now())
ON CONFLICT (destination_id) DO UPDATE SET last_attempt_at = now(), destination_type = excluded.destination_type;

-- name: warehouse_sync_success
UPDATE warehouse_syncs
   SET last_success_at = now(), rows_loaded = rows_loaded + %(rows)s, events_loaded = events_loaded + %(events)s,
       discards = discards + %(discards)s, loads = loads + 1
 WHERE destination_id = %(dest)s;

-- name: warehouse_sync_error
UPDATE warehouse_syncs SET last_error = %(error)s, last_error_at = now() WHERE destination_id = %(dest)s;

-- name: warehouse_sync_report
-- Per warehouse destination: its bookkeeping and how many events wait in the batch-router queue.
SELECT w.destination_id, w.destination_type, w.last_success_at, w.last_attempt_at, w.rows_loaded,
       w.events_loaded, w.discards, w.last_error, w.last_error_at,
       (SELECT count(*) FROM batch_rt_jobs j WHERE j.destination_id = w.destination_id AND j.state = 0) AS pending
  FROM warehouse_syncs w
 ORDER BY w.destination_id;

-- name: warehouse_pending_count
SELECT count(*) FROM (SELECT 1 FROM batch_rt_jobs WHERE destination_id = %(dest)s AND state = 0
                       LIMIT %(limit)s) AS p;
