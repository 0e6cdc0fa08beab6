"""Workspace configs for tests: written to real files, in the rudder-server shape."""

from __future__ import annotations

import json
from pathlib import Path

WEB_KEY = "test-web-key"
BACKEND_KEY = "test-backend-key"
DISABLED_KEY = "test-disabled-key"


def destination(dest_id: str, dest_type: str, display: str, config: dict, **extra) -> dict:
    types = extra.pop("message_types", ["track", "identify", "page", "screen", "group", "alias"])
    d = {
        "id": dest_id, "name": f"{display} ({dest_id})", "enabled": True, "isProcessorEnabled": True,
        "config": config, "transformations": [],
        "destinationDefinition": {"id": f"def-{dest_type}", "name": dest_type, "displayName": display,
                                  "config": {"supportedMessageTypes": types}},
    }
    d.update(extra)
    return d


def webhook(dest_id: str, url: str, **extra) -> dict:
    return destination(dest_id, "WEBHOOK", "Webhook", {"webhookUrl": url, "webhookMethod": "POST"}, **extra)


def source(source_id: str, write_key: str, destinations: list[dict] | None = None, enabled: bool = True) -> dict:
    return {"id": source_id, "name": source_id, "writeKey": write_key, "enabled": enabled, "workspaceId": "ws-test",
            "config": {}, "sourceDefinition": {"id": "sd-http", "name": "HTTP", "category": None},
            "destinations": destinations or []}


def basic_workspace(destinations: list[dict] | None = None) -> dict:
    return {"workspaceId": "ws-test", "sources": [
        source("src-web", WEB_KEY, destinations),
        source("src-backend", BACKEND_KEY),
        source("src-disabled", DISABLED_KEY, enabled=False),
    ]}


def write(path: Path, workspace: dict) -> Path:
    path.write_text(json.dumps(workspace, indent=2))
    return path
