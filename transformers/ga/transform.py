"""Google Analytics Universal (Measurement Protocol v1): page, screen, track and identify calls ->
form-encoded hits to `/collect`; `merge_batch` packs up to 20 hits into one `/batch` call.

Universal Analytics stopped processing data in 2023-2024; this is kept for existing workspaces.
"""

from __future__ import annotations

import datetime
import hashlib
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from transformers.errors import ConfigurationError, TransformError
from transformers.mapping import (
    MISSING,
    delivery_request,
    epoch_ms,
    event_time,
    external_id,
    first_present,
    get_path,
    is_empty,
    load_mapping,
    load_mapping_table,
    mapping_folder,
    to_boolean,
    to_integer,
    to_number,
)

_FOLDER = mapping_folder(__file__)
COMMON = load_mapping(_FOLDER / "common.json")
PAGEVIEW = load_mapping(_FOLDER / "pageview.json")
SCREENVIEW = load_mapping(_FOLDER / "screenview.json")
EVENT = load_mapping(_FOLDER / "event.json")
PRODUCT = load_mapping(_FOLDER / "product.json")
TRANSACTION = load_mapping(_FOLDER / "transaction.json")
ITEM_HIT = load_mapping(_FOLDER / "item_hit.json")
PROMOTION = load_mapping(_FOLDER / "promotion.json")
ECOMMERCE = load_mapping_table(
    _FOLDER / "ecommerce.json",
    {
        "pa": {"detail", "click", "add", "remove", "checkout", "checkout_option", "purchase", "refund"},
        "products": {"list", "single", "list_or_single", "none"},
        "transaction": bool,
        "list": bool,
        "promotion": {"view", "promo_click"},
        "checkout": bool,
        "share": {"url", "product_ids"},
    },
)

ENDPOINT = "https://www.google-analytics.com/collect"
BATCH_ENDPOINT = "https://www.google-analytics.com/batch"
HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}
MAX_HIT_BYTES = 8192
BATCH_LIMITS = {"events": 20, "bytes": 16384}


def transform(event: dict, config: dict, now: datetime.datetime) -> list[dict]:
    tracking_id = config.get("trackingID")
    if is_empty(tracking_id):
        raise ConfigurationError("trackingID is required")
    message_type = str(event.get("type") or "").lower()
    if not message_type:
        raise TransformError("Message Type is not present. Aborting message.")

    base = _common_hit(event, config, str(tracking_id).strip(), now)
    props = event.get("properties") if isinstance(event.get("properties"), dict) else {}
    if message_type == "page":
        hits = [_page_hit(event, config, base)]
    elif message_type == "screen":
        hit = {**base, "t": "screenview"}
        SCREENVIEW.apply(event, hit)
        hits = [_with_custom_fields(hit, props, config)]
    elif message_type == "identify":
        hits = [_identify_hit(event, config, base)]
    elif message_type == "track":
        hits = _track_hits(event, config, base, props)
    else:
        raise TransformError(f"Message type {message_type} not supported")
    return [_request(hit, str(tracking_id).strip()) for hit in hits]


def _request(hit: dict, tracking_id: str) -> dict:
    encoded = urlencode(hit)
    key = f"GA:{tracking_id}" if len(encoded.encode("utf-8")) <= MAX_HIT_BYTES else None
    return delivery_request(ENDPOINT, headers=dict(HEADERS), form=hit, batch_key=key)


# ---------------------------------------------------------------- common params


def _common_hit(event: dict, config: dict, tracking_id: str, now: datetime.datetime) -> dict:
    hit: dict[str, Any] = {"v": 1, "tid": tracking_id, "cid": _client_id(event, config)}
    if config.get("sendUserId") and not is_empty(event.get("userId")):
        hit["uid"] = str(event["userId"])
    moment = event_time(event)
    if moment is not None:
        hit["qt"] = epoch_ms(now) - epoch_ms(moment)
    COMMON.apply(event, hit)
    screen = get_path(event, "context.screen")
    if isinstance(screen, dict):
        if not is_empty(screen.get("width")) and not is_empty(screen.get("height")):
            hit["sr"] = f"{screen['width']}x{screen['height']}"
        if not is_empty(screen.get("innerWidth")) and not is_empty(screen.get("innerHeight")):
            hit["vp"] = f"{screen['innerWidth']}x{screen['innerHeight']}"
    for id_type, param in (("googleAdsId", "gclid"), ("googleDisplayAdsId", "dclid")):
        value = external_id(event, id_type)
        if not is_empty(value):
            hit[param] = str(value)
    if config.get("anonymizeIp"):
        hit["aip"] = 1
    if config.get("doubleClick"):
        hit["npa"] = 1
    if config.get("enhancedLinkAttribution") and not is_empty(get_path(event, "properties.linkid")):
        hit["linkid"] = str(get_path(event, "properties.linkid"))
    if "dl" in hit:
        _add_location(hit, config)
    return hit


