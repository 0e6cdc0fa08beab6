"""GA4 (Measurement Protocol): Segment track, page and group calls -> one `/mp/collect` request each;
`merge_batch` packs up to 25 events of the same client into one request.

What the mapping files cannot say lives here: event-name rules, items, custom params and user
properties. Like RudderStack, values are not truncated and params are not counted: Google drops what
exceeds its limits, and cutting here would only make payloads differ from RudderStack's.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from typing import Any

from transformers.errors import ConfigurationError, TransformError
from transformers.mapping import (
    MISSING,
    delivery_request,
    event_time,
    external_id,
    first_present,
    flatten,
    get_path,
    is_empty,
    load_mapping,
    load_mapping_table,
    mapping_folder,
    to_number,
)

_FOLDER = mapping_folder(__file__)
ITEM = load_mapping(_FOLDER / "item.json")
COMMON = load_mapping(_FOLDER / "common_params.json")
PAGE = load_mapping(_FOLDER / "page.json")
GROUP = load_mapping(_FOLDER / "group.json")
IDENTITY = load_mapping(_FOLDER / "identity.json")
EVENTS = load_mapping_table(
    _FOLDER / "events.json",
    {
        "event": str,
        "items": {"none", "products", "products_optional", "single", "products_or_single"},
        "value_fallback": {"price_times_quantity"},
    },
)

ENDPOINT = "https://www.google-analytics.com/mp/collect"
DEBUG_ENDPOINT = "https://www.google-analytics.com/debug/mp/collect"
HEADERS = {"Content-Type": "application/json"}

# Google's documented limits that decide batching and rejection here
MAX_EVENTS_PER_REQUEST = 25
MAX_BODY_BYTES = 130_000
MAX_BACKDATE = datetime.timedelta(hours=72)
MAX_FUTURE = datetime.timedelta(minutes=15)

RESERVED_EVENT_NAMES = {
    "ad_activeview", "ad_click", "ad_exposure", "ad_impression", "ad_query", "adunit_exposure",
    "app_clear_data", "app_install", "app_update", "app_remove", "error", "first_open",
    "first_visit", "in_app_purchase", "notification_dismiss", "notification_foreground",
    "notification_open", "notification_receive", "os_update", "screen_view", "session_start",
    "user_engagement",
}  # fmt: skip
RESERVED_CUSTOM_NAMES = {
    "app_remove", "app_store_refund", "app_store_subscription_cancel",
    "app_store_subscription_convert", "app_store_subscription_renew", "first_open", "first_visit",
    "in_app_purchase", "session_start", "user_engagement",
}  # fmt: skip
RESERVED_NAME_PREFIXES = ("_", "firebase_", "ga_", "google_", "gtag.")
RESERVED_PARAM_PREFIXES = ("google_", "ga_", "firebase_")
# keys that mean something to JavaScript objects; RudderStack drops them from params and traits
JS_RESERVED_KEYS = {"__proto__", "constructor", "prototype"}
CUSTOM_EVENT_NAME = re.compile(r"^[A-Za-z]\w*$", re.ASCII)
RESERVED_USER_PROPERTIES = {
    "first_open_time", "first_visit_time", "last_deep_link_referrer", "user_id",
    "first_open_after_install",
}  # fmt: skip
# properties that are read elsewhere and never become custom params
NOT_CUSTOM_PARAMS = {
    "products", "user_properties", "firebase_conversion", "engagementTimeMsec",
    "engagement_time_msec", "sessionId", "session_id", "sessionNumber", "session_number",
}  # fmt: skip
USER_PROPERTY_NAME = re.compile(r"^[A-Za-z]\w{0,23}$", re.ASCII)


def transform(event: dict, config: dict, now: datetime.datetime) -> list[dict]:
    endpoint, params, id_field = _client_settings(config)
    hybrid = config.get("connectionMode") == "hybrid"
    message_type = str(event.get("type") or "").lower()
    if not message_type:
        raise TransformError("Message Type is not present. Aborting message.")
    if message_type == "track":
        name, event_params = _track(event)
    elif message_type == "page":
        if hybrid:
            raise TransformError("GA4 Hybrid mode is enabled, page calls will be sent through device mode")
        name, event_params = "page_view", _page(event)
    elif message_type == "group":
        name, event_params = "join_group", _group(event)
    else:
        raise TransformError(f"Message type {message_type} not supported")

    if hybrid and not is_empty(get_path(event, "integrations.GA4.sessionId")):
        # the gtag session of the page views the device SDK sent, so GA4 stitches both halves
        event_params["session_id"] = get_path(event, "integrations.GA4.sessionId")

    body: dict[str, Any] = {id_field: _device_id(event, id_field, hybrid)}
    IDENTITY.apply(event, body)
    consent = {k: v for k, v in body.pop("consent", {}).items() if v in ("GRANTED", "DENIED")}
    if consent:
        body["consent"] = consent
    moment = event_time(event)
    if moment is not None:
        if now - moment > MAX_BACKDATE:
            raise TransformError("Allowed timestamp is [72 hours] into the past")
        if moment - now > MAX_FUTURE:
            raise TransformError("Allowed timestamp is [15 minutes] into the future")
        body["timestamp_micros"] = int(moment.timestamp()) * 1_000_000
    ad_tracking = get_path(event, "context.device.adTrackingEnabled")
    if ad_tracking in (True, "true", 1, "1"):
        body["non_personalized_ads"] = False
    elif ad_tracking in (False, "false", 0, "0"):
        body["non_personalized_ads"] = True
    user_properties = _user_properties(event, config)
    if user_properties:
        body["user_properties"] = user_properties
    body["events"] = [{"name": name, "params": event_params}]
    return [
        delivery_request(
            endpoint,
            headers=dict(HEADERS),
            params=params,
            json_body=body,
            batch_key=_batch_key(endpoint, params, body),
        )
    ]


# ---------------------------------------------------------------- config and ids


def _client_settings(config: dict) -> tuple[str, dict, str]:
    client = config.get("typesOfClient") or "gtag"
    if client not in ("gtag", "firebase"):
        raise ConfigurationError("Invalid type of client")
    if is_empty(config.get("apiSecret")):
        raise ConfigurationError("API Secret not found. Aborting ")
    params = {"api_secret": config["apiSecret"]}
    if client == "gtag":
        if is_empty(config.get("measurementId")):
            raise ConfigurationError("measurementId must be provided. Aborting")
        params["measurement_id"] = config["measurementId"]
        id_field = "client_id"
    else:
        if is_empty(config.get("firebaseAppId")):
            raise ConfigurationError("firebaseAppId must be provided. Aborting")
        params["firebase_app_id"] = config["firebaseAppId"]
        id_field = "app_instance_id"
    endpoint = DEBUG_ENDPOINT if config.get("debugMode") is True else ENDPOINT
    return endpoint, params, id_field


def _device_id(event: dict, id_field: str, hybrid: bool) -> str:
    if id_field == "app_instance_id":
        value = external_id(event, "ga4AppInstanceId")
        if is_empty(value):
            raise TransformError("ga4AppInstanceId must be provided under externalId")
        return str(value)
    value = MISSING
    if hybrid:
        value = get_path(event, "integrations.GA4.clientId")
    if is_empty(value):
        value = external_id(event, "ga4ClientId")
    if is_empty(value):
        value = first_present(event, ["anonymousId", "rudderId"])
    if is_empty(value):
        raise TransformError("ga4ClientId or anonymousId must be provided")
    return str(value)


# ---------------------------------------------------------------- events


def _track(event: dict) -> tuple[str, dict]:
    raw = event.get("event")
    if raw is None or raw == "":
        raise TransformError("Event name is required")
    if not isinstance(raw, str):
        raise TransformError("track:: event name should be string")
    if not raw.strip():
        raise TransformError("Event name is required")
    name = re.sub(r"\s+", "_", raw.strip())
    if name.lower() in RESERVED_EVENT_NAMES:
        raise TransformError("track:: Reserved event names are not allowed")
    properties = event.get("properties") if isinstance(event.get("properties"), dict) else {}
    entry = EVENTS.get(name.upper())
    if entry is not None:
        return entry.options["event"], _standard_event_params(entry, event, properties, raw)
    params: dict = {}
    _merge(params, COMMON.apply(event))
    _merge(params, _custom_params(properties, set()))
    return _custom_event_name(name), params


def _custom_event_name(name: str) -> str:
    lowered = name.lower()
    if lowered in RESERVED_CUSTOM_NAMES:
        raise TransformError("Reserved custom event names are not allowed")
    if lowered.startswith(RESERVED_NAME_PREFIXES):
        raise TransformError("Reserved custom prefix names are not allowed")
    # only whitespace was replaced (in _track); other characters are an error, not rewritten
    if not CUSTOM_EVENT_NAME.match(name):
        raise TransformError(
            "Event name must start with a letter and can only contain letters, numbers, and underscores"
        )
    return name


def _standard_event_params(entry, event: dict, properties: dict, raw_name: str) -> dict:
    params = entry.apply(event)
    excluded = entry.source_keys("properties.") | {"products"}
    mode = entry.options.get("items", "none")
    items: list[dict] | None = None
    products = properties.get("products", MISSING)
    if mode in ("products", "products_optional", "products_or_single") and not is_empty(products):
        if not isinstance(products, list):
            raise TransformError("Invalid type. Expected Array of products")
        items = [_item(product) for product in products]
    elif mode == "products":
        raise TransformError(f"Products is a required field for '{raw_name}' event")
    elif mode in ("single", "products_or_single"):
        items = [_item(properties, with_extras=False)]
        excluded |= ITEM.source_keys("")
        products = [properties]

    if entry.options.get("value_fallback") == "price_times_quantity" and "value" not in params:
        value = _price_times_quantity(products)
        if value is None:
            sources = [path for rule in entry.fields if rule.dest == "value" for path in rule.sources]
            raise TransformError(f"Missing required value from {json.dumps(sources + ['properties.price'])}")
        params["value"] = value
    if "value" in params and "currency" not in params:
        params["currency"] = "USD"
    if items:
        params["items"] = items
    _merge(params, COMMON.apply(event))
    _merge(params, _custom_params(properties, excluded))
    return params


def _price_times_quantity(products: Any) -> int | float | None:
    total: int | float | None = None
    for product in products if isinstance(products, list) else []:
        if not isinstance(product, dict):
            continue
        price = to_number(product.get("price"))
        if price is None:
            continue
        quantity = to_number(product.get("quantity"))
        total = (total or 0) + price * (1 if quantity is None else quantity)
    return total


def _item(product: Any, with_extras: bool = True) -> dict:
    if not isinstance(product, dict):
        raise TransformError("One of product_id or name is required")
    item = ITEM.apply(product)
    if "item_id" not in item and "item_name" not in item:
        raise TransformError("One of product_id or name is required")
    if not with_extras:  # root properties of a single-product event: the rest are event params
        return item
    mapped = ITEM.source_keys("")
    for key, value in product.items():
        if key in mapped or key in item or isinstance(value, (dict, list)) or is_empty(value):
            continue
        name = _param_name(key)
        if name is not None and name not in item:
            item[name] = value
    return item


def _page(event: dict) -> dict:
    properties = event.get("properties") if isinstance(event.get("properties"), dict) else {}
    params = PAGE.apply(event)
    _merge(params, COMMON.apply(event))
    _merge(params, _custom_params(properties, PAGE.source_keys("properties.")))
    return params


def _group(event: dict) -> dict:
    params = GROUP.apply(event)
    _merge(params, COMMON.apply(event))
    for source in ("traits", "context.traits"):
        traits = get_path(event, source)
        if isinstance(traits, dict):
            _merge(params, _custom_params(traits, {"groupId"}))
    return params


# ---------------------------------------------------------------- params and limits


def _merge(params: dict, extra: dict) -> None:
    for key, value in extra.items():
        params.setdefault(key, value)


def _param_name(key: str) -> str | None:
    """The param name for a (flattened) property key: kept as it is (`$`, `-` and all, as RudderStack
    sends them), or None for Google's reserved prefixes and JavaScript's reserved keys."""
    name = str(key)
    if not name or name in JS_RESERVED_KEYS or name.lower().startswith(RESERVED_PARAM_PREFIXES):
        return None
    return name


def _custom_params(source: dict, excluded: set[str]) -> dict:
    out: dict = {}
    for key, value in source.items():
        if key in excluded or key in NOT_CUSTOM_PARAMS:
            continue
        for flat_key, flat_value in flatten({key: value}).items():
            if is_empty(flat_value):
                continue
            name = _param_name(flat_key)
            if name is not None:
                out.setdefault(name, flat_value)
    return out


def _user_properties(event: dict, config: dict) -> dict:
    ignored = set(RESERVED_USER_PROPERTIES)
    for entry in config.get("piiPropertiesToIgnore") or []:
        if isinstance(entry, dict) and entry.get("piiProperty"):
            ignored.add(entry["piiProperty"])
    merged: dict = {}
    for path in ("context.traits", "properties.user_properties"):
        source = get_path(event, path)
        if isinstance(source, dict):
            merged.update(source)
    out: dict = {}
    for key, value in merged.items():
        if key in ignored or key in JS_RESERVED_KEYS or not USER_PROPERTY_NAME.match(key):
            continue
        if key.lower().startswith(RESERVED_PARAM_PREFIXES):
            continue
        if isinstance(value, bool):
            pass
        elif isinstance(value, (int, float)):
            if len(str(value)) > 36:
                continue
        elif isinstance(value, str):
            if not value.strip() or len(value) > 36:
                continue
        else:
            continue
        out[key] = {"value": value}
    return out


# ---------------------------------------------------------------- batching


def _batch_key(endpoint: str, params: dict, body: dict) -> str:
    """Requests merge only when everything but their events and timestamps is the same."""
    shared = {k: v for k, v in body.items() if k not in ("events", "timestamp_micros")}
    digest = hashlib.sha1(json.dumps([endpoint, params, shared], sort_keys=True).encode("utf-8")).hexdigest()
    return f"GA4:{digest}"


BATCH_LIMITS = {"events": MAX_EVENTS_PER_REQUEST, "bytes": MAX_BODY_BYTES}


def batch_weight(request: dict) -> tuple[int, int]:
    body = request["body"]["JSON"]
    return len(body.get("events", [])), len(json.dumps(body).encode("utf-8"))


def merge_batch(requests: list[dict]) -> dict:
    """One request with every event; each event keeps its own time as an event-level timestamp_micros."""
    first = requests[0]
    body = {k: v for k, v in first["body"]["JSON"].items() if k not in ("events", "timestamp_micros")}
    events = []
    for request in requests:
        part = request["body"]["JSON"]
        for ev in part["events"]:
            ev = dict(ev)
            if "timestamp_micros" in part:
                ev.setdefault("timestamp_micros", part["timestamp_micros"])
            events.append(ev)
    body["events"] = events
    return delivery_request(
        first["endpoint"],
        headers=dict(first["headers"]),
        params=dict(first["params"]),
        json_body=body,
        batch_key=first.get("batch_key"),
    )
