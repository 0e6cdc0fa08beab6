"""Amplitude: track, page, screen, identify and group calls -> HTTP V2 events (`/2/httpapi`), group
properties -> `/groupidentify`, alias -> `/usermap`. `merge_batch` packs HTTP V2 requests into the
batch API (`/batch`).

User properties: track, page and screen send the user's traits plain; identify sends them under $set
beside the configured trait operations ($add, $setOnce, $append, $prepend) and $unset, whatever
enableEnhancedUserOperations says.
"""

from __future__ import annotations

import copy
import datetime
import json
import re
from typing import Any

from transformers import user_agent
from transformers.errors import ConfigurationError, TransformError
from transformers.mapping import (
    MISSING,
    delivery_request,
    epoch_ms,
    external_id,
    first_present,
    get_path,
    is_empty,
    load_mapping,
    mapping_folder,
    to_number,
)

_FOLDER = mapping_folder(__file__)
EVENT = load_mapping(_FOLDER / "event.json")
USER_PROPERTIES = load_mapping(_FOLDER / "user_properties.json")
REVENUE = load_mapping(_FOLDER / "revenue.json")
PRODUCT_REVENUE = load_mapping(_FOLDER / "product_revenue.json")
USER_AGENT = load_mapping(_FOLDER / "user_agent.json")
USER_AGENT_FIELDS = tuple(rule.dest for rule in USER_AGENT.fields)

BASE_URLS = {"standard": "https://api2.amplitude.com", "EU": "https://api.eu.amplitude.com"}
JSON_HEADERS = {"Content-Type": "application/json"}
FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}
BATCH_LIMITS = {"events": 2000, "bytes": 20_000_000}
# Sent as Amplitude's revenue fields, so taken out of event_properties; the revenue type stays in both.
REVENUE_KEYS = ("price", "product_id", "quantity", "revenue")
TRAIT_OPERATIONS = (
    ("traitsToIncrement", "$add"),
    ("traitsToSetOnce", "$setOnce"),
    ("traitsToAppend", "$append"),
    ("traitsToPrepend", "$prepend"),
)
IOS_DEVICE_TYPES = {"ios", "ipados", "watchos", "tvos"}
PLACEHOLDER = re.compile(r"\{\{\s*([^{}\s]+)\s*\}\}")


def transform(event: dict, config: dict, now: datetime.datetime) -> list[dict]:
    api_key = config.get("apiKey")
    if is_empty(api_key):
        raise ConfigurationError("No API Key is Found. Please Configure API key from dashboard")
    base_url = BASE_URLS["EU"] if config.get("residencyServer") == "EU" else BASE_URLS["standard"]
    message_type = str(event.get("type") or "").lower()
    if not message_type:
        raise TransformError("Event type is missing. Please send a type field")

    if message_type == "alias":
        return [_usermap_request(event, api_key, base_url)]
    if message_type == "track":
        events = _track_events(event, config, now)
    elif message_type in ("page", "screen"):
        events = [_view_event(event, config, message_type, now)]
    elif message_type == "identify":
        events = [_identify_event(event, config, now)]
    elif message_type == "group":
        group_event, identification = _group(event, config, now)
        return [
            _httpapi_request([group_event], api_key, base_url, config),
            _groupidentify_request(identification, api_key, base_url),
        ]
    else:
        raise TransformError(f"message type {message_type} not supported")
    return [_httpapi_request(events, api_key, base_url, config)]


# ---------------------------------------------------------------- requests


def _options(config: dict) -> dict:
    # min_id_length 1 lets ids shorter than Amplitude's default of 5 characters through
    min_id_length = config.get("minIdLength")
    if isinstance(min_id_length, bool) or not isinstance(min_id_length, int) or min_id_length < 1:
        min_id_length = 1
    return {"min_id_length": min_id_length}


def _httpapi_request(events: list[dict], api_key: str, base_url: str, config: dict) -> dict:
    return delivery_request(
        f"{base_url}/2/httpapi",
        headers=dict(JSON_HEADERS),
        json_body={"api_key": api_key, "events": events, "options": _options(config)},
        batch_key=f"AM:{base_url}:{api_key}",
    )


