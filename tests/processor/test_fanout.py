"""A real `sluice processor` against a real Postgres: fan-out to every destination that should get an
event, each filter rule counted, warehouses to the batch-router queue, transformer errors dead-lettered."""

from __future__ import annotations

from jobsdb.queue import partition_of
from tests.processor.support import (
    drain,
    event,
    failed_jobs,
    filtered,
    ga4,
    hook,
    insert_gw,
    per_destination,
    postgres,
    rt_jobs,
    start_processor,
    workspace_file,
)


def test_fans_out_to_cloud_and_warehouse_destinations_in_order(dsn, tmp_path):
    config = workspace_file(tmp_path, [hook("wh-1"), ga4("ga4-1"), postgres("pg-1")])
    events = [event("Clicked", user=f"user-{i % 3}", properties={"n": i}) for i in range(30)]
    events.append(event(kind="identify", user="user-0", traits={"plan": "pro"}))
    insert_gw(dsn, events)
    proc = start_processor(dsn, config, tmp_path)
    try:
        drain(dsn, proc)
    finally:
        proc.stop()

    ids = [e["messageId"] for e in events]
    rt = rt_jobs(dsn)
    assert per_destination(dsn) == {**{("wh-1", m): 1 for m in ids}, **{("ga4-1", m): 1 for m in ids[:-1]}}
    assert per_destination(dsn, "batch_rt_jobs") == {("pg-1", m): 1 for m in ids}
    # GA4 does not take identify: counted with the rule, not lost.
    assert filtered(dsn) == {("src-web", "ga4-1", "supported_message_types"): 1}

    # Per (destination, user) the queue order is the gateway order.
    for dest in ("wh-1", "ga4-1"):
        for user in ("user-0", "user-1", "user-2"):
            got = [r["message_id"] for r in rt if r["destination_id"] == dest and r["user_key"] == user]
            want = [e["messageId"] for e in events if e["userId"] == user and (dest == "wh-1" or e["type"] == "track")]
            assert got == want

    job = next(r for r in rt if r["destination_id"] == "ga4-1")
    payload = job["payload"]
    assert set(payload) == {"event", "requests", "dest_type", "source_id", "destination_id", "gw_job_id", "received_at"}
    assert payload["dest_type"] == "GA4" and payload["destination_id"] == "ga4-1" and payload["source_id"] == "src-web"
    assert payload["event"]["messageId"] == job["message_id"]
    assert payload["received_at"] == payload["event"]["receivedAt"]
    assert payload["requests"][0]["params"]["measurement_id"] == "G-TEST123"
    assert job["part"] == partition_of(job["user_key"], 16)
    warehouse = rt_jobs(dsn, "batch_rt_jobs")[0]["payload"]
    assert warehouse["requests"] == [] and warehouse["dest_type"] == "POSTGRES"
    assert failed_jobs(dsn) == []


def test_each_filter_rule_is_counted(dsn, tmp_path):
    dests = [
        hook("all"),
        hook("disabled", enabled=False),
        hook("no-processor", isProcessorEnabled=False),
        hook("excluded", display="Excluded Hook"),
        hook("tracks-only", message_types=["track"]),
        hook("allow", config={"webhookUrl": "http://127.0.0.1:9/a", "eventFilteringOption": "whitelistedEvents",
                              "whitelistedEvents": [{"eventName": "Signed Up"}]}),
        hook("deny", config={"webhookUrl": "http://127.0.0.1:9/d", "eventFilteringOption": "blacklistedEvents",
                             "blacklistedEvents": [{"eventName": "Signed Up"}]}),
    ]
    config = workspace_file(tmp_path, dests)
    signed_up = event("Signed Up", integrations={"All": True, "Excluded Hook": False})
    clicked = event("Clicked")
    identify = event(kind="identify", integrations={"All": False, "Webhook": True})
    insert_gw(dsn, [signed_up, clicked, identify])
    proc = start_processor(dsn, config, tmp_path)
    try:
        drain(dsn, proc)
    finally:
        proc.stop()

    s, c, i = signed_up["messageId"], clicked["messageId"], identify["messageId"]
    assert per_destination(dsn) == {
        ("all", s): 1, ("all", c): 1, ("all", i): 1,
        ("excluded", c): 1,  # identify has All=false and no "Excluded Hook" key
        ("tracks-only", s): 1, ("tracks-only", c): 1,
        ("allow", s): 1, ("allow", i): 1,  # identify is not a track event: lists don't apply
        ("deny", c): 1, ("deny", i): 1,
    }
    assert filtered(dsn) == {
        ("src-web", "disabled", "destination_disabled"): 3,
        ("src-web", "no-processor", "processor_disabled"): 3,
        ("src-web", "excluded", "integrations"): 2,
        ("src-web", "tracks-only", "supported_message_types"): 1,
        ("src-web", "allow", "event_filtering"): 1,
        ("src-web", "deny", "event_filtering"): 1,
    }


def test_destination_transformer_error_goes_to_failed_jobs(dsn, tmp_path):
    # GA4 refuses an ecommerce event without an order id; the other event and destination go on.
    config = workspace_file(tmp_path, [ga4("ga4-1"), hook("wh-1")])
    bad = event("Order Completed", properties={"revenue": 10})
    good = event("Clicked")
    insert_gw(dsn, [bad, good])
    proc = start_processor(dsn, config, tmp_path)
    try:
        drain(dsn, proc)
    finally:
        proc.stop()
    assert per_destination(dsn) == {("ga4-1", good["messageId"]): 1, ("wh-1", good["messageId"]): 1,
                                    ("wh-1", bad["messageId"]): 1}
    [failed] = failed_jobs(dsn)
    assert failed["stage"] == "dest_transform"
    assert (failed["destination_id"], failed["destination_type"], failed["source_id"]) == ("ga4-1", "GA4", "src-web")
    assert failed["message_id"] == bad["messageId"] and failed["event"] == bad
    assert "order_id" in failed["reason"]
    assert failed["attempts"] == 1 and failed["original_queue"] == "gw_jobs" and failed["original_job_id"]


def test_events_of_removed_or_disabled_sources_are_counted(dsn, tmp_path):
    config = workspace_file(tmp_path, [hook("wh-1")])
    insert_gw(dsn, [event()], source_id="src-gone")
    insert_gw(dsn, [event(), event()], source_id="src-disabled")
    proc = start_processor(dsn, config, tmp_path)
    try:
        drain(dsn, proc)
    finally:
        proc.stop()
    assert rt_jobs(dsn) == []
    assert filtered(dsn) == {("src-gone", "", "source_unknown"): 1, ("src-disabled", "", "source_disabled"): 2}


def test_unsupported_warehouse_types_are_dead_lettered_not_queued(dsn, tmp_path):
    from tests.processor.support import (
        drain,
        event,
        failed_jobs,
        insert_gw,
        rt_jobs,
        start_processor,
        workspace_file,
    )
    from tests.support import workspace as ws

    bq = ws.destination("bq", "BQ", "BigQuery", {"project": "p"})
    config = workspace_file(tmp_path, [bq])
    insert_gw(dsn, [event(user="u1", messageId="m-bq")])
    proc = start_processor(dsn, config, tmp_path)
    try:
        drain(dsn, proc)
    finally:
        proc.stop()
    assert rt_jobs(dsn, "batch_rt_jobs") == []
    [dead] = failed_jobs(dsn)
    assert (dead["destination_id"], dead["stage"], dead["message_id"]) == ("bq", "warehouse", "m-bq")
    assert "warehouse destination type BQ is not supported yet" in dead["reason"]
