-- Replay bookkeeping: where a replayed dead letter went and who replayed it; an index for the
-- usual selection (a destination's failures not yet replayed, in failure order).
ALTER TABLE failed_jobs ADD COLUMN replayed_into text;  -- the queue it re-entered: gw_jobs, rt_jobs, batch_rt_jobs
ALTER TABLE failed_jobs ADD COLUMN replayed_by text;    -- who asked: "cli:<user>@<host>" or "admin-api"
CREATE INDEX failed_jobs_open ON failed_jobs (destination_id, id) WHERE replayed_at IS NULL;
