-- Named queries for rate limits shared by every process (table rate_limits, one GCRA row per key).
-- A key's "theoretical arrival time" (tat) moves forward by each admitted cost; a request is within the
-- limit while tat stays within the burst window ahead of now.

-- name: rate_admit
-- Admit `cost` seconds of budget only if it fits in the window; no row back means refused.
INSERT INTO rate_limits AS r (key, tat) VALUES (%(key)s, clock_timestamp() + make_interval(secs => %(cost)s))
ON CONFLICT (key) DO UPDATE
   SET tat = greatest(r.tat, clock_timestamp()) + make_interval(secs => %(cost)s)
 WHERE greatest(r.tat, clock_timestamp()) + make_interval(secs => %(cost)s)
       <= clock_timestamp() + make_interval(secs => %(window)s)
RETURNING true;

-- name: rate_retry_after
SELECT greatest(extract(epoch FROM tat - clock_timestamp())::float8 + %(cost)s - %(window)s, 0)
  FROM rate_limits WHERE key = %(key)s;

-- name: rate_reserve
-- Always reserve; answer how long the caller must wait before it may use what it reserved.
INSERT INTO rate_limits AS r (key, tat) VALUES (%(key)s, clock_timestamp() + make_interval(secs => %(cost)s))
ON CONFLICT (key) DO UPDATE SET tat = greatest(r.tat, clock_timestamp()) + make_interval(secs => %(cost)s)
RETURNING greatest(extract(epoch FROM r.tat - clock_timestamp())::float8 - %(burst)s, 0);

-- name: rate_give_back
-- A reservation that was not used (its round ran out of time) is returned.
UPDATE rate_limits SET tat = greatest(tat - make_interval(secs => %(cost)s), clock_timestamp())
 WHERE key = %(key)s;
