"""What browser SDKs fetch before they send events, answered by the gateway so they need no third party:
RudderStack's source config (`GET /sourceConfig/`, both JS SDKs) and analytics.js' CDN settings
(`GET /v1/projects/<writeKey>/settings`). Both name no device-mode destination, so every event comes to
Sluice, which delivers it server-side; neither carries a destination's config, nor any URL taken from
the request: Sluice's address is the `public_url` setting."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from flask import Blueprint, Response

from config.settings import Settings, SettingsError
from config.workspace import Source
from gateway.ingest import authenticate, write_key_from
from gateway.state import state

bp = Blueprint("sdk_config", __name__)
NO_CACHE = {"Cache-Control": "no-cache"}  # a disabled source or a new key must show on the next page load
# RudderStack's SDKs report their own errors and metrics to RudderStack when a source asks for it: never.
SDK_SELF_REPORTING_OFF = {"statsCollection": {"errors": {"enabled": False}, "metrics": {"enabled": False}}}


def resolve_public_url(settings: Settings) -> str:
    """Where browsers reach this gateway, without a trailing slash: `public_url`, else http://host:port
    (127.0.0.1 when the gateway listens on every address). SettingsError when public_url is not a URL."""
    raw = settings.public_url.strip()
    if not raw:
        host = settings.host.strip().strip("[]")
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{settings.port}"
    problem = f"SLUICE_PUBLIC_URL: expected http(s)://host[:port][/path], found {raw!r}"
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise SettingsError(problem) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password \
            or parts.query or parts.fragment:
        raise SettingsError(problem)
    return raw.rstrip("/")


def source_config_body(source: Source) -> dict:
    """The source config RudderStack's JS SDKs read (v1.1 and v3): the source, self-reporting off, and no
    destinations (so nothing is loaded in the browser and nothing secret is shown)."""
    return {"source": {
        "id": source.id, "name": source.name, "writeKey": source.write_key, "enabled": source.enabled,
        "workspaceId": source.workspace_id, "config": SDK_SELF_REPORTING_OFF, "destinations": [],
    }}


def source_config() -> Response:
    """GET /sourceConfig/?writeKey=… (the key may also be the Basic auth user, as the SDKs send it)."""
    source = authenticate(state(), write_key_from(None))
    return Response(json.dumps(source_config_body(source)), mimetype="application/json", headers=NO_CACHE)


for _path in ("/sourceConfig", "/sourceConfig/"):
    bp.add_url_rule(_path, "source_config" + ("_slash" if _path.endswith("/") else ""), source_config,
                    methods=["GET"])


@bp.get("/v1/projects/<write_key>/settings")
def cdn_settings(write_key: str) -> Response:
    """What analytics.js fetches from Segment's CDN at start-up, pointing it back at this gateway."""
    st = state()
    authenticate(st, write_key)
    url = urlsplit(st.public_url)
    return Response(json.dumps({
        "integrations": {"Segment.io": {"apiKey": write_key, "apiHost": url.netloc + url.path + "/v1",
                                        "protocol": url.scheme}},
        "metrics": {"sampleRate": 0}, "plan": {}, "enabledMiddleware": {},
    }), mimetype="application/json", headers=NO_CACHE)
