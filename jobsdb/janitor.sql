-- Named queries for the janitor: retention of the tables that are not queues, in bounded slices.
-- Each DELETE takes at most %(limit)s rows, so no transaction grows large and no lock is held long.

-- name: janitor_dedup_expire
DELETE FROM dedup_keys WHERE ctid = ANY(ARRAY(
  SELECT ctid FROM dedup_keys WHERE seen_at < now() - make_interval(secs => %(seconds)s) LIMIT %(limit)s));

-- name: janitor_rejected_expire
DELETE FROM gw_rejected WHERE id = ANY(ARRAY(
  SELECT id FROM gw_rejected WHERE received_at < now() - make_interval(secs => %(seconds)s)
   ORDER BY received_at LIMIT %(limit)s));

-- name: janitor_filtered_expire
DELETE FROM filtered_counts WHERE day < current_date - %(days)s::int;

-- name: janitor_owners_expire
-- Presence rows of processes that stopped renewing (crashed): live_owners only counts unexpired ones.
DELETE FROM lease_owners WHERE expires_at < now() - make_interval(secs => %(seconds)s);

-- name: janitor_leases_expire
-- Leases nobody renewed for long (a deleted destination, a crashed owner): a new owner inserts afresh.
DELETE FROM partition_leases WHERE expires_at < now() - make_interval(secs => %(seconds)s);

-- name: janitor_heartbeats_expire
DELETE FROM heartbeats WHERE beat_at < now() - make_interval(secs => %(seconds)s);

-- name: janitor_rate_limits_expire
DELETE FROM rate_limits WHERE tat < now() - make_interval(secs => %(seconds)s);
