"""Postgres goes away under a running gateway: no 200 without a commit, 503 while it is down, and
recovery without restarting the gateway. A real SDK's retries then deliver what was refused."""

from __future__ import annotations

import contextlib
from collections import Counter

import psycopg2
import pytest
import requests
import segment.analytics as segment
import segment.analytics.request as segment_request

from tests.conftest import gw_events
from tests.e2e.helpers import WEB_KEY
from tests.support.procs import wait_for


def send(gateway, mid: str) -> requests.Response:
    return gateway.post("/v1/track", {"userId": "outage-user", "event": "Outage Probe", "messageId": mid})


def queued_ids(dsn: str) -> list[str]:
    with contextlib.closing(psycopg2.connect(dsn)) as conn:
        return [e["messageId"] for e in gw_events(conn)]


@pytest.fixture
def postgres(pg_server):
    """The session's embedded Postgres, to stop; it is always started again, whatever the test did."""
    if pg_server.embedded is None:
        pytest.fail("this test needs the embedded test Postgres (unset SLUICE_TEST_DATABASE_URL)")
    try:
        yield pg_server
    finally:
        pg_server.start()


@pytest.fixture
def sdk_statuses():
    """Status codes the segment-analytics-python client got back (a hook on its own session)."""
    seen: list[int] = []

    def hook(resp, *args, **kwargs):
        seen.append(resp.status_code)

    segment_request._session.hooks["response"].append(hook)
    yield seen
    segment_request._session.hooks["response"].remove(hook)


def test_gateway_answers_503_while_postgres_is_down_and_recovers(gateway, dsn, postgres, sdk_statuses):
    statuses: dict[str, int] = {}
    for i in range(3):
        statuses[f"before-{i}"] = send(gateway, f"before-{i}").status_code
    assert set(statuses.values()) == {200}

    sdk_errors: list = []
    sdk = segment.Client(WEB_KEY, host=gateway.url, upload_interval=0.1, max_retries=10,
                         on_error=lambda e, batch: sdk_errors.append((e, batch)))
    sdk_ids: list[str] = []
    try:
        postgres.stop()
        for i in range(5):
            r = send(gateway, f"during-{i}")
            statuses[f"during-{i}"] = r.status_code
            assert r.status_code == 503, (r.status_code, r.text)  # never 200 for an event it did not store
            body = r.json()
            assert body["code"] and body["message"]
            assert int(r.headers.get("Retry-After", "0")) >= 1
        health = gateway.get("/health")
        assert health.status_code == 503 and health.json()["db"] == "DOWN"

        # A real client during the outage: the 503 makes it keep its events and retry.
        for i in range(3):
            ok, msg = sdk.track(user_id="outage-sdk", event="Buffered", properties={"i": i})
            assert ok
            sdk_ids.append(msg["messageId"])
        wait_for(lambda: 503 in sdk_statuses, timeout=15, what="the SDK to be refused with a 503")
        assert 200 not in sdk_statuses

        postgres.start()
        probes: list[tuple[str, int]] = []

        def accepted_again() -> bool:
            mid = f"recover-{len(probes)}"
            code = send(gateway, mid).status_code
            probes.append((mid, code))
            return code == 200

        wait_for(accepted_again, timeout=30, interval=0.2, what="the gateway to accept events after the restart")
        assert all(code in (200, 503) for _mid, code in probes), probes
        statuses.update(probes)

        for i in range(3):
            r = send(gateway, f"after-{i}")
            statuses[f"after-{i}"] = r.status_code
            assert r.status_code == 200, r.text
        health = gateway.get("/health")
        assert health.status_code == 200 and health.json()["db"] == "UP"

        sdk.flush()  # returns once the client's queue is delivered (or given up: then on_error is called)
    finally:
        sdk.shutdown()

    assert not sdk_errors, sdk_errors
    assert sdk_statuses[-1] == 200
    queued = Counter(queued_ids(dsn))
    acked = [mid for mid, code in statuses.items() if code == 200]
    missing = [mid for mid in acked + sdk_ids if mid not in queued]
    assert not missing, f"answered 200 but not in the queue: {missing}"
    assert all(queued[mid] == 1 for mid in acked), {mid: queued[mid] for mid in acked}
    # At-least-once: a 503'd event may or may not be queued; nothing that was never sent is.
    assert set(queued) <= set(statuses) | set(sdk_ids)
