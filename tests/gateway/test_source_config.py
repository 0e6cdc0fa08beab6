"""What browser SDKs fetch before they send events (gateway.sdk_config), through the Flask app without a
server or a database: RudderStack's source config and analytics.js' CDN settings, their keys, their
CORS, that they show no secret, and that the URLs in them come from `public_url`, never from the request.
Last, `sluice gateway` refusing to start on a public_url or trusted_proxies it cannot use."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import pytest

from config.settings import SettingsError, load_settings
from config.workspace import load_workspace
from gateway.app import create_app
from gateway.sdk_config import resolve_public_url
from tests.gateway.test_handlers import FakeCommitter
from tests.support.procs import ROOT
from tests.support.workspace import DISABLED_KEY, WEB_KEY, basic_workspace, destination, webhook, write

SECRETS = ("s3cr3t-ga4-api-secret", "s3cr3t-amplitude-key", "s3cr3t-webhook-token", "hooks.internal.example")
SDK_QUERY = "p=npm&v=3.34.1&build=modern&lockIntegrationsVersion=false&lockPluginsVersion=false"


def secret_workspace() -> dict:
    """The web source with destinations whose configs hold secrets (an API secret, a key, a header, a URL)."""
    hook = webhook("d-hook", f"https://{SECRETS[3]}/in")
    hook["config"]["headers"] = [{"from": "Authorization", "to": SECRETS[2]}]
    return basic_workspace([
        destination("d-ga4", "GA4", "Google Analytics 4",
                    {"measurementId": "G-TEST1", "apiSecret": SECRETS[0], "typesOfClient": "gtag"}),
        destination("d-amp", "AM", "Amplitude", {"apiKey": SECRETS[1]}),
        hook,
    ])


def make_app(tmp_path, **settings):
    class Holder:
        current = load_workspace(write(tmp_path / "workspace.json", secret_workspace()))

    web = Holder.current.source_by_write_key(WEB_KEY)
    loaded = json.dumps([d.config for d in web.destinations])
    assert all(secret in loaded for secret in SECRETS)  # the secrets really are in the workspace
    return create_app(load_settings({"database_url": "postgresql://nowhere/none", **settings}, env={}),
                      Holder(), FakeCommitter())


@pytest.fixture
def client(tmp_path):
    return make_app(tmp_path).test_client()


def basic(key: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


@pytest.mark.parametrize("path", ["/sourceConfig/", "/sourceConfig"])
def test_source_config_in_the_shape_the_rudderstack_sdks_read(client, path):
    resp = client.get(f"{path}?{SDK_QUERY}&writeKey={WEB_KEY}")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.mimetype == "application/json"
    source = resp.get_json()["source"]
    # v3 refuses a config without source.id, an object source.config and an array source.destinations;
    # v1.1 reads source.config and source.destinations.
    assert source == {"id": "src-web", "name": "src-web", "writeKey": WEB_KEY, "enabled": True,
                      "workspaceId": "ws-test", "config": source["config"], "destinations": []}
    assert source["config"]["statsCollection"] == {"errors": {"enabled": False}, "metrics": {"enabled": False}}


def test_source_config_key_as_basic_auth_user(client):
    resp = client.get(f"/sourceConfig/?{SDK_QUERY}", headers=basic(WEB_KEY))
    assert resp.status_code == 200 and resp.get_json()["source"]["writeKey"] == WEB_KEY


def test_source_config_never_shows_a_secret(client):
    text = client.get(f"/sourceConfig/?writeKey={WEB_KEY}").get_data(as_text=True)
    for secret in SECRETS:
        assert secret not in text
    assert "d-ga4" not in text and "apiSecret" not in text


@pytest.mark.parametrize("query, headers, status, code", [
    ("writeKey=nope", {}, 401, "invalid_write_key"),
    ("", {}, 401, "no_write_key"),
    ("", basic("nope"), 401, "invalid_write_key"),
    (f"writeKey={DISABLED_KEY}", {}, 404, "source_disabled"),
])
def test_source_config_refusals_are_like_the_rest_of_the_gateway(client, query, headers, status, code):
    resp = client.get(f"/sourceConfig/?{query}", headers=headers)
    assert resp.status_code == status
    assert resp.get_json()["code"] == code


def test_source_config_cors(client):
    origin = "http://shop.example"
    pre = client.options("/sourceConfig/?writeKey=x", headers={
        "Origin": origin, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization"})
    assert pre.status_code == 204
    assert pre.headers["Access-Control-Allow-Origin"] == origin
    assert pre.headers["Access-Control-Allow-Headers"] == "authorization"
    assert "GET" in pre.headers["Access-Control-Allow-Methods"]
    resp = client.get(f"/sourceConfig/?writeKey={WEB_KEY}", headers={"Origin": origin})
    assert resp.headers["Access-Control-Allow-Origin"] == origin
    refused = client.get("/sourceConfig/?writeKey=nope", headers={"Origin": origin})
    assert refused.status_code == 401 and refused.headers["Access-Control-Allow-Origin"] == origin


def cdn_integration(app, host_header: str) -> dict:
    resp = app.test_client().get(f"/v1/projects/{WEB_KEY}/settings",
                                 headers={"Host": host_header, "X-Forwarded-Host": "evil.example",
                                          "X-Forwarded-Proto": "https"})
    assert resp.status_code == 200
    return json.loads(resp.get_data())["integrations"]["Segment.io"]


def test_cdn_settings_api_host_is_public_url_not_the_host_header(tmp_path):
    app = make_app(tmp_path, public_url="https://collect.example.com/sluice/")
    seg = cdn_integration(app, "<script>.evil.example")
    assert seg == {"apiKey": WEB_KEY, "apiHost": "collect.example.com/sluice/v1", "protocol": "https"}


def test_cdn_settings_default_public_url_from_host_and_port(tmp_path):
    app = make_app(tmp_path, host="0.0.0.0", port=9090)
    assert cdn_integration(app, "evil.example:1") == {"apiKey": WEB_KEY, "apiHost": "127.0.0.1:9090/v1",
                                                      "protocol": "http"}


@pytest.mark.parametrize("settings, url", [
    ({}, "http://127.0.0.1:8080"),
    ({"host": "0.0.0.0", "port": 8080}, "http://127.0.0.1:8080"),
    ({"host": "::"}, "http://127.0.0.1:8080"),
    ({"host": "10.1.2.3", "port": 81}, "http://10.1.2.3:81"),
    ({"host": "::1"}, "http://[::1]:8080"),
    ({"public_url": "https://collect.example.com/"}, "https://collect.example.com"),
    ({"public_url": " http://[2001:db8::1]:8443/cdp "}, "http://[2001:db8::1]:8443/cdp"),
])
def test_public_url(settings, url):
    assert resolve_public_url(load_settings(settings, env={})) == url


@pytest.mark.parametrize("bad", ["collect.example.com", "ftp://collect.example.com", "https://", "http://h:port",
                                 "https://user:pw@collect.example.com", "https://collect.example.com/?x=1"])
def test_bad_public_url_stops_the_start(tmp_path, bad):
    with pytest.raises(SettingsError, match="SLUICE_PUBLIC_URL"):
        make_app(tmp_path, public_url=bad)


def test_bad_trusted_proxies_stop_the_start(tmp_path):
    with pytest.raises(SettingsError, match="SLUICE_TRUSTED_PROXIES.*'10.0.0.0/33'"):
        make_app(tmp_path, trusted_proxies="127.0.0.0/8, 10.0.0.0/33")


@pytest.mark.parametrize("setting, value", [("SLUICE_PUBLIC_URL", "collect.example.com"),
                                            ("SLUICE_TRUSTED_PROXIES", "10.0.0.0/8,proxy.example")])
def test_sluice_gateway_with_a_bad_setting_exits_78_with_one_json_line(dsn, workspace_file, setting, value):
    env = {**os.environ, "SLUICE_DATABASE_URL": dsn, "SLUICE_HOST": "127.0.0.1", "SLUICE_PORT": "0",
           "SLUICE_CONFIG": str(workspace_file), "SLUICE_GATEWAY_WORKERS": "1", setting: value}
    proc = subprocess.run([sys.executable, "-m", "ops.cli", "gateway"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 78, (proc.returncode, lines)
    assert len(lines) == 1, lines
    line = json.loads(lines[0])
    assert line["level"] == "error" and setting in line["msg"] and value.split(",")[-1] in line["msg"], line
