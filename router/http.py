"""Sends one delivery request (rudder-transformer's request shape) over HTTP and reports what came back."""

from __future__ import annotations

import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime

import requests
import urllib3

from router.backoff import parse_retry_after
from transformers import json_codec

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


# urllib3 directly (requests' own transport): the requests layer cost about half the router's CPU per
# call. With proxy variables set, requests handles them (HTTPS_PROXY, NO_PROXY) as users expect.
_PROXIES = bool(urllib.request.getproxies())
_POOL = urllib3.PoolManager(num_pools=64, maxsize=32, retries=False)


def _session() -> requests.Session:
    s = getattr(_local, "session", None)
    if s is None:
        s = _local.session = requests.Session()
    return s


def _request(method: str, url: str, params: dict | None, data, headers: dict, timeout: float) -> tuple[int, str, str | None]:
    if _PROXIES:
        resp = _session().request(method, url, params=params, data=data, headers=headers, timeout=timeout,
                                  allow_redirects=False)
        return resp.status_code, resp.text, resp.headers.get("Retry-After")
    if params:
        url += ("&" if urllib.parse.urlsplit(url).query else "?") + urllib.parse.urlencode(params, doseq=True)
    if isinstance(data, dict):
        data = urllib.parse.urlencode(data, doseq=True)
    if isinstance(data, str):
        data = data.encode()
    resp = _POOL.request(method, url, body=data, headers=headers, redirect=False, retries=False,
                         timeout=urllib3.Timeout(total=timeout), preload_content=True)
    return resp.status, resp.data.decode("utf-8", "replace"), resp.headers.get("Retry-After")


def send(request: dict, overrides: dict[str, str], timeout: float) -> Answer:
    method = (request.get("method") or "POST").upper()
    url = apply_overrides(request["endpoint"], overrides)
    headers = dict(request.get("headers") or {})
    body = request.get("body") or {}
    data = None
    if body.get("JSON"):
        data = json_codec.dumps(body["JSON"]).encode()
        headers.setdefault("Content-Type", "application/json")
    elif body.get("JSON_ARRAY"):
        arr = body["JSON_ARRAY"]
        arr = arr.get("batch", arr) if isinstance(arr, dict) else arr
        data = (arr if isinstance(arr, str) else json_codec.dumps(arr)).encode()
        headers.setdefault("Content-Type", "application/json")
    elif body.get("FORM"):
        data = body["FORM"]  # a dict is url-encoded by requests; a string (GA /batch) is sent as is
        headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
    try:
        status, text, retry_after = _request(method, url, request.get("params") or None, data, headers, timeout)
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        return Answer(None, f"{type(exc).__name__}: {exc}"[:MAX_BODY_KEPT], None)
    return Answer(status, text[:MAX_BODY_KEPT], parse_retry_after(retry_after, datetime.now(UTC)))
