"""A local HTTP server standing in for GA4, Amplitude or a webhook: records every request and answers
what the test scripts (200, 400, 429 with Retry-After, 500, or hang)."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    method: str
    path: str
    query: dict
    headers: dict
    body: bytes
    at: float = field(default_factory=time.monotonic)

    def json(self):
        return json.loads(self.body)

    def form(self) -> dict:
        return {k: v[0] for k, v in urllib.parse.parse_qs(self.body.decode()).items()}


@dataclass
class Reply:
    status: int = 200
    body: str = '{"code":200}'
    headers: dict = field(default_factory=dict)
    hang: float = 0.0  # seconds to stall before answering (longer than the router timeout = a hang)


class FakeDestination:
    def __init__(self):
        self.received: list[Received] = []
        self.delivered: list[Received] = []  # requests answered 2xx
        self.lock = threading.Lock()
        self.responder: Callable[[Received], Reply] = lambda r: Reply()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeDestination:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def respond(self, responder: Callable[[Received], Reply]) -> None:
        self.responder = responder

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: avoid the 40 ms delayed-ACK stall

            def log_message(self, *args):  # quiet
                pass

            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parsed = urllib.parse.urlsplit(self.path)
                rec = Received(self.command, parsed.path, dict(urllib.parse.parse_qsl(parsed.query)),
                               {k.lower(): v for k, v in self.headers.items()}, body)
                with fake.lock:
                    fake.received.append(rec)
                reply = fake.responder(rec)
                if reply.hang:
                    time.sleep(reply.hang)
                if 200 <= reply.status < 300:
                    with fake.lock:
                        fake.delivered.append(rec)
                data = reply.body.encode()
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        return Handler
