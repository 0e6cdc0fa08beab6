"""What the admin page never shows: destination API keys, passwords and tokens, wherever they appear
(a config, a delivery request's body, headers or URL, a destination's answer, an error message).

Two nets: values under a key whose name says secret (apiKey, api_secret, password, Authorization ...)
are hidden whole; and every secret value found in the workspace config is cut out of any text it
appears in (a key inside a URL, an answer that echoes it). Write keys are hidden too.
"""

from __future__ import annotations

import functools
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

HIDDEN = "••••••"
# Key names whose values are secrets. Compared with non-letters removed and lower-cased: api_key, apiKey,
# API-KEY, x-api-key, apiSecret, client_secret, password, passwd, authorization, token, accessToken ...
_SECRET_NAME = re.compile(r"(apikey|secret|passw|pwd|token|authorization|auth$|credential|privatekey|"
                          r"writekey|accesskey|signingkey|sessionkey|cookie|dsn$|connectionstring)")
MIN_SECRET_LENGTH = 4  # shorter config values are not searched for in text (too many false hits)


_NOT_LETTER = re.compile(r"[^a-z]")


def secret_name(name: object) -> bool:
    return isinstance(name, str) and _secret_name(name)


@functools.lru_cache(maxsize=4096)  # the same few key names in every event; bounded whatever events hold
def _secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(_NOT_LETTER.sub("", name.lower())))


def _secret_values(value: Any, under_secret: bool, out: set[str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _secret_values(v, under_secret or secret_name(k), out)
        # RudderStack's webhook headers: [{"from": "Authorization", "to": "Bearer ..."}]
        name = value.get("from") if isinstance(value.get("from"), str) else value.get("key")
        if isinstance(name, str) and secret_name(name):
            for k in ("to", "value"):
                if isinstance(value.get(k), str):
                    out.add(value[k])
    elif isinstance(value, list):
        for v in value:
            _secret_values(v, under_secret, out)
    elif isinstance(value, str) and under_secret:
        out.add(value)
        if " " in value:  # "Bearer abc", "Basic abc": the credential alone may appear elsewhere
            out.add(value.split(" ", 1)[1])


class Masker:
    """Hides secrets in anything shown. Built from the workspace config (or None: key names only)."""

    def __init__(self, workspace=None):
        found: set[str] = set()
        if workspace is not None:
            for source in workspace.sources:
                if source.write_key:
                    found.add(source.write_key)
                for dest in source.destinations:
                    _secret_values(dest.config, False, found)
                    for url in _urls(dest.config):
                        found |= _url_secrets(url)
        self.values = sorted((v for v in found if len(v) >= MIN_SECRET_LENGTH), key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in self.values)) if self.values else None

    def text(self, value: str | None) -> str | None:
        """A string with every known secret value cut out, and secrets in URLs hidden."""
        if not isinstance(value, str) or not value:
            return value
        if self._pattern is not None:
            value = self._pattern.sub(HIDDEN, value)
        if "://" in value and len(value) < 8192:
            value = _URL.sub(lambda m: mask_url(m.group(0)), value)
        return value

    def __call__(self, value: Any) -> Any:
        """A copy of a JSON-like value with secrets hidden (the value itself is not changed)."""
        return self._walk(value, False)

    def _walk(self, value: Any, under_secret: bool) -> Any:
        if isinstance(value, dict):
            header_name = value.get("from") if isinstance(value.get("from"), str) else value.get("key")
            hide_pair = isinstance(header_name, str) and secret_name(header_name)
            out = {}
            for k, v in value.items():
                if hide_pair and k in ("to", "value"):
                    out[k] = HIDDEN
                else:
                    out[k] = self._walk(v, under_secret or secret_name(k))
            return out
        if isinstance(value, list):
            return [self._walk(v, under_secret) for v in value]
        if isinstance(value, str):
            return HIDDEN if under_secret and value else self.text(value)
        if under_secret and isinstance(value, int | float) and not isinstance(value, bool):
            return HIDDEN
        return value


_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"'<>]+")


def mask_url(url: str) -> str:
    """A URL with its password and secret-named query values hidden."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{HIDDEN}@{host}" if ":" in userinfo else netloc
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(secret_name(k) for k, _ in pairs):
            query = urlencode([(k, HIDDEN if secret_name(k) else v) for k, v in pairs], safe="•")
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _urls(config: Any) -> list[str]:
    out: list[str] = []
    if isinstance(config, dict):
        for v in config.values():
            out += _urls(v)
    elif isinstance(config, list):
        for v in config:
            out += _urls(v)
    elif isinstance(config, str) and "://" in config:
        out.append(config)
    return out


def _url_secrets(url: str) -> set[str]:
    found: set[str] = set()
    try:
        parts = urlsplit(url)
    except ValueError:
        return found
    if parts.password:
        found.add(parts.password)
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        if secret_name(k) and v:
            found.add(v)
    return found
