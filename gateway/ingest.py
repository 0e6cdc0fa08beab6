"""Events in: the Segment- and RudderStack-compatible endpoints, in front of group commit.

Every handler is a module-level function of the `ingest` Blueprint; the worker's shared pieces come
from gateway.state. A request is refused whole (gateway.state.Reject: 4xx JSON) or its events are
checked one by one (gateway.enrich): invalid ones are reported and recorded, valid ones committed.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from datetime import UTC, datetime

from flask import Blueprint, Response, g, request

from config.metrics import metrics
from config.workspace import Source
from gateway.client_ip import client_ip as request_ip
from gateway.enrich import (
    EVENT_TYPES,
    SHORT_TYPES,
    BadJSON,
    InvalidEvent,
    enrich,
    iso_ms,
    parse_body,
    parse_time,
    pixel_event,
)
from gateway.group_commit import DatabaseUnavailable, RequestDataError
from gateway.rejections import NO_EVENT
from gateway.state import GatewayState, Reject, error_response, state
from jobsdb.queue import GatewayRow, partition_of

bp = Blueprint("ingest", __name__)
PIXEL_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
PIXEL_HEADERS = {"Cache-Control": "no-cache, no-store, must-revalidate, max-age=0", "Pragma": "no-cache",
                 "Expires": "0"}


# ---- routes ------------------------------------------------------------------------------------------------

def single_event(event_type: str) -> Response:
    """POST /v1/{track,identify,page,screen,group,alias} and analytics.js' /v1/{t,i,p,s,g,a}."""
    st = state()
    body = parse_json(st, read_body(st))
    source = authenticate(st, write_key_from(body))
    if not isinstance(body, dict):
        raise Reject(400, "invalid_event", "event is not a JSON object")
    return ingest(st, [body], event_type, {}, source)


def batch() -> Response:
    """POST /v1/batch, /v1/import, analytics.js' /v1/b, and /beacon/v1/batch (?writeKey=)."""
    st = state()
    body = parse_json(st, read_body(st))
    source = authenticate(st, write_key_from(body))
    if isinstance(body, list):
        body = {"batch": body}
    if not isinstance(body, dict) or not isinstance(body.get("batch"), list):
        raise Reject(400, "invalid_batch", "body must be an object with a 'batch' array")
    return ingest(st, body["batch"], None, body, source)


def pixel(event_type: str) -> Response:
    """GET /pixel/v1/{track,page}: always answers a 1x1 GIF, never cacheable; the status tells what happened."""
    st = state()
    headers = dict(PIXEL_HEADERS)
    status = 200
    try:
        source = authenticate(st, request.args.get("writeKey"))
        event = pixel_event(event_type, request.args)
        now = datetime.now(UTC).isoformat()
        event.setdefault("originalTimestamp", now)
        event.setdefault("sentAt", now)
        result = ingest(st, [event], event_type, {}, source)
        status = result.status_code
        if status != 200:
            headers["X-Sluice-Error"] = result.get_data(as_text=True)[:200]
    except Reject as exc:
        status = exc.status
        headers["X-Sluice-Error"] = exc.message
        record([rejection_row(exc.status, exc.message, dict(request.args))])
    return Response(PIXEL_GIF, status=status, mimetype="image/gif", headers=headers)


for _path, _type in (*((t, t) for t in EVENT_TYPES), *SHORT_TYPES.items()):
    bp.add_url_rule(f"/v1/{_path}", f"single_{_path}", single_event, methods=["POST"], defaults={"event_type": _type})
for _path in ("/v1/batch", "/v1/import", "/v1/b", "/beacon/v1/batch"):
    bp.add_url_rule(_path, _path, batch, methods=["POST"])
for _type in ("track", "page"):
    bp.add_url_rule(f"/pixel/v1/{_type}", f"pixel_{_type}", pixel, methods=["GET"], defaults={"event_type": _type})


@bp.post("/v1/m")
def client_metrics() -> Response:
    return Response("OK", mimetype="text/plain")  # analytics.js client metrics: accepted and ignored


@bp.app_errorhandler(Reject)
def on_reject(exc: Reject) -> Response:
    if exc.status in (400, 404, 413, 429) or (exc.status == 401 and g.get("write_key")):
        record([rejection_row(exc.status, exc.message)])
    return error_response(exc.status, exc.code, exc.message, exc.headers)


# ---- ingestion ---------------------------------------------------------------------------------------------