# The Group Identify and Usermap APIs take form fields whose value is a JSON object (or an array of
# them); as in RudderStack's requests, the field holds a list of one JSON string, which a form encoder
# sends as `identification={...}`.


def _groupidentify_request(identification: dict, api_key: str, base_url: str) -> dict:
    return delivery_request(
        f"{base_url}/groupidentify",
        headers=dict(FORM_HEADERS),
        form={"api_key": api_key, "identification": [_compact_json(identification)]},
    )


def _usermap_request(event: dict, api_key: str, base_url: str) -> dict:
    unmap = get_path(event, "integrations.Amplitude.unmap")
    if unmap is True:
        # `unmap: true` unmaps the alias call's user (its `to`, the userId)
        if is_empty(event.get("userId")):
            raise TransformError("userId is required to unmap a user")
        mapping = {"user_id": str(event["userId"]), "unmap": True}
    elif not is_empty(unmap) and unmap is not False:
        mapping = {"user_id": str(unmap), "unmap": True}
    else:
        if is_empty(event.get("previousId")):
            raise TransformError("previousId is required for an alias call")
        if is_empty(event.get("userId")):
            raise TransformError("userId is required for an alias call")
        mapping = {"user_id": str(event["previousId"]), "global_user_id": str(event["userId"])}
    return delivery_request(
        f"{base_url}/usermap",
        headers=dict(FORM_HEADERS),
        form={"api_key": api_key, "mapping": [_compact_json(mapping)]},
    )


def _compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# ---------------------------------------------------------------- common event fields


def _base_event(event: dict, config: dict, event_type: str, now: datetime.datetime) -> dict:
    out = EVENT.apply(event)
    device_id = external_id(event, "device_id")
    if device_id is not MISSING and not isinstance(device_id, (dict, list)):
        out["device_id"] = str(device_id)[:1024]
    if "user_id" not in out and "device_id" not in out:
        raise TransformError("Either of user ID or device ID fields must be specified")
    _add_user_agent_fields(event, out)
    if "time" not in out:
        # Amplitude would take its upload time; the request is built once, so retries keep this one
        out["time"] = epoch_ms(now)
    out["event_type"] = event_type
    out["session_id"] = _session_id(event)
    channel = str(event.get("channel") or "").lower()
    if channel == "web":
        out["platform"] = "Web"
    else:
        platform = first_present(event, ["context.os.name", "context.device.type"])
        if platform is not MISSING and not isinstance(platform, (dict, list)):
            out["platform"] = str(platform)
    if channel == "mobile":
        _add_mobile_ids(event, config, out)
    event_id = to_number(get_path(event, "integrations.Amplitude.event_id"))
    if event_id is not None:
        out["event_id"] = event_id
    if get_path(event, "integrations.Amplitude.skipUserPropertiesSync") is True:
        out["$skip_user_properties_sync"] = True
    return out


def _add_user_agent_fields(event: dict, out: dict) -> None:
    """os_name, os_version and device_model from context.userAgent where context.os/device gave none."""
    if all(key in out for key in USER_AGENT_FIELDS):
        return
    agent = get_path(event, "context.userAgent")
    if not isinstance(agent, str) or not agent.strip():
        return
    parsed = user_agent.parse(agent)
    if parsed is user_agent.EMPTY:
        return
    for key, value in USER_AGENT.apply(parsed.as_dict()).items():
        out.setdefault(key, value)


def _session_id(event: dict) -> int:
    """Root session_id (a number, or a string ending in ':<integer>'), else context.sessionId, else -1."""
    root = event.get("session_id")
    if isinstance(root, (int, float)) and not isinstance(root, bool):
        return int(root)
    if isinstance(root, str):
        last = root.split(":")[-1]
        if re.fullmatch(r"-?\d+", last):
            return int(last)
    context_session = get_path(event, "context.sessionId")
    if isinstance(context_session, int) and not isinstance(context_session, bool):
        return context_session
    if isinstance(context_session, str) and re.fullmatch(r"-?\d+", context_session):
        return int(context_session)
    return -1


