"""The README's first event, sent exactly as its curl command sends it, to the example workspace: every
destination of the source is delivered (their endpoints redirected to a local stand-in), none dead-letters.
Also: `config check` on the example is clean, so its supportedMessageTypes match what each transformer takes."""

from __future__ import annotations

import json
import re
import shlex
import shutil

import psycopg2

from config.workspace import check_workspace, load_workspace
from tests.conftest import start_gateway
from tests.support.fake_destination import FakeDestination
from tests.support.procs import ROOT, SluiceProcess, wait_for


def readme_curl() -> tuple[str, str, dict]:
    """(write key, path, body) of the README's first curl command."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(curl .*?)\n[^\n]*sluice jobs", text, re.S).group(1)
    args = shlex.split(block.replace("\\\n", " "))
    key = args[args.index("-u") + 1].rstrip(":")
    body = json.loads(args[args.index("-d") + 1])
    path = "/" + args[-1].split("/", 3)[3]
    return key, path, body


def test_the_readme_first_event_reaches_every_destination(dsn, tmp_path):
    assert [p for p in check_workspace(ROOT / "workspace-config.json")] == []
    config = tmp_path / "workspace-config.json"
    shutil.copy(ROOT / "workspace-config.json", config)
    shutil.copytree(ROOT / "transformations", tmp_path / "transformations")
    key, path, body = readme_curl()
    source = load_workspace(config).source_by_write_key(key)
    assert source is not None, "the README's write key is the example's"
    with FakeDestination() as fake:
        text = config.read_text()
        for url in {d.config.get("webhookUrl") for d in source.destinations if d.config.get("webhookUrl")}:
            text = text.replace(url, fake.url + "/webhook")
        config.write_text(text)
        overrides = json.dumps({"https://www.google-analytics.com": fake.url + "/ga4",
                                "https://api2.amplitude.com": fake.url + "/amplitude"})
        env = {"SLUICE_DATABASE_URL": dsn, "SLUICE_CONFIG": str(config), "SLUICE_ENDPOINT_OVERRIDES": overrides,
               "SLUICE_LEASE_SECONDS": "6", "SLUICE_ROUTER_TIMEOUT": "2"}
        gateway = start_gateway(dsn, config, tmp_path)
        procs = [SluiceProcess(role, env, tmp_path) for role in ("processor", "router")]
        try:
            r = gateway.post(path, body, write_key=key)
            assert r.status_code == 200, r.text
            wait_for(lambda: {req.path.split("/")[1] for req in fake.delivered} == {"ga4", "amplitude", "webhook"},
                     60, what="the event at every destination")
            with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
                cur.execute("SELECT destination_id, reason FROM failed_jobs")
                assert cur.fetchall() == []
        finally:
            for p in procs:
                p.stop()
            gateway.proc.stop()
    ga4 = next(req for req in fake.delivered if req.path.startswith("/ga4"))
    assert ga4.json()["events"][0]["params"]["routed_by"] == "sluice", "the example transformation ran"
