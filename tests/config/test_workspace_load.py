"""The example workspace file and the two file shapes Sluice reads."""

import json
from pathlib import Path

from config.workspace import load_workspace

ROOT = Path(__file__).resolve().parents[2]


def test_example_workspace_loads():
    ws = load_workspace(ROOT / "workspace-config.json")
    assert ws.workspace_id == "ws-example"
    web = ws.source_by_write_key("web-write-key-0001")
    backend = ws.source_by_write_key("backend-write-key-0001")
    assert web is not None and backend is not None
    assert web.name == "Web" and backend.name == "Backend"
    assert web.enabled and backend.enabled
    for source in (web, backend):
        assert sorted(d.type for d in source.destinations) == ["AM", "GA4", "WEBHOOK"]
    assert ws.source_by_write_key("nope") is None
    assert ws.source_by_id("src-backend") is backend
    src, ga4 = ws.destination_by_id("dst-web-ga4")
    assert src is web
    assert ga4.display_name == "Google Analytics 4"
    assert ga4.supported_message_types == ("identify", "track", "page", "group")
    assert ga4.transformation is not None and "routed_by" in ga4.transformation.code
    assert ga4.transformation.version_id == "trv-web-ga4-enrich-1"
    _, am = ws.destination_by_id("dst-backend-amplitude")
    assert am.transformation is not None and am.transformation.id == "tr-backend-amplitude-plan"
    _, hook = ws.destination_by_id("dst-web-webhook")
    assert hook.config["webhookUrl"] == "http://127.0.0.1:8099/hook"
    assert not hook.is_warehouse and hook.is_processor_enabled
    assert len(ws.fingerprint) == 64
    assert ws.destination_by_id("nope") is None