def _add_mobile_ids(event: dict, config: dict, out: dict) -> None:
    device = get_path(event, "context.device")
    if not isinstance(device, dict):
        return
    brand = device.get("brand") if config.get("mapDeviceBrand") else device.get("manufacturer")
    if not is_empty(brand):
        out["device_brand"] = str(brand)
    device_type = str(device.get("type") or "").lower()
    if device_type in IOS_DEVICE_TYPES:
        if not is_empty(device.get("advertisingId")):
            out["idfa"] = str(device["advertisingId"])
        if not is_empty(device.get("id")):
            out["idfv"] = str(device["id"])
    elif device_type == "android" and not is_empty(device.get("advertisingId")):
        out["adid"] = str(device["advertisingId"])


def _context_user_properties(event: dict) -> dict:
    props = USER_PROPERTIES.apply(event)
    campaign = get_path(event, "context.campaign")
    if isinstance(campaign, dict):
        for key, value in campaign.items():
            if not is_empty(value) and not isinstance(value, (dict, list)):
                props[f"utm_{key}"] = value
    return props


def _traits(event: dict, message_type: str) -> dict:
    traits: dict = {}
    context_traits = get_path(event, "context.traits")
    if isinstance(context_traits, dict):
        traits.update(context_traits)
    if message_type in ("identify", "group") and isinstance(event.get("traits"), dict):
        traits.update(event["traits"])
    return traits


def _event_user_properties(event: dict, message_type: str) -> dict:
    """track, page and screen: the user's traits as they are, plain (never under $set), plus the page
    context's user properties."""
    props = _traits(event, message_type)
    props.update(_context_user_properties(event))
    return props


def _identify_user_properties(event: dict, config: dict) -> dict:
    """identify: traits under $set beside the configured $add/$setOnce/$append/$prepend and $unset;
    the address flattened, its city and country left to the event fields."""
    plain: dict = {}
    for key, value in _traits(event, "identify").items():
        if key == "address" and isinstance(value, dict):
            # city and country are event fields; the rest of the address stays a user property
            for sub in ("postalCode", "state", "street"):
                if not is_empty(value.get(sub)):
                    plain[sub] = value[sub]
            continue
        plain[key] = value
    plain.update(_context_user_properties(event))
    out: dict = {}
    for config_key, operation in TRAIT_OPERATIONS:
        for entry in config.get(config_key) or []:
            name = entry.get("traits") if isinstance(entry, dict) else None
            if name and name in plain:
                out.setdefault(operation, {})[name] = plain.pop(name)
    unset = get_path(event, "integrations.Amplitude.fieldsToUnset")
    if isinstance(unset, list) and unset:
        out["$unset"] = {str(name): "-" for name in unset}
        for name in unset:
            plain.pop(str(name), None)
    if plain:
        out["$set"] = plain
    return out


# ---------------------------------------------------------------- message types


def _track_events(event: dict, config: dict, now: datetime.datetime) -> list[dict]:
    name = event.get("event")
    if is_empty(name) or not isinstance(name, str):
        raise TransformError("Event not present. Please send event field")
    # Only top-level keys are added or removed below: a shallow copy keeps the input unchanged.
    properties = dict(event["properties"]) if isinstance(event.get("properties"), dict) else {}
    main = _base_event(event, config, name, now)
    main["event_properties"] = properties
    user_properties = _event_user_properties(event, "track")
    if user_properties:
        main["user_properties"] = user_properties
    groups = get_path(event, "integrations.Amplitude.groups")
    if isinstance(groups, dict) and groups:
        main["groups"] = groups
    if properties.get("revenue") is None:
        return [main]

    products = properties.get("products")
    products = [p for p in products if isinstance(p, dict)] if isinstance(products, list) else []
    once = config.get("trackProductsOnce") is True
    per_product = config.get("trackRevenuePerProduct") is True
    if not products or not per_product:
        main.update(REVENUE.apply(event))
        if is_empty(properties.get("price")):
            main["quantity"] = 1
        for key in REVENUE_KEYS:
            properties.pop(key, None)
    if not products or (once and not per_product):
        return [main]
    # one "Product Purchased" event per product, so Amplitude can chart revenue by product
    if not once:
        properties.pop("products", None)
    events = [main]
    for n, product in enumerate(products):
        product_event = _base_event(event, config, "Product Purchased", now)
        product_properties = dict(product)
        if per_product:
            product_event.update(PRODUCT_REVENUE.apply(product))
            for key in REVENUE_KEYS + ("sku",):
                product_properties.pop(key, None)
        product_event["event_properties"] = product_properties
        if "insert_id" in product_event:
            product_event["insert_id"] = f"{product_event['insert_id']}-{n}"
        if user_properties:
            product_event["user_properties"] = copy.deepcopy(user_properties)
        events.append(product_event)
    return events


