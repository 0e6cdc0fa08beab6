"""Google Analytics (Universal, Measurement Protocol v1) as a destination. Google stopped processing
Universal Analytics hits in July 2024; the destination keeps working for setups that still forward them."""

from transformers.config_rules import Rules
from transformers.spec import DestinationSpec


def check(r: Rules) -> None:
    r.required_string("trackingID")


SPEC = DestinationSpec(
    name="GA", display_name="Google Analytics", message_types=("track", "page", "screen", "identify"), check=check,
    endpoints=("https://www.google-analytics.com/collect", "https://www.google-analytics.com/batch"),
    batching={"events": 20, "bytes": 16384},
    notes=("Google retired Universal Analytics in July 2024; prefer GA4",))
