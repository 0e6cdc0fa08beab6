"""Amplitude (HTTP V2, Identify, Group Identify and Usermap APIs) as a destination."""

from transformers.config_rules import Rules
from transformers.spec import DestinationSpec

RESIDENCY = ("standard", "EU")


def check(r: Rules) -> None:
    r.required_string("apiKey")
    r.one_of("residencyServer", RESIDENCY)


SPEC = DestinationSpec(
    name="AM", display_name="Amplitude", message_types=("track", "page", "screen", "identify", "group", "alias"),
    check=check, endpoints=("https://api2.amplitude.com", "https://api.eu.amplitude.com"),
    batching={"events": 2000, "bytes": 20_000_000})
