"""The admin service behind SLUICE_ADMIN_TOKEN: the JSON API (the `sluice jobs` report, failed-job listing
and replay) and the page an on-call engineer opens first (ops/admin_page.py).

Off unless a token is configured (`sluice admin` refuses to start; every route answers 404 saying how to
turn it on). The API takes `Authorization: Bearer <token>`; the page a session cookie opened by entering
the token (ops/admin_auth.py). Low traffic: a threaded werkzeug server is enough; each open live-events
page holds one thread.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from flask import Blueprint, Flask, current_app, jsonify, redirect, request
from werkzeug.exceptions import HTTPException
from werkzeug.serving import make_server

from config.settings import Settings
from config.workspace import ConfigError, WorkspaceWatcher
from jobsdb.db import UNAVAILABLE_ERRORS
from jobsdb.replay import count, list_failed, replay
from ops import admin_auth
from ops.admin_db import long_lived, request_connection
from ops.admin_live import LiveTail
from ops.admin_overview import Overview
from ops.admin_secrets import Masker
from ops.replay import SelectionError, jsonable, selection_from, targets_json

log = logging.getLogger("sluice.admin")
MAX_PAGE = 1000
WORKSPACE_RETRY_SECONDS = 30
HERE = Path(__file__).resolve().parent

bp = Blueprint("admin_api", __name__)


@dataclass
class AdminState:
    """What every handler of one admin process shares (app.extensions["sluice_admin"])."""

    settings: Settings
    stop: threading.Event = field(default_factory=threading.Event)
    throttle: admin_auth.LoginThrottle = field(default_factory=admin_auth.LoginThrottle)
    overview: Overview = field(default_factory=Overview)
    live: LiveTail | None = None
    _watcher: WorkspaceWatcher | None = None
    _workspace_error: str | None = None
    _workspace_tried: float = 0.0
    _masker: tuple[str, Masker] | None = None
    _overview_db: object | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.live = LiveTail(self.settings.database_url, self.masker, self.stop)

    def workspace(self):
        """The workspace config (re-read when it changes), or None while it cannot be read: the page then
        shows ids instead of names and hides secrets by key name only."""
        with self._lock:
            if self._watcher is None and time.monotonic() - self._workspace_tried > WORKSPACE_RETRY_SECONDS:
                self._workspace_tried = time.monotonic()
                try:
                    self._watcher = WorkspaceWatcher(self.settings.config,
                                                     poll_interval=self.settings.config_poll_interval, logger=log)
                    self._watcher.start()
                    self._workspace_error = None
                except (ConfigError, OSError) as exc:
                    self._workspace_error = str(exc).splitlines()[0][:300]
                    log.warning("admin: workspace config not readable", extra={"error": self._workspace_error})
            return self._watcher.current if self._watcher is not None else None

    @property
    def workspace_error(self) -> str | None:
        return self._workspace_error

    def masker(self) -> Masker:
        workspace = self.workspace()
        mark = workspace.fingerprint if workspace is not None else ""
        cached = self._masker
        if cached is None or cached[0] != mark:
            cached = self._masker = (mark, Masker(workspace))
        return cached[1]

    def overview_db(self):
        with self._lock:
            if self._overview_db is None:
                self._overview_db = long_lived(self.settings.database_url, "sluice-admin-overview", self.stop,
                                               logger=log)
            return self._overview_db

    def db(self):
        """A connection for one request."""
        return request_connection(self.settings.database_url)

    def close(self) -> None:
        self.stop.set()
        if self._watcher is not None:
            self._watcher.stop()
        if self._overview_db is not None:
            self._overview_db.close()


def state() -> AdminState:
    return current_app.extensions["sluice_admin"]


def error(status: int, message: str):
    response = jsonify({"code": status, "message": message})
    response.status_code = status
    return response


def int_arg(name: str, raw, default: int, lo: int, hi: int | None = None) -> int:
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise SelectionError(f"{name}: expected a whole number, found {raw!r}") from None
    if value < lo or (hi is not None and value > hi):
        raise SelectionError(f"{name}: must be between {lo} and {hi}" if hi else f"{name}: must be at least {lo}")
    return value


# ---- the JSON API -----------------------------------------------------------------------------------------

@bp.get("/admin/jobs")
def jobs():
    from ops.jobs import collect

    return jsonify(collect(state().settings.database_url))  # times already ISO 8601 text


@bp.get("/admin/failed-jobs")
def failed_jobs():
    args = request.args
    sel = selection_from(args.getlist)
    limit = int_arg("limit", args.get("limit"), 100, 1, MAX_PAGE)
    after_id = int_arg("after_id", args.get("after_id"), 0, 0)
    with state().db() as conn, conn.cursor() as cur:
        total, _lo, hi = count(cur, sel)
        rows = list_failed(cur, sel, after_id=after_id, limit=limit)
    more = len(rows) == limit and rows[-1]["id"] < (hi or 0)
    return jsonify({"count": total, "jobs": [jsonable(r) for r in rows],
                    "next_after_id": rows[-1]["id"] if more else None})


REPLAY_FIELDS = {"destination", "destinations", "source", "sources", "stage", "stages", "status", "statuses", "id",
                 "ids", "reason", "since", "until", "include_replayed", "dry_run", "limit", "all", "show"}


@bp.post("/admin/replay")
def replay_jobs():
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return error(400, "expected a JSON object: selectors (destination, source, stage, status, reason, "
                          "since, until, ids, include_replayed), dry_run, limit, all")
    unknown = sorted(set(body) - REPLAY_FIELDS)
    if unknown:
        return error(400, f"unknown field {unknown[0]!r}; known: {', '.join(sorted(REPLAY_FIELDS))}")

    def get(word: str) -> list:
        value = body.get(word)
        return [] if value is None else (value if isinstance(value, list) else [value])

    sel = selection_from(get)
    if not sel.narrowed and body.get("all") is not True:
        return error(400, "say which failed jobs (destination, source, stage, status, reason, since/until, "
                          "ids) or send \"all\": true")
    limit = int_arg("limit", body.get("limit"), 0, 1) if body.get("limit") is not None else None
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        return error(400, "dry_run: expected true or false")
    with state().db() as conn:
        if dry_run:
            show = int_arg("show", body.get("show"), 20, 0, MAX_PAGE)
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


# ---- the app ----------------------------------------------------------------------------------------------

def on_selection_error(exc: SelectionError):
    return error(400, str(exc))


def on_db_down(exc: Exception):
    log.warning("database unavailable", extra={"error": str(exc).strip()[:300]})
    return error(503, "database unavailable")


def on_http_error(exc: HTTPException):
    return error(exc.code or 500, exc.description or exc.name)


def create_app(settings: Settings) -> Flask:
    from ops import admin_page

    app = Flask("sluice-admin", static_folder=None, template_folder=str(HERE / "templates"))
    app.json.sort_keys = False
    app.url_map.strict_slashes = False
    app.jinja_env.autoescape = True  # every template, whatever its name: events are hostile input
    admin_auth.configure(app, settings.admin_token)
    app.extensions["sluice_admin"] = AdminState(settings)
    app.config["SLUICE_ADMIN"] = app.extensions["sluice_admin"]
    app.register_blueprint(bp)
    app.register_blueprint(admin_page.bp)
    # The service's root leads to the page (which asks for the token), not to a 401 in JSON.
    app.add_url_rule("/", "root", lambda: redirect("/admin/"))
    app.before_request(admin_auth.authorize)
    app.after_request(admin_auth.security_headers)
    app.register_error_handler(SelectionError, on_selection_error)
    for kind in UNAVAILABLE_ERRORS:
        app.register_error_handler(kind, on_db_down)
    app.register_error_handler(HTTPException, on_http_error)
    return app


def serve(settings: Settings) -> int:
    """`sluice admin`: serve the API and the page until SIGTERM / SIGINT."""
    if not settings.admin_token:
        raise SystemExit("sluice admin: the admin API is disabled: set SLUICE_ADMIN_TOKEN to enable it")
    app = create_app(settings)
    server = make_server(settings.admin_host, settings.admin_port, app, threaded=True)
    admin_state: AdminState = app.extensions["sluice_admin"]

    def on_signal(signum, frame) -> None:
        admin_state.stop.set()  # ends every live-events stream
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    base = f"http://{settings.admin_host}:{server.server_port}"
    log.info("admin API listening", extra={"url": f"{base}/admin/jobs", "page": f"{base}/admin/"})
    try:
        server.serve_forever()
    finally:
        with contextlib.suppress(Exception):
            admin_state.close()
    log.info("admin API stopped")
    return 0
