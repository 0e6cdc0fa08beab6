"""Webhook: every event, as JSON, to the user's URL."""

from transformers.config_rules import MISSING, Rules, expected
from transformers.spec import DestinationSpec

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def check(r: Rules) -> None:
    r.http_url("webhookUrl")
    r.one_of("webhookMethod", METHODS)
    headers = r.get("headers")
    if headers is MISSING or headers is None:
        return
    if not isinstance(headers, list):
        r.add("headers", expected("array of {from, to} objects", headers))
        return
    for i, header in enumerate(headers):
        if not isinstance(header, dict):
            r.add(("headers", i), expected("object {from, to}", header))
            continue
        for key in ("from", "to"):
            value = header.get(key, MISSING)
            if not isinstance(value, str):
                r.add(("headers", i, key), expected("string", value))


SPEC = DestinationSpec(name="WEBHOOK", display_name="Webhook",
                       message_types=("track", "identify", "page", "screen", "group", "alias"), check=check)
