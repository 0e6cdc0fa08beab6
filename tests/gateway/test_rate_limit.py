"""The per-write-key rate limit holds across gateway workers and gateway processes (one row per key in
Postgres), not per process."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import requests

from tests.conftest import gw_events, start_gateway
from tests.support.workspace import BACKEND_KEY, WEB_KEY


def test_two_workers_and_a_second_gateway_together_admit_the_limit(dsn, workspace_file, tmp_path, db):
    limit = 20
    settings = {"rate_limit_enabled": "true", "rate_limit_events": limit, "rate_limit_window": 60}
    two_workers = start_gateway(dsn, workspace_file, tmp_path, gateway_workers=2, **settings)
    another = start_gateway(dsn, workspace_file, tmp_path, **settings)
    try:
        def send(i: int) -> requests.Response:
            gw = (two_workers, another)[i % 2]
            # A new connection per request, so the two workers of the first gateway share the load.
            return requests.post(gw.url + "/v1/track", json={"userId": f"u{i}", "event": "Limited",
                                                              "messageId": f"rl-{i}"},
                                 auth=(WEB_KEY, ""), headers={"Connection": "close"}, timeout=15)

        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(send, range(4 * limit)))
        codes = [r.status_code for r in responses]
        admitted = codes.count(200)
        # The budget refills at limit/window per second while the test runs: a second or two at most.
        assert limit <= admitted <= limit + 2, f"{admitted} admitted for a limit of {limit}: {codes}"
        assert set(codes) == {200, 429}, codes
        assert all(int(r.headers["Retry-After"]) >= 1 for r in responses if r.status_code == 429)
        assert len(gw_events(db)) == admitted
        # Another write key has its own budget.
        r = two_workers.post("/v1/track", {"userId": "b", "event": "Other"}, write_key=BACKEND_KEY)
        assert r.status_code == 200, r.text
    finally:
        two_workers.proc.stop()
        another.proc.stop()
