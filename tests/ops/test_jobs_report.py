"""`sluice jobs`: queue depths and dead letters by destination, stage and reason, open and replayed."""

from __future__ import annotations

from tests.ops.conftest import add_failed, router_failure, sluice, sluice_json, transform_failure

KEY = "destination answered 400: invalid api_key"


def test_failures_by_destination_and_reason(dsn):
    add_failed(dsn, *[router_failure("amp", f"u{i}", i, 400, KEY, dest_type="AM") for i in range(3)],
               router_failure("amp", "u9", 9, 503, "retry budget exhausted after 3 attempts: HTTP 503", dest_type="AM"),
               transform_failure("hook", "u1", 1, "user_transform", "Error: boom"))
    assert sluice_json(dsn, "replay", "--destination", "amp", "--status", "400", "--limit", "1", "--yes")[
        "replayed"] == 1

    report = sluice_json(dsn, "jobs")
    assert set(report["queues"]) == {"gw", "rt", "batch_rt"}
    assert report["queues"]["rt"]["states"] == {"pending": 1}  # the replayed job waits for a router
    failed = {(f["destination_id"], f["stage"], f["reason"]): (f["count"], f["replayed"]) for f in report["failed"]}
    assert failed == {
        ("amp", "router", KEY): (2, 1),
        ("amp", "router", "retry budget exhausted after 3 attempts: HTTP 503"): (1, 0),
        ("hook", "user_transform", "Error: boom"): (1, 0),
    }
    assert report["failed"][0]["reason"] == KEY and report["failed"][0]["destination_type"] == "AM"
    assert report["failed_open"] == 4

    text = sluice(dsn, "jobs")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    row = next(line for line in lines if KEY in line)
    assert row.split()[:4] == ["2", "1", "amp", "(AM)"]
    assert any("hook" in line and "user_transform" in line and "Error: boom" in line for line in lines)
    assert "sluice replay --destination" in text.stdout


def test_no_failures(dsn):
    text = sluice(dsn, "jobs")
    assert text.returncode == 0, text.stderr
    assert "failed jobs: none" in text.stdout
    assert sluice_json(dsn, "jobs")["failed"] == []


def test_processes_from_their_heartbeats(dsn):
    from tests.ops.conftest import sql

    sql(dsn, "INSERT INTO heartbeats (owner, role, host, pid, state, beat_at) VALUES "
             "('processor@h/1', 'processor', 'h', 1, 'up', now()), "
             "('router@h/2', 'router', 'h', 2, 'up', now() - interval '10 minutes')")
    sql(dsn, "INSERT INTO heartbeats (owner, role, host, pid, state, detail) VALUES "
             "('up@h/9:router#0', 'router', 'h', 9, 'crash-looping', '{\"restarts_last_minute\": 6}')")
    procs = sluice_json(dsn, "jobs")["processes"]
    assert procs["roles"]["processor"]["live"] == 1 and procs["down"] == ["router"]
    text = sluice(dsn, "jobs").stdout
    assert "processes alive: processor 1, router 0" in text and "roles down: router" in text
    assert "crash-looping: router on h (6 restarts in the last minute)" in text
