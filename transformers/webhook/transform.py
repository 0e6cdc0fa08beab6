"""Webhook: every event, unchanged, as JSON to the configured URL (GET sends it as query params).

There is no mapping file: the payload is the Segment event itself. The body is a new top-level dict
that shares the event's nested values: transformers never change their input, and neither may callers
change the requests they get back (the processor encodes them at once).
"""

from __future__ import annotations

import datetime
from typing import Any

from transformers.errors import ConfigurationError
from transformers.mapping import delivery_request, flatten, is_empty

METHODS = {"POST", "PUT", "PATCH", "DELETE", "GET"}


def transform(event: dict, config: dict, now: datetime.datetime) -> list[dict]:
    url = config.get("webhookUrl")
    if is_empty(url) or not isinstance(url, str):
        raise ConfigurationError("webhookUrl is required")
    url = url.strip()
    if not url.lower().startswith(("http://", "https://")):
        raise ConfigurationError(f"webhookUrl must be an http(s) URL: {url}")
    method = str(config.get("webhookMethod") or "POST").strip().upper()
    if method not in METHODS:
        raise ConfigurationError(f"webhookMethod {method} is not supported; use one of {sorted(METHODS)}")
    headers = {} if method == "GET" else {"Content-Type": "application/json"}
    for entry in config.get("headers") or []:
        if isinstance(entry, dict) and not is_empty(entry.get("from")):
            headers[str(entry["from"]).strip()] = "" if entry.get("to") is None else str(entry["to"])
    if method == "GET":
        params = {
            key: _query_value(value) for key, value in flatten(event, sep=".").items() if value is not None
        }
        return [delivery_request(url, method="GET", headers=headers, params=params)]
    return [delivery_request(url, method=method, headers=headers, json_body=dict(event))]


def _query_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value