def ingest(st: GatewayState, events: list, event_type: str | None, envelope: dict, source: Source) -> Response:
    """Check and enrich each event; commit the valid ones (answered after the commit), record the rest."""
    settings = st.settings
    if len(events) > settings.max_batch_events:
        raise Reject(413, "too_many_events",
                     f"batch has {len(events)} events, more than the limit of {settings.max_batch_events}")
    if st.limiter is not None:
        allowed, wait = st.limiter.allow(source.write_key, max(1, len(events)))
        if not allowed:
            raise Reject(429, "rate_limited", "max requests limit reached", {"Retry-After": str(wait)})
    received_at = datetime.now(UTC)
    received_iso = iso_ms(received_at)
    ip = client_ip(st)
    sent_value = envelope.get("sentAt") or request.headers.get("SentAt")
    sent_at = parse_time(sent_value)
    rows, rejected, problems = [], [], []
    for index, event in enumerate(events):
        try:
            enriched, user_key, payload = enrich(
                event, event_type=event_type, received_at=received_at, request_ip=ip,
                batch_sent_at=sent_value if sent_at is None else sent_at,  # unusable: kept as the client sent it
                batch_context=envelope.get("context"), batch_integrations=envelope.get("integrations"),
                max_event_size=settings.max_event_size, exact=g.get("exact_json", True),
                received_iso=received_iso,
            )
        except InvalidEvent as exc:
            problems.append({"index": index, "reason": str(exc)})
            row = rejection_row(400, str(exc), event)
            if row is not None:
                rejected.append(row)
            continue
        rows.append(GatewayRow(partition_of(user_key, settings.gw_partitions), source.id, user_key, payload,
                               enriched["receivedAt"]))
    counters = metrics()
    if not rows:
        if not events:
            raise Reject(400, "empty_batch", "batch has no events")
        counters.gateway_events.labels(source.id, "rejected").inc(len(problems))
        record(rejected)
        if len(problems) == 1 and event_type is not None:
            status = 413 if "byte limit" in problems[0]["reason"] else 400
            return error_response(status, "invalid_event", problems[0]["reason"])
        return Response(json.dumps({"code": "invalid_events", "message": f"all {len(events)} events rejected",
                                    "rejected": problems}), status=400, mimetype="application/json")
    if problems:
        counters.gateway_events.labels(source.id, "rejected").inc(len(problems))
    try:
        st.committer.submit(rows, rejected)
    except RequestDataError as exc:
        raise Reject(400, "invalid_event", f"database refused the event: {exc}") from None
    except DatabaseUnavailable as exc:
        return error_response(503, "database_unavailable", f"events not stored, retry later: {exc}",
                              {"Retry-After": "1"})
    counters.gateway_events.labels(source.id, "accepted").inc(len(rows))
    if problems:
        body = {"code": "partial", "message": f"{len(rows)} accepted, {len(problems)} rejected",
                "accepted": len(rows), "rejected": problems}
        return Response(json.dumps(body), status=200, mimetype="application/json")
    return Response("OK", status=200, mimetype="text/plain")


# ---- the request -------------------------------------------------------------------------------------------

def client_ip(st: GatewayState) -> str | None:
    """The client's address (gateway.client_ip): X-Forwarded-For counts only from a trusted proxy."""
    return request_ip(request.remote_addr, request.headers.getlist("X-Forwarded-For"), st.trusted_proxies,
                      st.settings.trust_forwarded_for)


def read_body(st: GatewayState) -> bytes:
    limit = st.settings.max_request_size
    length = request.content_length
    if length is not None and length > limit:
        raise Reject(413, "request_too_large", f"request is {length} bytes, more than the {limit} byte limit")
    raw = request.get_data(cache=False)
    if len(raw) > limit:
        raise Reject(413, "request_too_large", f"request is more than the {limit} byte limit")
    encoding = (request.headers.get("Content-Encoding") or "").lower()
    if encoding == "gzip" or raw[:2] == b"\x1f\x8b":
        try:
            raw = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(raw, limit + 1)
        except zlib.error:
            raise Reject(400, "bad_gzip", "body is not valid gzip") from None
        if len(raw) > limit:
            raise Reject(413, "request_too_large", f"decompressed request is more than the {limit} byte limit")
    g.raw_body = raw
    return raw


def parse_json(st: GatewayState, raw: bytes):
    if not raw.strip():
        raise Reject(400, "empty_body", "request body is empty")
    try:
        # Cutting an over-deep body is slow Python work: only for a request that names a valid write key
        # where it is cheap to find (Basic user or ?writeKey=); anyone else's over-deep body is refused.
        value, g.exact_json = parse_body(raw, cut_too_deep=lambda: _key_outside_body_is_valid(st))
        return value
    except BadJSON as exc:
        raise Reject(400, "invalid_json", str(exc)) from None


def _key_outside_body_is_valid(st: GatewayState) -> bool:
    key = write_key_from(None)
    return bool(key) and st.workspace.current.source_by_write_key(key) is not None


def write_key_from(body) -> str | None:
    """Basic auth user, else `writeKey` in the body, else ?writeKey=."""
    auth = request.authorization
    if auth is not None and auth.type == "basic" and auth.username:
        return auth.username
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("basic "):
        try:
            user = base64.b64decode(header[6:].strip()).decode("utf-8").split(":", 1)[0]
            if user:
                return user
        except (binascii.Error, UnicodeDecodeError):
            pass
    if isinstance(body, dict) and isinstance(body.get("writeKey"), str) and body["writeKey"]:
        return body["writeKey"]
    return request.args.get("writeKey") or None


def authenticate(st: GatewayState, write_key: str | None) -> Source:
    g.write_key = write_key
    if not write_key:
        raise Reject(401, "no_write_key", "no write key: send it as the Basic auth user, in the body or ?writeKey=")
    source = st.workspace.current.source_by_write_key(write_key)
    if source is None:
        raise Reject(401, "invalid_write_key", "invalid write key")
    g.source_id = source.id
    if not source.enabled:
        raise Reject(404, "source_disabled", "source is disabled")
    return source


# ---- rejection records -------------------------------------------------------------------------------------

def rejection_row(status: int, reason: str, event=NO_EVENT) -> tuple | None:
    """A gw_rejected row for this request (or one of its events), or None over the per-minute cap."""
    st = state()
    return st.rejections.record(
        source_id=g.get("source_id"), write_key=g.get("write_key"), request_ip=client_ip(st), endpoint=request.path,
        status=status, reason=reason, event=event, body=g.get("raw_body") if event is NO_EVENT else None)


def record(rows: list) -> None:
    rows = [r for r in rows if r is not None]
    if rows:
        state().committer.record_rejected(rows)
