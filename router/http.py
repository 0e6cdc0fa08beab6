"""Sends one delivery request (rudder-transformer's request shape) over HTTP and reports what came back."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

import requests

from router.backoff import parse_retry_after

MAX_BODY_KEPT = 2000
_local = threading.local()


@dataclass
class Answer:
    status: int | None         # None: no HTTP answer (timeout, connection error)
    body: str
    retry_after: float | None


def apply_overrides(url: str, overrides: dict[str, str]) -> str:
    """SLUICE_ENDPOINT_OVERRIDES: the longest matching prefix is replaced (tests, proxies)."""
    best = max((p for p in overrides if url.startswith(p)), key=len, default=None)
    return url if best is None else overrides[best] + url[len(best):]


def _session() -> requests.Session:
    s = getattr(_local, "session", None)
    if s is None:
        s = _local.session = requests.Session()
    return s


def send(request: dict, overrides: dict[str, str], timeout: float) -> Answer:
    method = (request.get("method") or "POST").upper()
    url = apply_overrides(request["endpoint"], overrides)
    headers = dict(request.get("headers") or {})
    body = request.get("body") or {}
    data = None
    if body.get("JSON"):
        data = json.dumps(body["JSON"], separators=(",", ":"), ensure_ascii=False).encode()
        headers.setdefault("Content-Type", "application/json")
    elif body.get("JSON_ARRAY"):
        arr = body["JSON_ARRAY"]
        arr = arr.get("batch", arr) if isinstance(arr, dict) else arr
        data = (arr if isinstance(arr, str) else json.dumps(arr, separators=(",", ":"), ensure_ascii=False)).encode()
        headers.setdefault("Content-Type", "application/json")
    elif body.get("FORM"):
        data = body["FORM"]  # a dict is url-encoded by requests; a string (GA /batch) is sent as is
        headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
    try:
        resp = _session().request(method, url, params=request.get("params") or None, data=data, headers=headers,
                                  timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        return Answer(None, f"{type(exc).__name__}: {exc}"[:MAX_BODY_KEPT], None)
    return Answer(resp.status_code, resp.text[:MAX_BODY_KEPT],
                  parse_retry_after(resp.headers.get("Retry-After"), datetime.now(UTC)))