def _client_id(event: dict, config: dict) -> str:
    value = get_path(event, "integrations.Google Analytics.clientId")
    if is_empty(value):
        value = external_id(event, "gaExternalId")
    if is_empty(value):
        value = first_present(event, ["context.traits.cid", "traits.cid", "anonymousId"])
    if is_empty(value) and not is_empty(event.get("userId")) and not config.get("disableMd5"):
        # a stable pseudonymous client id for server-side events that only know the user
        value = hashlib.md5(str(event["userId"]).encode("utf-8")).hexdigest()
    if is_empty(value):
        raise TransformError("cid is required: send an anonymousId, a userId or a clientId")
    return str(value)


def _add_location(hit: dict, config: dict) -> None:
    """dh and dp from the document location (dl)."""
    url = hit["dl"]
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or not parts.scheme or not parts.netloc:
        raise TransformError(f"Invalid Url: {url}")
    hit["dh"] = parts.hostname or parts.netloc
    path = parts.path or "/"
    if config.get("includeSearch") and parts.query:
        path = f"{path}?{parts.query}"
    # encoded once more, like JavaScript's encodeURIComponent: RudderStack sends dp as %2Fpath
    hit["dp"] = quote(path, safe="!'()*~")


CUSTOM_FIELDS = (
    ("dimensions", "dimension", "cd"),
    ("metrics", "metric", "cm"),
    ("contentGroupings", "contentGroup", "cg"),
)
PRODUCT_CUSTOM_FIELDS = CUSTOM_FIELDS[:2]  # products carry dimensions and metrics, not content groups


def _custom_fields(source: dict, config: dict, kinds: tuple = CUSTOM_FIELDS) -> dict:
    """Configured custom dimensions (cdN), metrics (cmN) and content groups (cgN) read from `source`;
    then the legacy `customMappings` ({from, to: "cdN" | "cmN"})."""
    out: dict = {}
    pairs = []
    for config_key, prefix, target_prefix in kinds:
        for entry in config.get(config_key) or []:
            if isinstance(entry, dict):
                target = str(entry.get("to") or "")
                if target.startswith(prefix) and target[len(prefix) :].isdigit():
                    pairs.append((entry.get("from"), f"{target_prefix}{target[len(prefix) :]}"))
    allowed = tuple(target_prefix for _, _, target_prefix in kinds if target_prefix != "cg")
    for entry in config.get("customMappings") or []:
        if isinstance(entry, dict):
            target = str(entry.get("to") or "")
            if target.startswith(allowed) and target[2:].isdigit():
                pairs.append((entry.get("from"), target))
    for name, target in pairs:
        if not name:
            continue
        value = source.get(name, MISSING)
        if not is_empty(value) and not isinstance(value, (dict, list)):
            out[target] = value
    return out


def _with_custom_fields(hit: dict, source: dict, config: dict) -> dict:
    hit.update(_custom_fields(source, config))
    return hit


# ---------------------------------------------------------------- hit types


def _page_hit(event: dict, config: dict, base: dict) -> dict:
    hit = {**base, "t": "pageview"}
    PAGEVIEW.apply(event, hit)
    props = event.get("properties") if isinstance(event.get("properties"), dict) else {}
    return _with_custom_fields(hit, props, config)


def _identify_hit(event: dict, config: dict, base: dict) -> dict:
    if not config.get("enableServerSideIdentify"):
        raise ConfigurationError("server side identify is not on")
    traits = get_path(event, "traits")
    if not isinstance(traits, dict):
        traits = (
            get_path(event, "context.traits") if isinstance(get_path(event, "context.traits"), dict) else {}
        )
    # serverSideIdentifyEventCategory names a trait, whose value is the category; it is read only
    # when an action is configured too
    action = config.get("serverSideIdentifyEventAction")
    category = MISSING
    trait = config.get("serverSideIdentifyEventCategory")
    if not is_empty(action) and isinstance(trait, str) and trait:
        category = traits.get(trait, MISSING)
    hit = {
        **base,
        "t": "event",
        "ec": "All" if is_empty(category) or isinstance(category, (dict, list)) else category,
        "ea": action if not is_empty(action) else "User Enriched",
        "ni": 1,
    }
    return _with_custom_fields(hit, traits, config)


def _non_interaction(props: dict, config: dict, default: int) -> int:
    flag = to_boolean(props.get("nonInteraction"))
    if flag is None and "nonInteraction" in config:
        flag = to_boolean(config.get("nonInteraction"))
    return default if flag is None else int(flag)


def _event_value(props: dict) -> int | float | None:
    for key in ("value", "revenue", "total"):
        value = to_number(props.get(key))
        if value is not None:
            return value
    return None


