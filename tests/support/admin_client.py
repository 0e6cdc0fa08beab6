"""What an open admin page asks of `sluice admin`, without a browser: the overview reloaded every 10 s
(what the page's auto-refresh does), the live tail's Server-Sent Events read as they come, and the
service's own count of the statements it ran (/admin/api/stats). Used by bench/pipeline.py --admin-page
and by the long-run test."""

from __future__ import annotations

import contextlib
import json
import threading
import time

import requests

OVERVIEW_EVERY = 10.0


class OpenPage:
    def __init__(self, url: str, token: str, overview_every: float = OVERVIEW_EVERY,
                 parts: tuple[str, ...] = ("overview", "live")):
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.stop = threading.Event()
        self.items = 0
        self.sampled = 0
        self.overviews = 0
        self.errors: list[str] = []
        self.overview_every = overview_every
        self._threads = [threading.Thread(target=self._overview, daemon=True)] if "overview" in parts else []
        if "live" in parts:
            self._threads.append(threading.Thread(target=self._tail, daemon=True))

    def stats(self) -> dict:
        return self.session.get(self.url + "/admin/api/stats", timeout=10).json()

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def close(self) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(15)

    def _overview(self) -> None:
        while not self.stop.is_set():
            try:
                r = self.session.get(self.url + "/admin/ui/overview", timeout=30)
                if r.ok:
                    self.overviews += 1
                else:
                    self.errors.append(f"overview: HTTP {r.status_code}")
            except requests.RequestException as exc:
                self.errors.append(f"overview: {exc}")
            self.stop.wait(self.overview_every)

    def _tail(self) -> None:
        """One EventSource: reconnect when the stream ends, as a browser would."""
        while not self.stop.is_set():
            try:
                with self.session.get(self.url + "/admin/api/live", stream=True, timeout=(5, 30)) as r:
                    if not r.ok:
                        self.errors.append(f"live: HTTP {r.status_code}")
                        self.stop.wait(1)
                        continue
                    event = ""
                    for line in r.iter_lines(decode_unicode=True):
                        if self.stop.is_set():
                            break
                        if line.startswith("event: "):
                            event = line[7:]
                        elif line.startswith("data: "):
                            if event == "item":
                                self.items += 1
                            elif event == "sampled":
                                with contextlib.suppress(ValueError, AttributeError):
                                    info = json.loads(line[6:])
                                    self.sampled += int(info.get("dropped", 0)) + int(info.get("skipped", 0))
            except requests.RequestException as exc:
                self.errors.append(f"live: {exc}")
                self.stop.wait(1)


@contextlib.contextmanager
def open_page(url: str, token: str, deadline: float = 30, **options):
    page = OpenPage(url, token, **options)
    end = time.monotonic() + deadline
    while True:
        try:
            page.stats()
            break
        except (requests.RequestException, ValueError):
            if time.monotonic() > end:
                raise
            time.sleep(0.2)
    page.start()
    try:
        yield page
    finally:
        page.close()
