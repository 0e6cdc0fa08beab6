"""batch_requests: which delivery requests merge, in what order, within which limits."""

from __future__ import annotations

import datetime
import json
from urllib.parse import parse_qs

import pytest

from transformers.destinations import batch_requests, supports_batching, transform
from transformers.errors import TransformError, UnknownDestinationError

NOW = datetime.datetime(2024, 3, 1, 12, 0, tzinfo=datetime.UTC)
GA4 = {"measurementId": "G-1", "apiSecret": "s"}
AM = {"apiKey": "k", "residencyServer": "standard"}
GA = {"trackingID": "UA-1-1"}


def _track(user: str, n: int, **extra) -> dict:
    return {
        "type": "track",
        "event": f"Event {n}",
        "anonymousId": user,
        "messageId": f"{user}-m{n}",
        "timestamp": f"2024-03-01T11:00:{n:02d}Z",
        "properties": {"n": n},
        **extra,
    }


def _requests(dest_type: str, config: dict, events: list[dict]) -> list[dict]:
    return [r for e in events for r in transform(dest_type, e, config, NOW)]


def test_supports_batching() -> None:
    assert supports_batching("GA4") and supports_batching("AM") and supports_batching("GA")
    assert not supports_batching("WEBHOOK")
    with pytest.raises(UnknownDestinationError) as caught:
        supports_batching("NOPE")
    assert isinstance(caught.value, KeyError) and isinstance(caught.value, TransformError)


def test_unknown_destination_in_transform() -> None:
    with pytest.raises(KeyError, match="Unknown destination type: 'NOPE'"):
        transform("NOPE", {"type": "track"}, {}, NOW)


def test_ga4_merges_per_client_and_keeps_event_times() -> None:
    events = [_track("anon-a", 1), _track("anon-b", 2), _track("anon-a", 3)]
    merged = batch_requests("GA4", _requests("GA4", GA4, events), GA4)
    assert [indexes for _, indexes in merged] == [[0, 2], [1]]
    body = merged[0][0]["body"]["JSON"]
    assert "timestamp_micros" not in body
    assert body["client_id"] == "anon-a"
    assert [(e["name"], e["timestamp_micros"]) for e in body["events"]] == [
        ("Event_1", 1709290801000000),
        ("Event_3", 1709290803000000),
    ]
    assert merged[0][0]["endpoint"] == "https://www.google-analytics.com/mp/collect"
    assert merged[0][0]["params"] == {"api_secret": "s", "measurement_id": "G-1"}
    # a single request is passed through untouched
    assert merged[1][0] == _requests("GA4", GA4, [events[1]])[0]


def test_ga4_at_most_25_events_per_request() -> None:
    requests = _requests("GA4", GA4, [_track("anon-a", n % 60) for n in range(60)])
    merged = batch_requests("GA4", requests, GA4)
    assert [len(indexes) for _, indexes in merged] == [25, 25, 10]
    assert [len(r["body"]["JSON"]["events"]) for r, _ in merged] == [25, 25, 10]
    assert sum((indexes for _, indexes in merged), []) == list(range(60))


def test_ga4_different_user_properties_do_not_merge() -> None:
    a = _track("anon-a", 1, context={"traits": {"plan": "pro"}})
    b = _track("anon-a", 2, context={"traits": {"plan": "free"}})
    merged = batch_requests("GA4", _requests("GA4", GA4, [a, b]), GA4)
    assert [indexes for _, indexes in merged] == [[0], [1]]


def test_amplitude_batch_endpoint_and_barrier() -> None:
    events = [
        _track("anon-a", 1),
        _track("anon-b", 2),
        {"type": "alias", "userId": "new-1", "previousId": "anon-a", "messageId": "al"},
        _track("anon-a", 3),
        _track("anon-c", 4),
    ]
    requests = _requests("AM", AM, events)
    merged = batch_requests("AM", requests, AM)
    # the alias (a form request) is a barrier: nothing before it merges with anything after it
    assert [indexes for _, indexes in merged] == [[0, 1], [2], [3, 4]]
    first = merged[0][0]
    assert first["endpoint"] == "https://api2.amplitude.com/batch"
    assert first["body"]["JSON"]["api_key"] == "k"
    assert first["body"]["JSON"]["options"] == {"min_id_length": 1}
    assert [e["insert_id"] for e in first["body"]["JSON"]["events"]] == ["anon-a-m1", "anon-b-m2"]
    assert merged[1][0]["endpoint"] == "https://api2.amplitude.com/usermap"


def test_amplitude_eu_and_standard_do_not_merge() -> None:
    eu = {**AM, "residencyServer": "EU"}
    requests = _requests("AM", AM, [_track("a", 1)]) + _requests("AM", eu, [_track("b", 2), _track("c", 3)])
    merged = batch_requests("AM", requests, AM)
    assert [indexes for _, indexes in merged] == [[0], [1, 2]]
    assert merged[1][0]["endpoint"] == "https://api.eu.amplitude.com/batch"


def test_amplitude_limit_counts_events_not_requests() -> None:
    requests = _requests("AM", AM, [_track("anon-a", n % 60) for n in range(2100)])
    merged = batch_requests("AM", requests, AM)
    assert [len(indexes) for _, indexes in merged] == [2000, 100]


def test_ga_batch_of_20_hits_as_lines() -> None:
    requests = _requests("GA", GA, [_track(f"anon-{n}", n) for n in range(22)])
    merged = batch_requests("GA", requests, GA)
    assert [len(indexes) for _, indexes in merged] == [20, 2]
    batch = merged[0][0]
    assert batch["endpoint"] == "https://www.google-analytics.com/batch"
    lines = batch["body"]["FORM"].split("\n")
    assert len(lines) == 20
    assert parse_qs(lines[3]) == {k: [str(v)] for k, v in requests[3]["body"]["FORM"].items()}


def test_ga_batch_stays_under_16kb() -> None:
    long_url = {"url": "https://www.example.com/" + "p" * 1500}
    events = [_track(f"anon-{n}", n, properties=long_url) for n in range(20)]
    merged = batch_requests("GA", _requests("GA", GA, events), GA)
    assert [len(indexes) for _, indexes in merged] == [5, 5, 5, 5]
    for request, indexes in merged:
        if len(indexes) > 1:
            assert len(request["body"]["FORM"].encode()) <= 16384


def test_webhook_never_merges() -> None:
    config = {"webhookUrl": "https://h.example.com/"}
    requests = _requests("WEBHOOK", config, [_track("a", 1), _track("a", 2)])
    merged = batch_requests("WEBHOOK", requests, config)
    assert merged == [(requests[0], [0]), (requests[1], [1])]


def test_merged_request_is_json_serialisable() -> None:
    requests = _requests("GA4", GA4, [_track("a", 1), _track("a", 2)])
    ((merged, _),) = batch_requests("GA4", requests, GA4)
    json.dumps(merged)
    assert set(merged) == {"method", "endpoint", "headers", "params", "body", "batch_key"}
    assert set(merged["body"]) == {"JSON", "JSON_ARRAY", "XML", "FORM"}
