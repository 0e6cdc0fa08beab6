"""What a gateway worker's handlers share: its state (in `app.extensions["sluice"]`) and how a handler
refuses a whole request."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Response, current_app

from config.settings import Settings
from gateway import offload


@dataclass
class GatewayState:
    settings: Settings
    workspace: Any  # an object with a `.current` Workspace (a WorkspaceWatcher, or a fixed holder in tests)
    committer: Any  # gateway.group_commit.GroupCommitter
    rejections: Any  # gateway.rejections.RejectionLog
    health: Any  # gateway.health.HealthCheck
    limiter: Any  # gateway.rate_limit.SharedRateLimiter, or None when rate limiting is off
    offload: Callable | None  # where blocking database calls run (gevent workers: a native thread), or None
    public_url: str = ""  # where browsers reach the gateway (gateway.sdk_config.resolve_public_url)
    trusted_proxies: tuple = ()  # networks whose X-Forwarded-For is believed (gateway.client_ip)

    def blocking(self, fn, *args):
        return offload.call(self.offload, fn, *args)

    def close(self) -> None:
        """On a clean worker stop: commit what is queued, remove the heartbeat, close connections."""
        self.committer.stop()
        self.health.close()
        if self.limiter is not None:
            self.limiter.close()


def state() -> GatewayState:
    return current_app.extensions["sluice"]


class Reject(Exception):
    """A request refused as a whole: answered as JSON {code, message} with this status."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def error_response(status: int, code: str, message: str, headers: dict | None = None) -> Response:
    body = json.dumps({"code": code, "message": message})
    return Response(body, status=status, mimetype="application/json", headers=headers)
