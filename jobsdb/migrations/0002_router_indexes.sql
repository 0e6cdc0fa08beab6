-- Jobs in backoff are few; this index finds the users they hold back (the per-user barrier) cheaply.
CREATE INDEX rt_jobs_retrying ON rt_jobs (destination_id, part) INCLUDE (user_key, next_attempt_at)
    WHERE state = 0 AND next_attempt_at IS NOT NULL;
CREATE INDEX batch_rt_jobs_retrying ON batch_rt_jobs (destination_id, part) INCLUDE (user_key, next_attempt_at)
    WHERE state = 0 AND next_attempt_at IS NOT NULL;