def _view_event(event: dict, config: dict, message_type: str, now: datetime.datetime) -> dict:
    """page -> "Viewed <name> Page", screen -> "Viewed <name> Screen", or the configured template."""
    properties = dict(event["properties"]) if isinstance(event.get("properties"), dict) else {}  # see _track_events
    label = "Page" if message_type == "page" else "Screen"
    template = None
    if config.get(f"useUserDefined{label}EventName") is True:
        template = config.get(f"userProvided{label}EventString")
    if isinstance(template, str) and template.strip():
        event_type = PLACEHOLDER.sub(lambda m: _template_value(event, m.group(1)), template).strip()
    else:
        sources = ["name", "properties.name", "properties.category"]
        if message_type == "screen":
            sources = ["name", "event", "properties.name", "properties.category"]
        name = first_present(event, sources)
        event_type = f"Viewed {name} {label}" if name is not MISSING else f"Viewed {label}"
    if not event_type:
        raise TransformError(f"Event type is missing. The {message_type} name template gave an empty name")
    out = _base_event(event, config, event_type, now)
    name = first_present(event, ["name", "properties.name"])
    if name is not MISSING:
        properties["name"] = name
    out["event_properties"] = properties
    user_properties = _event_user_properties(event, message_type)
    if user_properties:
        out["user_properties"] = user_properties
    groups = get_path(event, "integrations.Amplitude.groups")
    if isinstance(groups, dict) and groups:
        out["groups"] = groups
    return out


def _template_value(event: dict, path: str) -> str:
    value = get_path(event, path)
    return "" if is_empty(value) or isinstance(value, (dict, list)) else str(value)


def _identify_event(event: dict, config: dict, now: datetime.datetime) -> dict:
    out = _base_event(event, config, "$identify", now)
    if isinstance(event.get("properties"), dict):
        out["event_properties"] = dict(event["properties"])
    user_properties = _identify_user_properties(event, config)
    if user_properties:
        out["user_properties"] = user_properties
    return out


def _group(event: dict, config: dict, now: datetime.datetime) -> tuple[dict, dict]:
    type_trait, value_trait = config.get("groupTypeTrait"), config.get("groupValueTrait")
    if is_empty(type_trait) or is_empty(value_trait):
        raise ConfigurationError("groupTypeTrait and groupValueTrait must be configured for group calls")
    traits = event.get("traits") if isinstance(event.get("traits"), dict) else {}
    group_type, group_value = traits.get(type_trait), traits.get(value_trait)
    if not isinstance(group_type, str) or not group_type.strip():
        raise TransformError("Group call parameters are not valid")
    if isinstance(group_value, bool) or not isinstance(group_value, (str, int, float)) or group_value == "":
        raise TransformError("Group call parameters are not valid")
    out = _base_event(event, config, "$identify", now)
    out.pop("insert_id", None)  # RudderStack sends the group's $identify without one
    out["groups"] = {group_type: group_value}
    out["user_properties"] = {"$set": {group_type: group_value}}
    # the group's properties are all of the call's traits, the type and value traits included
    identification = {"group_type": group_type, "group_value": group_value, "group_properties": dict(traits)}
    return out, identification


# ---------------------------------------------------------------- batching


def batch_weight(request: dict) -> tuple[int, int]:
    body = request["body"]["JSON"]
    return len(body.get("events", [])), len(json.dumps(body).encode("utf-8"))


def merge_batch(requests: list[dict]) -> dict:
    """One batch API call with every event, in order; api_key and options from the first request."""
    first = requests[0]["body"]["JSON"]
    events = [ev for request in requests for ev in request["body"]["JSON"]["events"]]
    base_url = requests[0]["endpoint"].rsplit("/2/httpapi", 1)[0]
    return delivery_request(
        f"{base_url}/batch",
        headers=dict(JSON_HEADERS),
        json_body={"api_key": first["api_key"], "events": events, "options": dict(first["options"])},
        batch_key=requests[0].get("batch_key"),
    )