def _track_hits(event: dict, config: dict, base: dict, props: dict) -> list[dict]:
    if is_empty(event.get("event")) or not isinstance(event.get("event"), str):
        raise TransformError("Event name is required")
    name = event["event"].strip().lower()
    entry = ECOMMERCE.get(name) if config.get("enhancedEcommerce") else None
    if entry is None and name == "order completed" and not config.get("enhancedEcommerce"):
        return _classic_transaction_hits(event, config, base, props)

    hit = {**base, "t": "event"}
    EVENT.apply(event, hit)
    if entry is None:  # a plain event hit carries no ev
        hit["ni"] = _non_interaction(props, config, 0)
    else:
        if is_empty(props.get("category")) and "share" not in entry.options:
            hit["ec"] = "EnhancedEcommerce"
        hit["ni"] = _non_interaction(props, config, 1)
        _add_enhanced_ecommerce(hit, entry.options, event, props, config)
        value = _event_value(props)
        if value is not None:
            hit["ev"] = value
    return [_with_custom_fields(hit, props, config)]


def _add_enhanced_ecommerce(hit: dict, options: dict, event: dict, props: dict, config: dict) -> None:
    if "pa" in options:
        hit["pa"] = options["pa"]
    products = props.get("products")
    mode = options.get("products", "none")
    if options.get("transaction"):
        if not isinstance(products, list) or not products:
            raise TransformError("No product information supplied for transaction event")
        TRANSACTION.apply(event, hit)
    if mode in ("list", "list_or_single") and isinstance(products, list) and products:
        _add_products(hit, "pr", products, config)
    elif mode in ("single", "list_or_single"):
        _add_products(hit, "pr", [props], config)
    if options.get("list"):
        hit["il1nm"] = str(first_present(props, ["list_id", "category"]) or "")[:500] or "ProductList"
        _add_products(hit, "il1pi", products if isinstance(products, list) else [], config)
    if "promotion" in options:
        # the promotion action doubles as the hit's product action, as RudderStack sends it
        hit["pa"] = hit["promoa"] = options["promotion"]
        PROMOTION.apply(event, hit)
    if options.get("checkout"):
        step = to_integer(props.get("step"))
        if step is not None:
            hit["cos"] = step
        if not is_empty(props.get("option")):
            hit["col"] = str(props["option"])[:500]
    if options.get("share") == "url" and not is_empty(props.get("url")):
        hit["st"] = str(props["url"])[:2048]
    elif options.get("share") == "product_ids" and isinstance(products, list):
        ids = [str(p.get("product_id") or p.get("sku") or "") for p in products if isinstance(p, dict)]
        hit["st"] = "".join(f" {i}" for i in ids if i)  # each id after a space, the first one too
    if "cu" not in hit and not is_empty(props.get("currency")):
        hit["cu"] = str(props["currency"])[:10]


def _add_products(hit: dict, prefix: str, products: list, config: dict) -> None:
    """pr<N>… (or il1pi<N>… in an impression list), product-scoped dimensions and metrics included."""
    for n, product in enumerate(products, start=1):
        if not isinstance(product, dict):
            continue
        fields = PRODUCT.apply(product)
        fields.update(_custom_fields(product, config, PRODUCT_CUSTOM_FIELDS))
        for key, value in fields.items():
            hit[f"{prefix}{n}{key}"] = value


def _classic_transaction_hits(event: dict, config: dict, base: dict, props: dict) -> list[dict]:
    """Order Completed without enhanced ecommerce: one transaction hit and one item hit per product."""
    products = props.get("products")
    if not isinstance(products, list) or not products:
        raise TransformError("No product information supplied for transaction event")
    transaction = {**base, "t": "transaction"}
    TRANSACTION.apply(event, transaction)
    hits = [_with_custom_fields(transaction, props, config)]
    for product in products:
        if not isinstance(product, dict):
            continue
        item = {**base, "t": "item", "ti": transaction["ti"]}
        ITEM_HIT.apply(product, item)
        currency = product.get("currency")
        if not is_empty(currency) and isinstance(currency, str):
            item["cu"] = currency[:10]  # a product priced in its own currency
        elif "cu" in transaction:
            item["cu"] = transaction["cu"]
        hits.append(item)
    return hits


# ---------------------------------------------------------------- batching


def batch_weight(request: dict) -> tuple[int, int]:
    return 1, len(urlencode(request["body"]["FORM"]).encode("utf-8")) + 1


def merge_batch(requests: list[dict]) -> dict:
    """One /batch call: the body is the hits, URL-encoded, one per line (FORM holds that text)."""
    lines = "\n".join(urlencode(request["body"]["FORM"]) for request in requests)
    return delivery_request(
        BATCH_ENDPOINT,
        headers={"Content-Type": "text/plain"},
        form=lines,
        batch_key=requests[0].get("batch_key"),
    )
