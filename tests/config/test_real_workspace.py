"""A workspace file in the shape rudder-server's own test data has (every field a real export carries),
with a webhook, a KAFKA and a POSTGRES destination. It loads; `config check` names what will not work;
the webhook delivers, the warehouse loads, and KAFKA's events wait in failed_jobs with the reason.
A destination with a bad config is off on its own: the rest of the workspace keeps working."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from config.workspace import main_check
from tests.router.test_warehouse import Pipeline, Warehouse
from tests.support.fake_destination import FakeDestination
from tests.support.procs import wait_for

DATA = Path(__file__).with_name("data") / "rudder-server-workspace.json"
KEY = "real-workspace-write-key"


def workspace(fake_url: str, wh: Warehouse, webhook_url: str | None = None) -> dict:
    doc = json.loads(DATA.read_text())
    source = doc["sources"][0]
    source["writeKey"] = KEY
    hook, _kafka, pg = source["destinations"]
    hook["config"]["webhookUrl"] = webhook_url or fake_url + "/hook"
    pg["config"].update(host=wh.host, port=str(wh.port), database=wh.name, user=wh.user, password=wh.password)
    return doc


@pytest.fixture
def warehouse(pg_server):
    wh = Warehouse(pg_server.admin_dsn).create()
    yield wh
    wh.drop()


def events(n: int) -> list[dict]:
    return [{"type": "track", "event": "Signed Up", "userId": f"u{i}", "anonymousId": f"a{i}", "messageId": f"m{i}",
             "properties": {"plan": "pro"}} for i in range(n)]


def test_a_real_workspace_loads_and_each_destination_does_what_it_can(dsn, tmp_path, warehouse, capsys):
    with FakeDestination() as fake:
        doc = workspace(fake.url, warehouse)
        path = tmp_path / "workspace-config.json"
        path.write_text(json.dumps(doc))
        assert main_check(path) == 0
        out = capsys.readouterr().out
        assert "warning: $.sources[0].destinations[1].destinationDefinition: destination type KAFKA is not supported" \
            in out
        assert "1 off: their events go to failed_jobs until fixed" in out
        p = Pipeline(dsn, tmp_path, doc, warehouse_sync_seconds=0.5)
        try:
            p.send(events(3), write_key=KEY)
            wait_for(lambda: len(fake.delivered) == 3, 30, what="the webhook deliveries")
            assert fake.delivered[0].headers["x-team"] == "growth"
            wait_for(p.settled, 60, what="every queue settled")
            assert warehouse.sql("SELECT count(*) FROM website.signed_up") == [(3,)]
            dead = p.queue("SELECT destination_id, stage, reason FROM failed_jobs ORDER BY id")
            assert [d[0] for d in dead] == ["2Ab3cD4eF5gH6iJ7kL8mDSTKAFKA"] * 3
            assert all(d[1] == "destination_config" and "destination type KAFKA is not supported" in d[2]
                       and "replay" in d[2] for d in dead)
        finally:
            p.stop()


def test_a_destination_with_a_bad_config_is_off_alone(dsn, tmp_path, warehouse):
    with FakeDestination() as fake:
        doc = workspace(fake.url, warehouse, webhook_url="hooks.example.test/in")  # no scheme
        p = Pipeline(dsn, tmp_path, doc, warehouse_sync_seconds=0.5)
        try:
            p.send(events(2), write_key=KEY)
            wait_for(p.settled, 60, what="every queue settled")
            assert warehouse.sql("SELECT count(*) FROM website.signed_up") == [(2,)], "the warehouse still loads"
            assert fake.received == []
            reasons = [r[0] for r in p.queue("SELECT reason FROM failed_jobs WHERE destination_id = "
                                             "'2Ab3cD4eF5gH6iJ7kL8mDSTHOOK'")]
            assert len(reasons) == 2
            assert all("config.webhookUrl: expected an http:// or https:// URL" in r for r in reasons)
            assert "warning: $.sources[0].destinations[0].config.webhookUrl" in p.processor.output()
        finally:
            p.stop()
