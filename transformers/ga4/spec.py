"""GA4 (Measurement Protocol) as a destination: config rules, message types, endpoints, batching."""

from transformers.config_rules import Rules
from transformers.spec import DestinationSpec

CLIENT_TYPES = ("gtag", "firebase")


def check(r: Rules) -> None:
    r.required_string("apiSecret")
    r.one_of("typesOfClient", CLIENT_TYPES)
    if r.config.get("typesOfClient") == "firebase":
        r.required_string("firebaseAppId", ' (typesOfClient is "firebase")')
    else:
        r.required_string("measurementId")


SPEC = DestinationSpec(
    name="GA4", display_name="Google Analytics 4", message_types=("track", "page", "group"), check=check,
    endpoints=("https://www.google-analytics.com/mp/collect", "https://www.google-analytics.com/debug/mp/collect"),
    batching={"events": 25})
