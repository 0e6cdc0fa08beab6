"""The gateway's Flask app: one worker's state, the Blueprints (gateway.ingest: events in;
gateway.sdk_config: what browser SDKs fetch first; gateway.status: health, version, metrics), JSON errors
and CORS."""

from __future__ import annotations

import logging

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from config.metrics import metrics
from config.settings import Settings
from gateway import ingest, sdk_config, status
from gateway.client_ip import parse_networks
from gateway.group_commit import GroupCommitter
from gateway.health import HealthCheck
from gateway.rate_limit import SharedRateLimiter
from gateway.rejections import RejectionLog
from gateway.side_connection import SideConnection
from gateway.state import GatewayState, error_response

log = logging.getLogger("sluice.gateway")
CORS_HEADERS = (
    "Authorization, Content-Type, Content-Encoding, X-Retry-Count, AnonymousId, SentAt, Rsa-Retry-Attempt, "
    "Rsa-Since-Last-Attempt, Rsa-Since-First-Attempt, Rsa-Retry-Reason, Rsa-Recovered"
)


def create_app(settings: Settings, workspace, committer: GroupCommitter, offload=None, *,
               limiter: SharedRateLimiter | None = None, health: HealthCheck | None = None) -> Flask:
    """workspace: an object with a `.current` Workspace. offload(fn, args): where blocking database calls
    run (gevent workers: a native thread), or None. limiter and health default to ones on their own side
    connections (the limiter only when rate_limit_enabled)."""
    public_url = sdk_config.resolve_public_url(settings)  # bad values stop the start (SettingsError)
    trusted_proxies = parse_networks(settings.trusted_proxies)
    app = Flask("sluice.gateway")
    app.config["MAX_CONTENT_LENGTH"] = None
    app.url_map.strict_slashes = False
    if limiter is None and settings.rate_limit_enabled:
        limiter = SharedRateLimiter(SideConnection(settings.database_url, "sluice-gateway-ratelimit",
                                                   synchronous_commit=False, offload=offload),
                                    settings.rate_limit_events, settings.rate_limit_window)
    if health is None:
        health = HealthCheck(SideConnection(settings.database_url, "sluice-gateway-health", offload=offload),
                             committer, settings.heartbeat_seconds)
    app.extensions["sluice"] = GatewayState(
        settings=settings, workspace=workspace, committer=committer,
        rejections=RejectionLog(settings.gw_rejected_per_minute, settings.gw_rejected_unauthenticated_bytes),
        health=health, limiter=limiter, offload=offload, public_url=public_url, trusted_proxies=trusted_proxies)
    app.register_blueprint(ingest.bp)
    app.register_blueprint(sdk_config.bp)
    app.register_blueprint(status.bp)
    app.register_error_handler(HTTPException, on_http_error)
    app.register_error_handler(Exception, on_error)
    app.before_request(preflight)
    app.after_request(cors)
    return app


def on_http_error(exc: HTTPException) -> Response:
    headers = {k: v for k, v in exc.get_headers() if k.lower() == "allow"}  # 405 must name the methods
    return error_response(exc.code or 500, (exc.name or "error").lower().replace(" ", "_"),
                          exc.description or "", headers)


def on_error(exc: Exception) -> Response:
    log.exception("unhandled error on %s", request.path)
    return error_response(500, "internal_error", f"{type(exc).__name__}: {str(exc)[:300]}")


def preflight():
    if request.method == "OPTIONS":
        return Response(status=204)
    return None


def cors(response: Response) -> Response:
    rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
    metrics().gateway_requests.labels(rule, str(response.status_code)).inc()
    origin = request.headers.get("Origin")
    if origin is None and request.method != "OPTIONS":
        return response  # not a browser: no CORS headers needed (server SDKs, pixels as images)
    headers = response.headers
    headers["Access-Control-Allow-Origin"] = origin or "*"
    if origin:
        headers["Access-Control-Allow-Credentials"] = "true"
        headers["Vary"] = "Origin"
    headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
    headers["Access-Control-Allow-Headers"] = request.headers.get("Access-Control-Request-Headers") or CORS_HEADERS
    headers["Access-Control-Max-Age"] = "900"
    return response
