"""The admin HTTP API: the `sluice jobs` report, failed-job listing and replay, behind SLUICE_ADMIN_TOKEN.

Off unless a token is configured (every route then answers 404 saying how to turn it on); every
request needs `Authorization: Bearer <token>`. Low traffic: a threaded werkzeug server is enough.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import signal
import threading

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.serving import make_server

from config.settings import Settings
from jobsdb.db import UNAVAILABLE_ERRORS, connect
from jobsdb.replay import count, list_failed, replay
from ops.replay import SelectionError, jsonable, selection_from, targets_json

log = logging.getLogger("sluice.admin")
MAX_PAGE = 1000


def _error(status: int, message: str):
    response = jsonify({"code": status, "message": message})
    response.status_code = status
    return response


def _int(name: str, raw, default: int, lo: int, hi: int | None = None) -> int:
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise SelectionError(f"{name}: expected a whole number, found {raw!r}") from None
    if value < lo or (hi is not None and value > hi):
        raise SelectionError(f"{name}: must be between {lo} and {hi}" if hi else f"{name}: must be at least {lo}")
    return value


def create_app(settings: Settings) -> Flask:
    app = Flask("sluice-admin")
    app.json.sort_keys = False
    token = settings.admin_token

    def db():
        return contextlib.closing(connect(settings.database_url, "sluice-admin"))

    @app.before_request
    def authorize():
        if not token:
            return _error(404, "the admin API is disabled: set SLUICE_ADMIN_TOKEN to enable it")
        given = request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            response = _error(401, "missing or wrong token: send Authorization: Bearer <SLUICE_ADMIN_TOKEN>")
            response.headers["WWW-Authenticate"] = 'Bearer realm="sluice-admin"'
            return response
        return None

    @app.errorhandler(SelectionError)
    def bad_selection(exc):
        return _error(400, str(exc))

    def db_down(exc):
        log.warning("database unavailable", extra={"error": str(exc).strip()[:300]})
        return _error(503, "database unavailable")

    for kind in UNAVAILABLE_ERRORS:
        app.register_error_handler(kind, db_down)

    @app.errorhandler(HTTPException)
    def http_error(exc):
        return _error(exc.code or 500, exc.description or exc.name)

    @app.get("/admin/jobs")
    def jobs():
        from ops.jobs import collect

        return jsonify(jsonable_report(collect(settings.database_url)))

    @app.get("/admin/failed-jobs")
    def failed_jobs():
        args = request.args
        sel = selection_from(args.getlist)
        limit = _int("limit", args.get("limit"), 100, 1, MAX_PAGE)
        after_id = _int("after_id", args.get("after_id"), 0, 0)
        with db() as conn, conn.cursor() as cur:
            total, _lo, _hi = count(cur, sel)
            rows = list_failed(cur, sel, after_id=after_id, limit=limit)
        more = len(rows) == limit and rows[-1]["id"] < (_hi or 0)
        return jsonify({"count": total, "jobs": [jsonable(r) for r in rows],
                        "next_after_id": rows[-1]["id"] if more else None})

    @app.post("/admin/replay")
    def replay_jobs():
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return _error(400, "expected a JSON object: selectors (destination, source, stage, status, reason, "
                               "since, until, ids, include_replayed), dry_run, limit, all")
        known = {"destination", "destinations", "source", "sources", "stage", "stages", "status", "statuses",
                 "id", "ids", "reason", "since", "until", "include_replayed", "dry_run", "limit", "all", "show"}
        unknown = sorted(set(body) - known)
        if unknown:
            return _error(400, f"unknown field {unknown[0]!r}; known: {', '.join(sorted(known))}")

        def get(word: str) -> list:
            value = body.get(word)
            return [] if value is None else (value if isinstance(value, list) else [value])

        sel = selection_from(get)
        if not sel.narrowed and body.get("all") is not True:
            return _error(400, "say which failed jobs (destination, source, stage, status, reason, since/until, "
                               "ids) or send \"all\": true")
        limit = _int("limit", body.get("limit"), 0, 1) if body.get("limit") is not None else None
        dry_run = body.get("dry_run", False)
        if not isinstance(dry_run, bool):
            return _error(400, "dry_run: expected true or false")
        with db() as conn:
            if dry_run:
                show = _int("show", body.get("show"), 20, 0, MAX_PAGE)
                with conn.cursor() as cur:
                    matched, _lo, _hi = count(cur, sel)
                    rows = list_failed(cur, sel, limit=show) if show else []
                n = matched if limit is None else min(matched, limit)
                return jsonify({"dry_run": True, "count": n, "matched": matched, "selection": sel.describe(),
                                "jobs": [jsonable(r) for r in rows]})
            result = replay(conn, sel, f"admin-api:{request.remote_addr}", limit=limit)
        log.info("replayed failed jobs", extra={"replayed": result.selected, "selection": sel.describe(),
                                                "remote": request.remote_addr})
        return jsonify({"dry_run": False, "replayed": result.selected, "selection": sel.describe(),
                        "targets": targets_json(result.targets)})

    return app


def jsonable_report(report: dict) -> dict:
    return {**report, "failed": [jsonable(f) for f in report["failed"]],
            "warehouses": [jsonable(w) for w in report.get("warehouses", [])]}


def serve(settings: Settings) -> int:
    """`sluice admin`: serve the API until SIGTERM / SIGINT."""
    if not settings.admin_token:
        raise SystemExit("sluice admin: the admin API is disabled: set SLUICE_ADMIN_TOKEN to enable it")
    server = make_server(settings.admin_host, settings.admin_port, create_app(settings), threaded=True)
    stop = threading.Event()

    def on_signal(signum, frame) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("admin API listening", extra={"url": f"http://{settings.admin_host}:{server.server_port}/admin/jobs"})
    server.serve_forever()
    log.info("admin API stopped")
    return 0

