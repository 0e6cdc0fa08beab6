"""The gateway's HTTP surface: Segment- and RudderStack-compatible endpoints in front of group commit."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
import zlib
from datetime import UTC, datetime

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from config.metrics import metrics, render
from config.settings import Settings
from config.workspace import Source
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
from gateway.group_commit import DatabaseUnavailable, GroupCommitter, RequestDataError
from gateway.rate_limit import RateLimiter
from jobsdb.db import UNAVAILABLE_ERRORS, connect
from jobsdb.queue import GatewayRow, partition_of

log = logging.getLogger("sluice.gateway")
VERSION = "0.1.0"
GW_PARTITIONS = 16
PIXEL_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
CORS_HEADERS = (
    "Authorization, Content-Type, Content-Encoding, X-Retry-Count, AnonymousId, SentAt, Rsa-Retry-Attempt, "
    "Rsa-Since-Last-Attempt, Rsa-Since-First-Attempt, Rsa-Retry-Reason, Rsa-Recovered"
)


class Reject(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def error_response(status: int, code: str, message: str, headers: dict | None = None) -> Response:
    body = json.dumps({"code": code, "message": message})
    return Response(body, status=status, mimetype="application/json", headers=headers)


def create_app(settings: Settings, workspace, committer: GroupCommitter, processes: int = 1, offload=None) -> Flask:
    """workspace: an object with a `.current` Workspace (a WorkspaceWatcher, or a fixed holder in tests).
    offload(fn, args): where blocking database calls run (gevent workers: a native thread), or None."""

    def blocking(fn, *args):
        return fn(*args) if offload is None else offload(fn, args)

    app = Flask("sluice.gateway")
    app.config["MAX_CONTENT_LENGTH"] = None
    limiter = RateLimiter(settings.rate_limit_events, settings.rate_limit_window, processes)
    counters = metrics()

    # ---- request helpers -----------------------------------------------------------------------------

    def client_ip() -> str | None:
        if settings.trust_forwarded_for:  # behind a load balancer; off when clients reach us directly
            forwarded = request.headers.get("X-Forwarded-For")
            if forwarded:
                return forwarded.split(",")[0].strip()
        return request.remote_addr

    def read_body() -> bytes:
        length = request.content_length
        if length is not None and length > settings.max_request_size:
            raise Reject(413, "request_too_large",
                         f"request is {length} bytes, more than the {settings.max_request_size} byte limit")
        raw = request.get_data(cache=False)
        if len(raw) > settings.max_request_size:
            raise Reject(413, "request_too_large", f"request is more than the {settings.max_request_size} byte limit")
        encoding = (request.headers.get("Content-Encoding") or "").lower()
        if encoding == "gzip" or raw[:2] == b"\x1f\x8b":
            try:
                d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                raw = d.decompress(raw, settings.max_request_size + 1)
            except zlib.error:
                raise Reject(400, "bad_gzip", "body is not valid gzip") from None
            if len(raw) > settings.max_request_size:
                raise Reject(413, "request_too_large",
                             f"decompressed request is more than the {settings.max_request_size} byte limit")
        return raw

    def parse_json(raw: bytes):
        if not raw.strip():
            raise Reject(400, "empty_body", "request body is empty")
        try:
            value, g.exact_json = parse_body(raw)
            return value
        except BadJSON as exc:
            g.raw_excerpt = raw[:2000].decode("utf-8", "replace").replace("\x00", "")
            raise Reject(400, "invalid_json", str(exc)) from None

    def write_key_from(body) -> str | None:
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

    def authenticate(write_key: str | None) -> Source:
        g.write_key = write_key
        if not write_key:
            raise Reject(401, "no_write_key", "no write key: send it as the Basic auth user, in the body or ?writeKey=")
        source = workspace.current.source_by_write_key(write_key)
        if source is None:
            raise Reject(401, "invalid_write_key", "invalid write key")
        g.source_id = source.id
        if not source.enabled:
            raise Reject(404, "source_disabled", "source is disabled")
        return source

    def rejection(status: int, reason: str, event=None, raw: str | None = None) -> tuple:
        event_json = None
        if event is not None:
            # Kept for the record; what jsonb cannot hold (NaN, lone surrogates) is kept as text instead.
            try:
                text = json.dumps(event, ensure_ascii=False, allow_nan=False).replace("\\u0000", "")
                text.encode("utf-8")
                event_json = text if len(text) <= 200_000 else None
            except (ValueError, TypeError, RecursionError):
                event_json = None
            if event_json is None:
                raw = raw or repr(event)[:2000].encode("utf-8", "replace").decode("utf-8")
        return (g.get("source_id"), g.get("write_key"), client_ip(), request.path, status, reason, event_json, raw)

    # ---- ingestion -----------------------------------------------------------------------------------

    def ingest(events: list, event_type: str | None, envelope: dict, source: Source) -> Response:
        if len(events) > settings.max_batch_events:
            raise Reject(413, "too_many_events",
                         f"batch has {len(events)} events, more than the limit of {settings.max_batch_events}")
        if settings.rate_limit_enabled:
            allowed, wait = limiter.allow(source.write_key, max(1, len(events)))
            if not allowed:
                raise Reject(429, "rate_limited", "max requests limit reached", {"Retry-After": str(wait)})
        received_at = datetime.now(UTC)
        received_iso = iso_ms(received_at)
        ip = client_ip()
        sent_at = parse_time(envelope.get("sentAt") or request.headers.get("SentAt"))
        rows, rejected, problems = [], [], []
        for index, event in enumerate(events):
            try:
                enriched, user_key, payload = enrich(
                    event, event_type=event_type, received_at=received_at, request_ip=ip, batch_sent_at=sent_at,
                    batch_context=envelope.get("context"), batch_integrations=envelope.get("integrations"),
                    max_event_size=settings.max_event_size, exact=g.get("exact_json", True),
                    received_iso=received_iso,
                )
            except InvalidEvent as exc:
                problems.append({"index": index, "reason": str(exc)})
                rejected.append(rejection(400, str(exc), event if isinstance(event, dict | list) else None))
                continue
            rows.append(GatewayRow(partition_of(user_key, GW_PARTITIONS), source.id, user_key, payload,
                                   enriched["receivedAt"]))
        if not rows:
            if not events:
                raise Reject(400, "empty_batch", "batch has no events")
            counters.gateway_events.labels(source.id, "rejected").inc(len(problems))
            committer.record_rejected(rejected)
            if len(problems) == 1 and event_type is not None:
                status = 413 if "byte limit" in problems[0]["reason"] else 400
                return error_response(status, "invalid_event", problems[0]["reason"])
            return Response(json.dumps({"code": "invalid_events", "message": f"all {len(events)} events rejected",
                                        "rejected": problems}), status=400, mimetype="application/json")
        if problems:
            counters.gateway_events.labels(source.id, "rejected").inc(len(problems))
        try:
            committer.submit(rows, rejected)
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

    def handle_single(event_type: str) -> Response:
        body = parse_json(read_body())
        source = authenticate(write_key_from(body))
        if not isinstance(body, dict):
            raise Reject(400, "invalid_event", "event is not a JSON object")
        return ingest([body], event_type, {}, source)

    def handle_batch() -> Response:
        body = parse_json(read_body())
        source = authenticate(write_key_from(body))
        if isinstance(body, list):
            body = {"batch": body}
        if not isinstance(body, dict) or not isinstance(body.get("batch"), list):
            raise Reject(400, "invalid_batch", "body must be an object with a 'batch' array")
        return ingest(body["batch"], None, body, source)

    # ---- routes --------------------------------------------------------------------------------------

    for etype in EVENT_TYPES:
        app.add_url_rule(f"/v1/{etype}", f"single_{etype}", lambda etype=etype: handle_single(etype),
                         methods=["POST"])
    for short, etype in SHORT_TYPES.items():
        app.add_url_rule(f"/v1/{short}", f"short_{short}", lambda etype=etype: handle_single(etype),
                         methods=["POST"])
    for path in ("/v1/batch", "/v1/import", "/v1/b", "/beacon/v1/batch"):
        app.add_url_rule(path, path, handle_batch, methods=["POST"])

    @app.post("/v1/m")
    def metrics_sink():
        return Response("OK", mimetype="text/plain")  # analytics.js client metrics: accepted and ignored

    @app.get("/v1/projects/<write_key>/settings")
    def cdn_settings(write_key):
        authenticate(write_key)
        host = request.host + "/v1"
        return Response(json.dumps({
            "integrations": {"Segment.io": {"apiKey": write_key, "apiHost": host, "protocol": request.scheme}},
            "metrics": {"sampleRate": 0}, "plan": {}, "enabledMiddleware": {},
        }), mimetype="application/json")

    def pixel(event_type: str) -> Response:
        headers = {"Cache-Control": "no-cache, no-store, must-revalidate, max-age=0", "Pragma": "no-cache",
                   "Expires": "0"}
        status = 200
        try:
            source = authenticate(request.args.get("writeKey"))
            event = pixel_event(event_type, request.args)
            now = datetime.now(UTC).isoformat()
            event.setdefault("originalTimestamp", now)
            event.setdefault("sentAt", now)
            result = ingest([event], event_type, {}, source)
            status = result.status_code
            if status != 200:
                headers["X-Sluice-Error"] = result.get_data(as_text=True)[:200]
        except Reject as exc:
            status = exc.status
            headers["X-Sluice-Error"] = exc.message
            committer.record_rejected([rejection(exc.status, exc.message, dict(request.args))])
        # A pixel always answers an image, even on errors; the status tells what happened.
        return Response(PIXEL_GIF, status=status, mimetype="image/gif", headers=headers)

    app.add_url_rule("/pixel/v1/track", "pixel_track", lambda: pixel("track"), methods=["GET"])
    app.add_url_rule("/pixel/v1/page", "pixel_page", lambda: pixel("page"), methods=["GET"])

    def _queue_head():
        conn = connect(settings.database_url, "sluice-health", autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute("SET statement_timeout = '2s'")
                cur.execute("SELECT count(*), min(received_at) FROM gw_jobs WHERE state = 0")
                return cur.fetchone()
        finally:
            conn.close()

    @app.get("/health")
    def health():
        body = {"server": "UP", "db": "DOWN", "version": VERSION, "acceptingEvents": False,
                "config": {"file": workspace.current.path, "sources": len(workspace.current.sources),
                           "loadedAt": workspace.current.loaded_at}}
        status = 503
        try:
            pending, oldest = blocking(_queue_head)
            body["db"] = "UP"
            body["acceptingEvents"] = True
            body["queue"] = {"gw_pending": pending,
                             "gw_oldest_pending_age_s": round(time.time() - oldest.timestamp(), 3) if oldest else 0}
            status = 200
        except UNAVAILABLE_ERRORS as exc:
            body["error"] = str(exc).strip().splitlines()[0] if str(exc).strip() else "database unreachable"
        except Exception as exc:  # noqa: BLE001 - health must answer, whatever broke
            body["error"] = str(exc).strip().splitlines()[0]
        body["committer"] = {"commits": committer.commits, "rows": committer.committed_rows}
        return Response(json.dumps(body), status=status, mimetype="application/json")

    def _queue_depths():
        conn = connect(settings.database_url, "sluice-metrics", autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute("SET statement_timeout = '2s'")
                queues = []
                for queue, table, col in (("gw", "gw_jobs", "received_at"), ("rt", "rt_jobs", "created_at"),
                                          ("batch_rt", "batch_rt_jobs", "created_at")):
                    cur.execute(f"SELECT count(*), extract(epoch FROM now() - min({col})) FROM {table} WHERE state = 0")
                    n, age = cur.fetchone()
                    queues.append((queue, n, float(age or 0)))
                cur.execute("SELECT coalesce(destination_id, ''), stage, count(*) FROM failed_jobs "
                            "WHERE replayed_at IS NULL GROUP BY 1, 2")
                return queues, cur.fetchall()
        finally:
            conn.close()

    class QueueCollector:
        """Queue depths and open dead letters, read from Postgres at scrape time."""

        def collect(self):
            from prometheus_client.core import GaugeMetricFamily

            pending = GaugeMetricFamily("sluice_queue_pending", "Jobs waiting in a queue", labels=["queue"])
            oldest = GaugeMetricFamily("sluice_queue_oldest_pending_seconds", "Age of the oldest pending job",
                                       labels=["queue"])
            failed = GaugeMetricFamily("sluice_failed_jobs_open", "Dead letters not yet replayed",
                                       labels=["destination_id", "stage"])
            up = GaugeMetricFamily("sluice_database_up", "1 when Postgres answered this scrape")
            try:
                queues, dead = blocking(_queue_depths)
                for queue, n, age in queues:
                    pending.add_metric([queue], n)
                    oldest.add_metric([queue], age)
                for dest, stage, n in dead:
                    failed.add_metric([dest, stage], n)
                up.add_metric([], 1)
            except Exception:  # noqa: BLE001 - a scrape must answer even with the database down
                up.add_metric([], 0)
            yield from (pending, oldest, failed, up)

    queue_collector = QueueCollector()

    @app.get("/metrics")
    def prometheus_metrics():
        body, content_type = render(queue_collector)
        return Response(body, content_type=content_type)

    @app.get("/version")
    def version():
        return Response(json.dumps({"version": VERSION, "name": "sluice"}), mimetype="application/json")

    @app.get("/")
    def root():
        return Response("OK", mimetype="text/plain")

    # ---- errors and CORS -----------------------------------------------------------------------------

    @app.errorhandler(Reject)
    def on_reject(exc: Reject):
        if exc.status in (400, 404, 413, 429):
            raw = g.get("raw_excerpt")
            committer.record_rejected([rejection(exc.status, exc.message, None, raw)])
        elif exc.status == 401 and g.get("write_key"):
            committer.record_rejected([rejection(exc.status, exc.message)])
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.errorhandler(HTTPException)
    def on_http_error(exc: HTTPException):
        headers = {k: v for k, v in exc.get_headers() if k.lower() == "allow"}  # 405 must name the methods
        return error_response(exc.code or 500, (exc.name or "error").lower().replace(" ", "_"),
                              exc.description or "", headers)

    @app.errorhandler(Exception)
    def on_error(exc: Exception):
        log.exception("unhandled error on %s", request.path)
        return error_response(500, "internal_error", f"{type(exc).__name__}: {exc}")

    @app.before_request
    def preflight():
        if request.method == "OPTIONS":
            return Response(status=204)
        return None

    @app.after_request
    def cors(response: Response):
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        counters.gateway_requests.labels(rule, str(response.status_code)).inc()
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

    app.url_map.strict_slashes = False
    return app
