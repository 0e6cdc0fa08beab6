"""/health is O(1) (a million pending jobs change nothing), says 503 only when the gateway cannot
commit, and reads the heartbeats every gateway worker writes."""

from __future__ import annotations

import contextlib
import statistics
import time

import psycopg2
import requests

from jobsdb import datasets
from jobsdb.queries import query
from tests.conftest import start_gateway
from tests.gateway.conftest import fetch
from tests.support.procs import wait_for

MILLION = 1_000_000


def load_pending(dsn: str, n: int, per_statement: int = 100_000) -> None:
    """n pending gateway jobs, straight into gw_jobs, creating the datasets (job_id ranges) they need."""
    with contextlib.closing(psycopg2.connect(dsn)) as conn:
        for _ in range(n // per_statement):
            datasets.ensure(conn, "gw_jobs")
            with conn.cursor() as cur:
                cur.execute("INSERT INTO gw_jobs (part, source_id, user_key, payload, received_at) "
                            "SELECT i %% 16, 'src-web', 'u' || i, '{\"type\": \"track\"}', "
                            "now() - interval '1 hour' FROM generate_series(1, %s) AS i", (per_statement,))
            conn.commit()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("ANALYZE gw_jobs")


def gw_tuples_read(dsn: str) -> int:
    """Rows and index entries read from the gateway queue's datasets so far (Postgres' statistics)."""
    [(n,)] = fetch(dsn, "SELECT (SELECT coalesce(sum(seq_tup_read), 0) FROM pg_stat_user_tables "
                        "        WHERE relname LIKE 'gw\\_jobs\\_%') "
                        "     + (SELECT coalesce(sum(idx_tup_read), 0) FROM pg_stat_user_indexes "
                        "        WHERE relname LIKE 'gw\\_jobs\\_%')")
    return int(n)


def test_health_is_200_and_o1_with_a_million_pending_jobs(gateway, dsn):
    started = time.monotonic()
    load_pending(dsn, MILLION)
    print(f"\nloaded {MILLION} pending jobs in {time.monotonic() - started:.1f} s")
    assert fetch(dsn, "SELECT count(*) FROM gw_jobs WHERE state = 0")[0][0] == MILLION

    # The named query health runs reads one entry of the pending index, not the backlog.
    plan = "\n".join(r[0] for r in fetch(dsn, "EXPLAIN " + query("gw_oldest_pending")))
    assert "Index" in plan and "Seq Scan" not in plan and "Aggregate" not in plan and "Sort" not in plan, plan

    before = gw_tuples_read(dsn)
    latencies = []
    with requests.Session() as s:
        for _ in range(20):
            t0 = time.perf_counter()
            resp = s.get(gateway.url + "/health", timeout=15)
            latencies.append((time.perf_counter() - t0) * 1000)
            assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["db"] == "UP" and body["acceptingEvents"] is True and body["server"] == "UP"
    assert {"version", "config", "committer"} <= set(body)
    assert 3500 <= body["queue"]["gw_oldest_pending_age_s"] <= 3700, body  # the rows are an hour old
    assert "gw_pending" not in body["queue"]
    print(f"/health with {MILLION} pending jobs: p50 {statistics.median(latencies):.1f} ms, "
          f"max {max(latencies):.1f} ms over {len(latencies)} requests")
    # What those 20 requests read from the queue (statistics arrive within a second or so): a count(*)
    # would have read the million rows, or index entries, each time.
    wait_for(lambda: gw_tuples_read(dsn) > before, timeout=20, what="the health queries in pg_stat_user_tables")
    assert gw_tuples_read(dsn) - before < 1000


def test_health_is_503_only_while_postgres_is_down(gateway, postgres):
    assert gateway.get("/health").status_code == 200
    postgres.stop()
    try:
        down = wait_for(lambda: (r := gateway.get("/health")).status_code == 503 and r.json(), timeout=30,
                        what="/health to say 503")
        body = down
        assert body["db"] == "DOWN" and body["acceptingEvents"] is False and body["error"], body
        assert body["server"] == "UP" and body["version"]
    finally:
        postgres.start()
    wait_for(lambda: gateway.get("/health").status_code == 200, timeout=30, what="/health to recover")


def test_workers_beat_and_health_names_roles_that_are_down(dsn, workspace_file, tmp_path):
    gw = start_gateway(dsn, workspace_file, tmp_path, heartbeat_seconds=0.5, gateway_workers=2)
    try:
        rows = wait_for(lambda: (r := fetch(dsn, "SELECT owner, pid FROM heartbeats WHERE role = 'gateway'"))
                        and len(r) == 2 and r, timeout=20, what="a heartbeat from each gateway worker")
        assert len({pid for _owner, pid in rows}) == 2
        beat_at = dict(fetch(dsn, "SELECT owner, beat_at FROM heartbeats"))
        wait_for(lambda: all(b > beat_at[o] for o, b in fetch(dsn, "SELECT owner, beat_at FROM heartbeats")),
                 timeout=10, what="the heartbeats to move on")
        assert gw.get("/health").json()["roles"]["down"] == []
        # A processor whose last beat is an hour old is down.
        fetch(dsn, "INSERT INTO heartbeats (owner, role, host, pid, beat_at) "
                   "VALUES ('processor@h/1', 'processor', 'h', 1, now() - interval '1 hour') RETURNING 1")
        body = gw.get("/health").json()
        assert body["roles"]["down"] == ["processor"], body
        assert gw.get("/health").status_code == 200  # another role down does not make the gateway unhealthy
    finally:
        gw.proc.stop()
    # A clean stop removes the workers' heartbeats (the processor's stays).
    assert [r[0] for r in fetch(dsn, "SELECT role FROM heartbeats")] == ["processor"]
