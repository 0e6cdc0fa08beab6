-- Named queries for process heartbeats (table heartbeats): who is alive, and what `sluice up` knows.

-- name: heartbeat
INSERT INTO heartbeats AS h (owner, role, host, pid, state, detail, started_at, beat_at)
VALUES (%(owner)s, %(role)s, %(host)s, %(pid)s, %(state)s, %(detail)s::jsonb, now(), now())
ON CONFLICT (owner) DO UPDATE
   SET role = excluded.role, host = excluded.host, pid = excluded.pid, state = excluded.state,
       detail = excluded.detail, beat_at = now(),
       started_at = CASE WHEN h.pid IS DISTINCT FROM excluded.pid THEN now() ELSE h.started_at END;

-- name: heartbeat_remove
DELETE FROM heartbeats WHERE owner = %(owner)s;

-- name: heartbeat_list
-- Every row with its age in seconds; the table holds one row per process or supervised slot.
SELECT owner, role, host, pid, state, detail, extract(epoch FROM now() - beat_at)::float8 AS age_s
  FROM heartbeats
 ORDER BY role, owner;
