"""Headless Debian Chromium for the browser end-to-end tests (Python playwright, never a downloaded
browser): a static site on its own port, what a page did on the network, a guard that keeps every
request on this machine, and the loading snippets as the README prints them."""

from __future__ import annotations

import contextlib
import functools
import http.server
import re
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from tests.conftest import gw_events
from tests.e2e.helpers import E2E_DIR

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REPO = E2E_DIR.parent.parent
DOCS_WITH_SNIPPETS = (REPO / "README.md", REPO / "docs" / "operations.md")
# The placeholders the snippets use, replaced by the test's write key and gateway.
SNIPPET_WRITE_KEY = "WRITE_KEY"
SNIPPET_SLUICE_URL = "https://sluice.example.com"


@contextlib.contextmanager
def chromium():
    """Debian's Chromium, headless, driven by Python playwright (never a browser download)."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian chromium is required (make test-deps installs it)"
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def static_site(root: Path):
    """A tiny static web server for the test page, on its own port (a different origin from the gateway)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def loopback_only(context) -> list[str]:
    """Abort every request of `context` to a host other than 127.0.0.1; returns the list of those refused
    (a test asserts it stays empty: the page needed nothing from a third party). Routed requests wait for
    playwright's event loop, which runs only inside playwright calls: wait with `page_wait_events`."""
    refused: list[str] = []

    def route(r):
        if urlsplit(r.request.url).hostname == "127.0.0.1":
            r.continue_()
        else:
            refused.append(r.request.url)
            r.abort("blockedbyclient")

    context.route("**/*", route)
    return refused


def page_wait_events(page, conn, count: int, timeout: float = 15.0) -> list[dict]:
    """Poll the gateway queue until it holds `count` events, letting the page run (and its routed requests
    go on) between polls; returns them all."""
    deadline = time.monotonic() + timeout
    while True:
        events = gw_events(conn)
        if len(events) >= count:
            return events
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {count} events in gw_jobs "
                                 f"(found {len(events)})")
        page.wait_for_timeout(50)


class PageWatch:
    """Everything the page did on the network and the console that a test may want to assert on."""

    def __init__(self, page, gateway_url: str):
        self.gateway_url = gateway_url
        self.posts: list = []  # playwright Request objects sent to the gateway
        self.responses: list[tuple[str, int]] = []
        self.failed: list[str] = []
        self.http_errors: list[str] = []  # any response >= 400, from any server
        self.console_errors: list[str] = []
        page.on("request", lambda r: self.posts.append(r) if r.url.startswith(gateway_url) else None)
        page.on("response", lambda r: self.responses.append((r.url, r.status)) if r.url.startswith(gateway_url) else None)
        page.on("response", lambda r: self.http_errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        page.on("requestfailed", lambda r: self.failed.append(f"{r.method} {r.url}: {r.failure}"))
        page.on("console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.console_errors.append(str(e)))

    def sent(self) -> dict[str, tuple[dict, dict]]:
        """messageId -> (event body as posted, request headers)."""
        out = {}
        for r in self.posts:
            if r.method != "POST":
                continue
            body = r.post_data_json
            for ev in body.get("batch", [body]):
                out[ev["messageId"]] = (ev | ({"sentAt": body["sentAt"]} if "sentAt" not in ev else {}), r.headers)
        return out


def snippet(name: str, doc: Path = DOCS_WITH_SNIPPETS[0]) -> str:
    """The fenced block after `<!-- snippet: NAME -->` in a doc, exactly as printed there."""
    text = doc.read_text()
    found = re.search(rf"<!-- snippet: {re.escape(name)} -->\n```[a-z]*\n(.*?)```", text, re.S)
    assert found, f"{doc.name} has no snippet {name!r}"
    return found.group(1)


def snippet_page(name: str, write_key: str, sluice_url: str, title: str) -> tuple[str, str]:
    """A test page holding the README's snippet NAME with its placeholders filled in, and the path its
    script tag loads the SDK from."""
    code = snippet(name)
    for doc in DOCS_WITH_SNIPPETS[1:]:
        assert snippet(name, doc) == code, f"{doc.name}'s snippet {name!r} differs from the README's"
    assert SNIPPET_WRITE_KEY in code and SNIPPET_SLUICE_URL in code, code
    [src] = re.findall(r'<script src="([^"]+)"></script>', code)
    code = code.replace(SNIPPET_WRITE_KEY, write_key).replace(SNIPPET_SLUICE_URL, sluice_url)
    page = (f'<!doctype html>\n<html><head><meta charset="utf-8"><link rel="icon" href="data:,">'
            f"<title>{title}</title></head><body>\n{code}</body></html>\n")
    return page, src
