"""The fan-out rules on their own: which destination gets an event, and which rule says no."""

from __future__ import annotations

import pytest

from config.workspace import Destination
from processor import fanout


def dest(enabled=True, processor=True, display="Webhook", types=None, config=None) -> Destination:
    return Destination(id="d1", name="d1", enabled=enabled, is_processor_enabled=processor, type="WEBHOOK",
                       display_name=display, config=config or {}, supported_message_types=types,
                       transformation=None, is_warehouse=False)


def before(event: dict, d: Destination) -> str | None:
    return fanout.before_transform(event, fanout.integrations_of(event), d)


@pytest.mark.parametrize(("integrations", "allowed"), [
    (None, True),
    ({}, True),
    ({"All": True}, True),
    ({"All": False}, False),
    ({"All": False, "Webhook": True}, True),
    ({"All": False, "Webhook": {"someOption": 1}}, True),
    ({"Webhook": False}, False),
    ({"All": True, "Webhook": False}, False),
    ({"Other": False}, True),
    ({"All": False, "Other": True}, False),
    ({"All": "yes"}, False),  # rudder-server: a non-boolean All matches nothing
    ("not-an-object", False),
])
def test_integrations_object(integrations, allowed):
    event = {"type": "track", "event": "x"}
    if integrations is not None:
        event["integrations"] = integrations
    assert (before(event, dest()) is None) is allowed
    if not allowed:
        assert before(event, dest()) == fanout.INTEGRATIONS


def test_disabled_destinations():
    event = {"type": "track", "event": "x"}
    assert before(event, dest(enabled=False)) == fanout.DESTINATION_DISABLED
    assert before(event, dest(processor=False)) == fanout.PROCESSOR_DISABLED


def test_supported_message_types():
    rules = fanout.DestinationRules(dest(types=("track", "page")))
    assert rules.after_transform({"type": "track", "event": "x"}) is None
    assert rules.after_transform({"type": "Page"}) is None
    assert rules.after_transform({"type": "identify"}) == fanout.MESSAGE_TYPE
    assert rules.after_transform({}) == fanout.MESSAGE_TYPE
    assert fanout.DestinationRules(dest(types=None)).after_transform({"type": "alias"}) is None


def test_allow_list():
    config = {"eventFilteringOption": "whitelistedEvents",
              "whitelistedEvents": [{"eventName": "Order Completed"}, {"eventName": " signup "}, {"eventName": ""}]}
    rules = fanout.DestinationRules(dest(config=config))
    assert rules.after_transform({"type": "track", "event": "Order Completed"}) is None
    assert rules.after_transform({"type": "track", "event": "SIGNUP"}) is None
    assert rules.after_transform({"type": "track", "event": "Clicked"}) == fanout.EVENT_FILTERING
    assert rules.after_transform({"type": "track"}) == fanout.EVENT_FILTERING
    assert rules.after_transform({"type": "identify"}) is None  # only track events are filtered


def test_deny_list():
    config = {"eventFilteringOption": "blacklistedEvents", "blacklistedEvents": [{"eventName": "Clicked"}],
              "whitelistedEvents": [{"eventName": "Other"}]}
    rules = fanout.DestinationRules(dest(config=config))
    assert rules.after_transform({"type": "track", "event": "clicked"}) == fanout.EVENT_FILTERING
    assert rules.after_transform({"type": "track", "event": "Other"}) is None
    assert rules.after_transform({"type": "track", "event": "Anything"}) is None


def test_filtering_disabled_ignores_the_lists():
    config = {"eventFilteringOption": "disable", "whitelistedEvents": [{"eventName": "Only"}]}
    assert fanout.DestinationRules(dest(config=config)).after_transform({"type": "track", "event": "x"}) is None


def test_fan_out_message_ids():
    from processor.user_transform import assign_message_ids

    outs = assign_message_ids([{"a": 1}, {"messageId": "m"}, {"messageId": "custom"}, {}], "m")
    assert [o["messageId"] for o in outs] == ["m", "m-1", "custom", "m-3"]

