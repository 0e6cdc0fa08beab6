"""`sluice up`: embedded Postgres, migrations and every process from one command; SIGTERM stops it all.
More of `sluice up` (restarts, configuration errors, roles) is in tests/ops/test_supervisor.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import psutil
import requests

from tests.support.procs import ROOT, free_port, wait_for
from tests.support.workspace import WEB_KEY, basic_workspace, write


def test_up_runs_everything_and_stops_cleanly(tmp_path):
    port = free_port()
    config = write(tmp_path / "workspace-config.json", basic_workspace())
    env = {**os.environ, "SLUICE_PORT": str(port), "SLUICE_HOST": "127.0.0.1", "SLUICE_CONFIG": str(config),
           "SLUICE_DATA_DIR": str(tmp_path / "data"), "SLUICE_DATABASE_URL": "", "SLUICE_GATEWAY_WORKERS": "1",
           "SLUICE_GATEWAY_THREADS": "4"}
    log = open(tmp_path / "up.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "ops.cli", "up"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        health = wait_for(lambda: requests.get(url + "/health", timeout=2).json(), 90, what="sluice up")
        assert health["db"] == "UP"
        r = requests.post(url + "/v1/track", json={"userId": "u", "event": "Up"}, auth=(WEB_KEY, ""), timeout=10)
        assert r.status_code == 200
        lines = [json.loads(x) for x in (tmp_path / "up.log").read_text().splitlines() if x.startswith("{")]
        messages = {x["msg"] for x in lines}
        assert {"embedded Postgres running", "database ready", "sluice is up"} <= messages
        roles = {x.get("role") for x in lines if x["msg"] == "started"}
        assert {"postgres", "gateway", "processor", "router"} <= roles
        # The embedded Postgres asks for a password; `sluice up` hands it to its children, never to its logs.
        password = (tmp_path / "data" / "postgres.password").read_text().strip()
        [running] = [x for x in lines if x["msg"] == "embedded Postgres running"]
        assert running["dsn"].startswith("postgresql://postgres:***@127.0.0.1:")
        assert password not in (tmp_path / "up.log").read_text()
        # One scrape of the gateway shows every process's samples: the processor's count of this event.
        wait_for(lambda: 'sluice_processor_events_total{outcome="jobs"} 1.0' in
                 requests.get(url + "/metrics", timeout=5).text, 30, what="the processor's metrics via the gateway")
        children = psutil.Process(proc.pid).children(recursive=True)
        pg_pid = int((tmp_path / "data" / "pgdata" / "postmaster.pid").read_text().split()[0])
        out = subprocess.run([sys.executable, "-m", "ops.cli", "jobs", "--json"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        assert sum(report["queues"]["gw"]["states"].values()) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        log.close()
    assert code == 0
    gone = [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert gone == [], f"processes left running: {gone}"
    def stopped(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # exited, not yet reaped by init
        except psutil.NoSuchProcess:
            return True

    assert stopped(pg_pid), "embedded Postgres was stopped"
    assert "sluice stopped" in (tmp_path / "up.log").read_text()
