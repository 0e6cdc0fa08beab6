"""Timestamps the gateway keeps as sent (out of range, unparseable, absurd epochs) never crash a
destination transformer: each either maps the event or refuses it with a TransformError."""

from __future__ import annotations

import datetime

import pytest

from transformers import destinations
from transformers.errors import TransformError

CONFIGS = {"GA4": {"apiSecret": "s", "measurementId": "G-1", "typesOfClient": "gtag"}, "AM": {"apiKey": "k"},
           "GA": {"trackingID": "UA-1"}, "WEBHOOK": {"webhookUrl": "http://127.0.0.1:9/hook"}}
HOSTILE = ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "not a time", 1e300, -1e20, float("nan")]


@pytest.mark.parametrize("dest_type", sorted(CONFIGS))
@pytest.mark.parametrize("value", HOSTILE, ids=repr)
def test_hostile_timestamps_map_or_refuse(dest_type, value):
    event = {"type": "track", "event": "Clicked", "userId": "u", "anonymousId": "a", "messageId": "m",
             "originalTimestamp": value, "timestamp": value, "sentAt": value,
             "receivedAt": "2026-12-01T00:00:00.000Z", "properties": {"at": value}}
    try:
        requests = destinations.transform(dest_type, event, CONFIGS[dest_type], datetime.datetime.now(datetime.UTC))
    except TransformError:
        return
    assert isinstance(requests, list)
