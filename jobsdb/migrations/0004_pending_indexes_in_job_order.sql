-- Claims read pending rows in job_id order. An index holding only pending rows, in that order, lets a
-- claim skip finished rows entirely (they stay in their dataset until it is dropped). Every claim, ack
-- and retry filters on state = 0, so the primary key served nothing this index cannot, and it steered
-- the planner into walking finished rows; job_id stays unique through its sequence.
ALTER TABLE gw_jobs DROP CONSTRAINT gw_jobs_pkey;
ALTER TABLE rt_jobs DROP CONSTRAINT rt_jobs_pkey;
ALTER TABLE batch_rt_jobs DROP CONSTRAINT batch_rt_jobs_pkey;
DROP INDEX gw_jobs_pending;
CREATE INDEX gw_jobs_pending ON gw_jobs (job_id) INCLUDE (part) WHERE state = 0;
DROP INDEX rt_jobs_pending;
CREATE INDEX rt_jobs_pending ON rt_jobs (destination_id, job_id) INCLUDE (part, user_key) WHERE state = 0;
DROP INDEX batch_rt_jobs_pending;
CREATE INDEX batch_rt_jobs_pending ON batch_rt_jobs (destination_id, job_id) INCLUDE (part, user_key)
    WHERE state = 0;
