"""`sluice up` starts the admin API only when SLUICE_ADMIN_TOKEN is set."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import requests

from config.settings import SettingsError, load_settings
from ops.cli import up_roles
from tests.support.procs import ROOT, free_port, wait_for
from tests.support.workspace import basic_workspace, write


def test_admin_is_a_role_only_with_a_token():
    assert up_roles(load_settings(env={})) == ("gateway", "processor", "router")
    assert up_roles(load_settings(env={"SLUICE_ADMIN_TOKEN": "t"})) == ("gateway", "processor", "router", "admin")
    assert up_roles(load_settings(env={"SLUICE_ADMIN_TOKEN": "t", "SLUICE_ROLES": "router"})) == ("router", "admin")
    with pytest.raises(SettingsError, match="SLUICE_ADMIN_TOKEN"):
        up_roles(load_settings(env={"SLUICE_ROLES": "gateway,admin"}))


def test_roles_are_checked():
    assert up_roles(load_settings(env={"SLUICE_ROLES": " Processor , gateway "})) == ("gateway", "processor")
    with pytest.raises(SettingsError, match="unknown role 'gatway'"):
        up_roles(load_settings(env={"SLUICE_ROLES": "gatway,router"}))
    with pytest.raises(SettingsError, match="no role"):
        up_roles(load_settings(env={"SLUICE_ROLES": ","}))
    with pytest.raises(SettingsError, match="SLUICE_ROUTERS must be at least 1"):
        up_roles(load_settings(env={"SLUICE_ROUTERS": "0"}))
    assert up_roles(load_settings(env={"SLUICE_ROUTERS": "0", "SLUICE_ROLES": "gateway"})) == ("gateway",)


def test_up_serves_the_admin_api_with_a_token(dsn, tmp_path):
    port, admin_port = free_port(), free_port()
    config = write(tmp_path / "workspace-config.json", basic_workspace())
    env = {**os.environ, "SLUICE_PORT": str(port), "SLUICE_HOST": "127.0.0.1", "SLUICE_CONFIG": str(config),
           "SLUICE_DATABASE_URL": dsn, "SLUICE_GATEWAY_WORKERS": "1", "SLUICE_GATEWAY_THREADS": "4",
           "SLUICE_ADMIN_TOKEN": "up-token", "SLUICE_ADMIN_PORT": str(admin_port)}
    with open(tmp_path / "up.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "ops.cli", "up"], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            url = f"http://127.0.0.1:{admin_port}/admin/jobs"
            report = wait_for(lambda: requests.get(url, headers={"Authorization": "Bearer up-token"},
                                                   timeout=2).json(), 60, what="the admin API under sluice up")
            assert set(report["queues"]) == {"gw", "rt", "batch_rt"}
            assert requests.get(url, timeout=5).status_code == 401
            # "sluice is up" waits for the gateway to listen, which may come after the admin API.
            wait_for(lambda: '"sluice is up"' in (tmp_path / "up.log").read_text(), 60, what="sluice is up")
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(60)
    assert code == 0
    lines = [json.loads(x) for x in (tmp_path / "up.log").read_text().splitlines() if x.startswith("{")]
    assert "admin" in {x.get("role") for x in lines if x["msg"] == "started"}
    up = next(x for x in lines if x["msg"] == "sluice is up")
    assert up["admin"] == f"http://127.0.0.1:{admin_port}/admin/"
