"""Sends one delivery request (rudder-transformer's request shape) over HTTP and reports what came back."""

from __future__ import annotations

import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime

import requests
import urllib3

from router.backoff import parse_retry_after
from transformers import json_codec

MAX_BODY_KEPT = 2000
MAX_BODY_READ = 64 * 1024  # bytes of an answer kept in memory (the rest is read and dropped)
_local = threading.local()


@dataclass
class Answer:
    status: int | None         # None: no HTTP answer (timeout, connection error)
    body: str
    retry_after: float | None
    invalid: bool = False      # the stored request itself cannot be sent: retrying will not help


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
    deadline = time.monotonic() + timeout
    resp = _POOL.request(method, url, body=data, headers=headers, redirect=False, retries=False,
                         timeout=urllib3.Timeout(total=timeout), preload_content=False)
    try:
        body = _read_by(resp, deadline)
    except BaseException:
        resp.close()  # never reuse a connection whose answer was not read to the end
        raise
    finally:
        resp.release_conn()
    return resp.status, body.decode("utf-8", "replace"), resp.headers.get("Retry-After")


def _read_by(resp, deadline: float) -> bytes:
    """The response body, read by `deadline` whatever the server's pace: each socket read may wait only
    for the time left (a read timeout alone bounds the gaps between bytes, not the whole body)."""
    chunks, size = [], 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the destination's answer took longer than the timeout")
        sock = getattr(getattr(resp, "connection", None), "sock", None)
        if sock is not None:
            sock.settimeout(left)
        chunk = resp.read1(65536)
        if not chunk:
            return b"".join(chunks)
        if size < MAX_BODY_READ:
            chunks.append(chunk)
        size += len(chunk)


def send(request: dict, overrides: dict[str, str], timeout: float) -> Answer:
    try:
        return _send(request, overrides, timeout)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # UnicodeError is a ValueError
        return Answer(None, f"the request cannot be sent: {type(exc).__name__}: {exc}"[:MAX_BODY_KEPT], None,
                      invalid=True)


def _send(request: dict, overrides: dict[str, str], timeout: float) -> Answer:
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
