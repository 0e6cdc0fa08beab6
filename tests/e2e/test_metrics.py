"""/metrics: Prometheus text with the gateway's counters (across its workers) and live queue depths."""

from __future__ import annotations

import re

from tests.support.procs import wait_for


def sample(text: str, name: str, **labels) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_count_events_and_show_queue_depth(gateway):
    ok = gateway.post("/v1/batch", {"batch": [{"type": "track", "userId": "u", "event": "A"},
                                              {"type": "track", "userId": "u", "event": "B"},
                                              {"type": "track", "event": "no user"}]})
    assert ok.status_code == 200
    assert gateway.post("/v1/track", {"userId": "u"}).status_code == 400

    def scraped():
        r = gateway.get("/metrics")
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
        return r.text if sample(r.text, "sluice_gateway_events_total", outcome="rejected") == 2 else None

    text = wait_for(scraped, 10, what="the counters to show up")
    assert sample(text, "sluice_gateway_events_total", source_id="src-web", outcome="accepted") == 2
    assert sample(text, "sluice_queue_pending", queue="gw") == 2
    assert sample(text, "sluice_database_up") == 1
    assert sample(text, "sluice_gateway_requests_total", route="/v1/batch", status="200") == 1
    assert sample(text, "sluice_gateway_requests_total", route="/v1/track", status="400") == 1
    assert re.search(r"^sluice_gateway_commit_rows_count \d", text, re.M)
