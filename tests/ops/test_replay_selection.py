"""`sluice replay` selectors, --dry-run and what a replay writes: which rows, into which queue, in which
order, marked and never deleted; the safety rails (an explicit selection, --yes without a terminal)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import psycopg2

from jobsdb.queue import GW_PARTITIONS, partition_of
from jobsdb.replay import REPLAY_KEY, Selection, replay
from processor.pipeline import REPLAY_KEY as PROCESSOR_REPLAY_KEY
from tests.ops.conftest import (
    add_failed,
    failed_rows,
    queue_rows,
    router_failure,
    sluice,
    sluice_json,
    sql,
    transform_failure,
)

OLD = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


def seed(dsn: str) -> dict[str, list[int]]:
    """A mixed dead-letter table: two destinations, three stages, several statuses and reasons, two ages."""
    return {
        "old": add_failed(dsn, router_failure("amp", "u1", 1, 400, "destination answered 400: invalid api_key"),
                          router_failure("amp", "u2", 2, 400, "destination answered 400: invalid api_key"),
                          failed_at=OLD),
        "amp": add_failed(dsn, router_failure("amp", "u1", 3, 413, "destination answered 413: payload too large"),
                          router_failure("amp", "u1", 4, 503, "retry budget exhausted after 3 attempts: HTTP 503"),
                          router_failure("amp", "u1", 5, 400, "destination answered 400: Invalid API_KEY")),
        "hook": add_failed(dsn, transform_failure("hook", "u3", 6, "user_transform", "Error: boom"),
                           transform_failure("hook", "u3", 7, "dest_transform", "webhookUrl is required"),
                           router_failure("hook", "u3", 8, 404, "destination answered 404: no route",
                                          source="src-backend")),
    }


def dry(dsn: str, *args: str) -> list[int]:
    out = sluice_json(dsn, "replay", "--dry-run", "--show", "100", *args)
    assert out["count"] == len(out["jobs"])
    return [j["id"] for j in out["jobs"]]


def test_selectors_in_a_dry_run_change_nothing(dsn):
    ids = seed(dsn)
    old, amp, hook = ids["old"], ids["amp"], ids["hook"]
    before = failed_rows(dsn)
    assert dry(dsn, "--destination", "amp") == old + amp
    assert dry(dsn, "--destination", "amp,hook") == old + amp + hook
    assert dry(dsn, "--destination", "amp", "--destination", "nope") == old + amp
    assert dry(dsn, "--source", "src-backend") == [hook[2]]
    assert dry(dsn, "--stage", "user_transform", "--stage", "dest_transform") == hook[:2]
    assert dry(dsn, "--stage", "router", "--destination", "hook") == [hook[2]]
    assert dry(dsn, "--status", "400") == [*old, amp[2]]
    assert dry(dsn, "--status", "413", "--status", "404") == [amp[0], hook[2]]
    assert dry(dsn, "--reason", "invalid API_key") == [*old, amp[2]]  # case-insensitive substring
    assert dry(dsn, "--reason", "budget") == [amp[1]]
    assert dry(dsn, "--id", str(amp[1]), "--ids", f"{hook[0]},{old[0]}") == [old[0], amp[1], hook[0]]
    assert dry(dsn, "--until", "2026-02-01T00:00:00Z") == old
    assert dry(dsn, "--since", "2026-02-01") == amp + hook
    assert dry(dsn, "--since", "1h") == amp + hook
    assert dry(dsn, "--since", "2026-01-10T12:00:00Z", "--until", "2026-01-10T12:00:01Z") == old
    assert dry(dsn, "--destination", "amp", "--status", "400", "--since", "2026-02-01") == [amp[2]]
    assert dry(dsn, "--all") == old + amp + hook

    limited = sluice_json(dsn, "replay", "--dry-run", "--all", "--limit", "2")
    assert limited["count"] == 2 and limited["matched"] == 8
    table = sluice(dsn, "replay", "--dry-run", "--destination", "amp", env={"COLUMNS": "200"})
    assert table.returncode == 0, table.stderr
    assert "5 failed jobs match" in table.stdout and "dry run, nothing changed" in table.stdout
    assert "invalid api_key" in table.stdout and str(old[0]) in table.stdout
    assert "413" in table.stdout

    assert failed_rows(dsn) == before
    assert queue_rows(dsn, "rt_jobs") == [] and queue_rows(dsn, "gw_jobs") == []


def test_replay_writes_each_stage_back_where_it_failed_in_original_order(dsn):
    ids = seed(dsn)
    sql(dsn, "UPDATE sluice_settings SET value = '8' WHERE key = 'router_partitions'")  # as migrated with 8
    out = sluice_json(dsn, "replay", "--all", "--yes", "--slice-size", "3")
    assert out["replayed"] == 8
    assert {(t["queue"], t["destination_id"]): t["count"] for t in out["targets"]} == {
        ("rt_jobs", "amp"): 5, ("rt_jobs", "hook"): 1, ("gw_jobs", "hook"): 2}

    dead = {r["id"]: r for r in failed_rows(dsn)}
    rt = queue_rows(dsn, "rt_jobs")
    # Router failures: new router jobs in failure order, the old delivery requests dropped so the router
    # transforms again with the destination's current config.
    router_ids = [*ids["old"], *ids["amp"], ids["hook"][2]]
    assert [j["payload"]["replay_of"] for j in rt] == router_ids
    for job in rt:
        row = dead[job["payload"]["replay_of"]]
        assert job["payload"]["requests"] is None
        assert job["payload"]["event"]["messageId"] == row["message_id"] == job["message_id"]
        assert job["destination_id"] == row["destination_id"] == job["payload"]["destination_id"]
        assert job["payload"]["dest_type"] == "WEBHOOK"
        assert job["part"] == partition_of(job["user_key"], 8)
        assert job["state"] == 0
    assert rt[-1]["payload"]["source_id"] == "src-backend"

    # Transformation failures: back into the gateway queue, tagged for their one destination.
    gw = queue_rows(dsn, "gw_jobs")
    assert REPLAY_KEY == PROCESSOR_REPLAY_KEY
    assert [j["payload"][REPLAY_KEY] for j in gw] == [
        {"destination_id": "hook", "failed_job_id": ids["hook"][0]},
        {"destination_id": "hook", "failed_job_id": ids["hook"][1]}]
    assert [j["payload"]["messageId"] for j in gw] == ["u3-6", "u3-7"]
    assert all(j["part"] == partition_of("u3", GW_PARTITIONS) and j["source_id"] == "src-web" for j in gw)

    # Every row marked (and kept); a second replay finds nothing; --include-replayed selects them again.
    assert all(r["replay_count"] == 1 and r["replayed_at"] is not None for r in dead.values())
    assert {r["replayed_into"] for r in dead.values()} == {"rt_jobs", "gw_jobs"}
    assert sluice_json(dsn, "replay", "--all", "--yes")["replayed"] == 0
    assert sluice_json(dsn, "replay", "--dry-run", "--all", "--include-replayed")["count"] == 8
    again = sluice_json(dsn, "replay", "--ids", str(ids["amp"][0]), "--include-replayed", "--yes")
    assert again["replayed"] == 1
    assert sql(dsn, "SELECT replay_count FROM failed_jobs WHERE id = %s", (ids["amp"][0],)) == [(2,)]
    assert len(queue_rows(dsn, "rt_jobs")) == 7


def test_limit_replays_the_oldest_and_text_output_names_the_queues(dsn):
    ids = seed(dsn)
    done = sluice(dsn, "replay", "--destination", "amp", "--limit", "2", "--yes")
    assert done.returncode == 0, done.stderr
    assert "replayed 2 failed jobs" in done.stdout
    assert "2 → rt_jobs (re-enters the router) for destination amp" in done.stdout
    assert [j["payload"]["replay_of"] for j in queue_rows(dsn, "rt_jobs")] == ids["old"]
    assert [r["id"] for r in failed_rows(dsn) if r["replayed_at"]] == ids["old"]


def test_an_explicit_selection_and_yes_are_required(dsn):
    seed(dsn)
    nothing = sluice(dsn, "replay", "--yes")
    assert nothing.returncode != 0 and "--all" in nothing.stderr
    no_tty = sluice(dsn, "replay", "--destination", "amp")
    assert no_tty.returncode != 0 and "--yes" in no_tty.stderr and "5 failed jobs match" in no_tty.stderr
    bad = sluice(dsn, "replay", "--since", "yesterday-ish", "--yes")
    assert bad.returncode != 0 and "ISO 8601" in bad.stderr
    none = sluice(dsn, "replay", "--destination", "nope", "--yes")
    assert none.returncode == 0 and "nothing to replay" in none.stdout
    assert all(r["replayed_at"] is None for r in failed_rows(dsn))
    assert queue_rows(dsn, "rt_jobs") == []


def test_two_replays_at_once_replay_each_row_once(dsn):
    rows = [router_failure("amp", f"u{i % 7}", i) for i in range(300)]
    add_failed(dsn, *rows)
    sel = Selection(destinations=("amp",))
    with contextlib.closing(psycopg2.connect(dsn)) as a, contextlib.closing(psycopg2.connect(dsn)) as b:
        # Interleave two replays slice by slice: a slice locks its rows, the other skips what was replayed.
        import threading

        results = []
        threads = [threading.Thread(target=lambda c=c: results.append(replay(c, sel, "t", slice_size=25)))
                   for c in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sum(r.selected for r in results) == 300
    rt = queue_rows(dsn, "rt_jobs")
    assert sorted(j["payload"]["replay_of"] for j in rt) == sorted(r["id"] for r in failed_rows(dsn))
    assert all(r["replay_count"] == 1 for r in failed_rows(dsn))


def test_replay_until_the_selection_was_counted(dsn):
    """Rows failing while a replay runs are left for the next one: the replay ends where it counted."""
    first = add_failed(dsn, *[router_failure("amp", "u1", i) for i in range(5)])
    with contextlib.closing(psycopg2.connect(dsn)) as conn:
        calls = []

        def on_slice(part):
            if not calls:
                add_failed(dsn, router_failure("amp", "u1", 99))
            calls.append(part.selected)

        result = replay(conn, Selection(destinations=("amp",)), "t", slice_size=2, on_slice=on_slice)
    assert result.selected == 5 and calls == [2, 2, 1]
    assert [j["payload"]["replay_of"] for j in queue_rows(dsn, "rt_jobs")] == first
    assert sum(1 for r in failed_rows(dsn) if r["replayed_at"] is None) == 1
    assert datetime.now(UTC) - timedelta(minutes=5) < failed_rows(dsn)[0]["replayed_at"]
