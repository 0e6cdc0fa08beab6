"""The workspace file changed under a running gateway: good edits apply, broken ones are rejected."""

from __future__ import annotations

import json

from tests.conftest import gw_events
from tests.support import workspace as ws
from tests.support.procs import wait_for

NEW_KEY = "test-new-key"


def test_broken_edit_keeps_last_good_config_and_a_fixed_edit_applies(gateway, workspace_file, db):
    assert gateway.post("/v1/track", {"userId": "u1", "event": "Before"}).status_code == 200

    # A broken edit: invalid JSON. The running gateway must keep serving the last good config.
    workspace_file.write_text('{"sources": [ {"id": "src-web", "writeKey": ')
    wait_for(lambda: "invalid JSON" in gateway.proc.output() or "expected" in gateway.proc.output(), 10,
             what="the gateway to log the rejected config")
    assert gateway.post("/v1/track", {"userId": "u1", "event": "During"}).status_code == 200

    # A second broken edit that is valid JSON but wrong: a source without a writeKey.
    bad = ws.basic_workspace()
    del bad["sources"][0]["writeKey"]
    workspace_file.write_text(json.dumps(bad))
    assert gateway.post("/v1/track", {"userId": "u1", "event": "Still"}).status_code == 200

    # A good edit adds a source: its key starts working without a restart.
    good = ws.basic_workspace()
    good["sources"].append(ws.source("src-new", NEW_KEY))
    workspace_file.write_text(json.dumps(good))
    wait_for(lambda: gateway.post("/v1/track", {"userId": "u2", "event": "New"}, write_key=NEW_KEY).status_code
             == 200, 10, what="the new write key to be accepted")
    names = [(e["event"], e["_source_id"]) for e in gw_events(db)]
    assert names[:3] == [("Before", "src-web"), ("During", "src-web"), ("Still", "src-web")]
    assert ("New", "src-new") in names

    # Disabling a source takes effect too: 404 from then on.
    good["sources"][0]["enabled"] = False
    workspace_file.write_text(json.dumps(good))
    wait_for(lambda: gateway.post("/v1/track", {"userId": "u1", "event": "Off"}).status_code == 404, 10,
             what="the disabled source to answer 404")
