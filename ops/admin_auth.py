"""Who may use the admin service, and the headers every answer carries.

Two ways in, both needing SLUICE_ADMIN_TOKEN: `Authorization: Bearer <token>` (scripts, the JSON API),
or a session cookie the login form sets once the token was entered (the page). The cookie is signed
with a key derived from the token (a new token ends every session), HttpOnly and SameSite=Strict, and
lives until the browser closes or for SESSION_HOURS at most. Every POST made with the cookie must carry
the session's CSRF token (form field or X-CSRF-Token header); Bearer requests need none, since a
browser never adds that header by itself.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from urllib.parse import urlsplit

from flask import current_app, jsonify, redirect, request, session, url_for
from flask.sessions import SecureCookieSessionInterface

SESSION_HOURS = 12
COOKIE_NAME = "sluice_admin"
LOGIN_FAILURES_PER_MINUTE = 10  # per client address; then 429 until the minute has passed
# The page loads nothing from anywhere else and runs no inline script; answers are never framed.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
PUBLIC_ENDPOINTS = {"root", "admin_page.login", "admin_page.login_post", "admin_page.static"}


def session_key(token: str) -> bytes:
    return hmac.new(token.encode(), b"sluice-admin-session-v1", hashlib.sha256).digest()


def token_mark(token: str) -> str:
    """What a session remembers of the token it was opened with (not the token)."""
    return hmac.new(token.encode(), b"sluice-admin-session-owner", hashlib.sha256).hexdigest()[:32]


class CookieSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, marked Secure whenever the page was reached over HTTPS."""

    def get_cookie_secure(self, app) -> bool:
        return bool(request and request.is_secure)


def configure(app, token: str) -> None:
    app.secret_key = session_key(token) if token else secrets.token_bytes(32)
    app.session_interface = CookieSessions()
    app.config.update(SESSION_COOKIE_NAME=COOKIE_NAME, SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_PATH="/admin",
                      SESSION_REFRESH_EACH_REQUEST=False)


def _error(status: int, message: str):
    response = jsonify({"code": status, "message": message})
    response.status_code = status
    return response


def bearer_ok(token: str) -> bool | None:
    """True/False for a request that sent a Bearer header, None when it sent none."""
    given = request.headers.get("Authorization")
    if given is None:
        return None
    scheme, _, value = given.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


def session_ok(token: str) -> bool:
    if session.get("owner") != token_mark(token):
        return False
    opened = session.get("at")
    return isinstance(opened, int | float) and 0 <= time.time() - opened < SESSION_HOURS * 3600


def csrf_token() -> str:
    value = session.get("csrf")
    if not isinstance(value, str):
        value = session["csrf"] = secrets.token_urlsafe(32)
    return value


def csrf_ok() -> bool:
    expected = session.get("csrf")
    given = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token") or ""
    if not isinstance(expected, str) or not hmac.compare_digest(given.encode(), expected.encode()):
        return False
    # Defence in depth: a browser names the page a POST came from; it must be ours.
    origin = request.headers.get("Origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.host:
        return False
    return request.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")


def open_session(token: str) -> None:
    session.clear()
    session["owner"] = token_mark(token)
    session["at"] = int(time.time())
    session["csrf"] = secrets.token_urlsafe(32)


def authorize():
    """before_request: refuse what is not allowed; None lets the request through."""
    token = current_app.config["SLUICE_ADMIN"].settings.admin_token
    if not token:
        return _error(404, "the admin API is disabled: set SLUICE_ADMIN_TOKEN to enable it")
    if request.endpoint in PUBLIC_ENDPOINTS:
        if request.method == "POST" and not csrf_ok():
            return _error(403, "the form expired: reload the page and try again")
        return None
    bearer = bearer_ok(token)
    if bearer:
        return None
    if bearer is None and session_ok(token):
        if request.method not in ("GET", "HEAD", "OPTIONS") and not csrf_ok():
            return _error(403, "missing or wrong CSRF token: reload the page and try again")
        return None
    if bearer is None and _wants_page():
        return redirect(url_for("admin_page.login", next=request.full_path.rstrip("?")))
    response = _error(401, "missing or wrong token: send Authorization: Bearer <SLUICE_ADMIN_TOKEN>")
    response.headers["WWW-Authenticate"] = 'Bearer realm="sluice-admin"'
    return response


def _wants_page() -> bool:
    return request.method == "GET" and request.path.startswith("/admin/ui") or request.path in ("/admin", "/admin/")


def safe_next(target: str | None) -> str:
    """Where to go after logging in: only a path of this service, never another site."""
    if target and target.startswith("/admin/") and not target.startswith("//") and "\\" not in target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc:
            return target
    return url_for("admin_page.overview")


def security_headers(response):
    """after_request: the same strict headers on every answer."""
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
    if request.endpoint != "admin_page.static":
        response.headers["Cache-Control"] = "no-store"
    return response


class LoginThrottle:
    """Wrong tokens per client address in the last minute; past the limit, logins are refused (429)."""

    def __init__(self, per_minute: int = LOGIN_FAILURES_PER_MINUTE, max_addresses: int = 10_000):
        self.per_minute = per_minute
        self.max_addresses = max_addresses
        self.failures: dict[str, deque[float]] = {}
        self.lock = threading.Lock()

    def _recent(self, address: str, now: float) -> deque[float]:
        times = self.failures.setdefault(address, deque())
        while times and now - times[0] > 60:
            times.popleft()
        return times

    def blocked(self, address: str) -> bool:
        with self.lock:
            return len(self._recent(address, time.monotonic())) >= self.per_minute

    def failed(self, address: str) -> None:
        with self.lock:
            if len(self.failures) >= self.max_addresses:
                self.failures.clear()  # bounded memory; a flood only resets the count
            self._recent(address, time.monotonic()).append(time.monotonic())
