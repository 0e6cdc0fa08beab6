"""Poison data is one event's problem: rows Postgres refuses are found and dead-lettered while the rest of
their batch commits, and a job that keeps failing its batch is isolated and dead-lettered instead of
looping; the processor never stops."""

from __future__ import annotations

import contextlib
import json
import threading

import psycopg2

from config.settings import load_settings
from config.workspace import WorkspaceWatcher
from jobsdb.queue import GatewayJob
from processor.pipeline import JobOutput
from processor.run import Processor
from processor.store import commit_batch
from tests.processor.support import (
    event,
    failed_jobs,
    hook,
    insert_gw,
    pending_gw,
    query,
    rt_jobs,
    workspace_file,
)
from tests.support.procs import wait_for


def claimed(dsn, token: int) -> list[GatewayJob]:
    """Every pending gateway job, claimed with `token` (as the processor would before committing)."""
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute("UPDATE gw_jobs SET claim_token = %s, claimed_until = now() + interval '1 minute' "
                    "WHERE state = 0 RETURNING job_id, part, source_id, user_key, payload, received_at, attempts",
                    (token,))
        rows = cur.fetchall()
        conn.commit()
    return sorted((GatewayJob(*r) for r in rows), key=lambda j: j.job_id)


def row(job: GatewayJob, dest: str, payload_json: str) -> tuple:
    return (0, dest, job.source_id, job.user_key, job.payload["messageId"], payload_json)


def test_rows_postgres_refuses_are_found_and_the_rest_commit(dsn):
    insert_gw(dsn, [event(user=f"u{i}", messageId=f"m{i}") for i in range(9)])
    jobs = claimed(dsn, 77)
    outputs = []
    for job in jobs:
        good = json.dumps({"event": job.payload, "requests": []})
        out = JobOutput(job, (job.source_id, job.payload["messageId"]), rt=[row(job, "d1", good)])
        if job.payload["messageId"] in ("m3", "m7"):
            # jsonb refuses a NUL escape: a row that slipped past every check before the database.
            out.rt.append(row(job, "d2", '{"event": {"bad": "\\u0000"}}'))
        else:
            out.rt.append(row(job, "d2", good))
        outputs.append(out)
    with contextlib.closing(psycopg2.connect(dsn)) as conn:
        done = commit_batch(conn, outputs, 77, dedup_window=3600)
    assert done.refused == 2 and done.jobs == 9 and done.rt == 16
    written = {(r["destination_id"], r["message_id"]) for r in rt_jobs(dsn)}
    assert written == {(d, f"m{i}") for i in range(9) for d in ("d1", "d2")} - {("d2", "m3"), ("d2", "m7")}
    dead = failed_jobs(dsn)
    assert sorted((d["destination_id"], d["message_id"]) for d in dead) == [("d2", "m3"), ("d2", "m7")]
    assert all(d["stage"] == "processor" and "Postgres refused the output" in d["reason"] for d in dead)
    assert pending_gw(dsn) == 0, "every job of the batch is acknowledged"


class _Harness:
    """The real processor loop in a thread, against the real database."""

    def __init__(self, dsn, config, **settings):
        env = {"SLUICE_DATABASE_URL": dsn, "SLUICE_CONFIG": str(config), "SLUICE_PROCESSOR_IDLE_SLEEP": "0.02",
               **{f"SLUICE_{k.upper()}": str(v) for k, v in settings.items()}}
        self.settings = load_settings(env=env)
        self.watcher = WorkspaceWatcher(str(config), 0.1)
        self.watcher.start()
        self.processor = Processor(self.settings, self.watcher)
        self.thread = threading.Thread(target=self.processor.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.processor.stop_event.set()
        self.thread.join(30)
        self.watcher.stop()
        self.processor.user_js.close()
        assert not self.thread.is_alive()


def test_a_job_that_keeps_failing_its_batch_is_isolated_and_dead_lettered(dsn, tmp_path):
    config = workspace_file(tmp_path, [hook("wh-1")])
    events = [event(user=f"user-{i % 3}", messageId=f"m{i}", properties={"seq": i}) for i in range(12)]
    events[5]["properties"]["poison"] = True
    insert_gw(dsn, events)
    with _Harness(dsn, config, poison_attempts=2, processor_batch_size=100) as harness:
        processor = harness.processor
        real = processor.pipeline.process

        def process(jobs, workspace, now=None):
            # A bug that only this one event triggers, and that takes its whole batch down.
            if any(j.payload.get("properties", {}).get("poison") for j in jobs):
                raise RuntimeError("a processor bug triggered by one event")
            return real(jobs, workspace, now)

        processor.pipeline.process = process
        wait_for(lambda: pending_gw(dsn) == 0, 60, what="the queue to drain around the poison event")
        assert harness.thread.is_alive(), "the processor kept running"
    dead = failed_jobs(dsn)
    assert [(d["message_id"], d["stage"]) for d in dead] == [("m5", "processor")]
    assert "processing failed: RuntimeError: a processor bug triggered by one event" in dead[0]["reason"]
    delivered = rt_jobs(dsn)
    assert sorted(r["message_id"] for r in delivered) == sorted(f"m{i}" for i in range(12) if i != 5)
    for user in ("user-0", "user-1", "user-2"):  # the good ones kept their per-user order
        seqs = [r["payload"]["event"]["properties"]["seq"] for r in delivered if r["user_key"] == user]
        assert seqs == sorted(seqs)


def test_a_job_that_never_finishes_is_dead_lettered_unread(dsn, tmp_path):
    """A job whose processing kills the processor every time (say, a crash in native code) is claimed
    again and again; past poison_attempts + 2 claims it goes to failed_jobs without being run."""
    config = workspace_file(tmp_path, [hook("wh-1")])
    insert_gw(dsn, [event(user="a", messageId="killer"), event(user="b", messageId="fine")])
    query_ = "UPDATE gw_jobs SET attempts = 5 WHERE payload->>'messageId' = 'killer'"
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute(query_)
        conn.commit()
    with _Harness(dsn, config, poison_attempts=3):
        wait_for(lambda: pending_gw(dsn) == 0, 30, what="the queue to drain")
    [dead] = failed_jobs(dsn)
    assert dead["message_id"] == "killer" and "did not finish after 5 attempts" in dead["reason"]
    assert [r["message_id"] for r in rt_jobs(dsn)] == ["fine"]
    assert query(dsn, "SELECT count(*) FROM gw_jobs WHERE state = 1")[0][0] == 2
