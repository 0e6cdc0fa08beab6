"""`sluice up` as a supervisor, with real processes: a role that keeps dying is restarted while the gateway
keeps accepting, a killed embedded Postgres comes back, configuration errors stop it with a non-zero exit,
and any subset of roles runs, with several processors and routers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import psutil
import psycopg2
import pytest
import requests

from jobsdb.embedded import EmbeddedPostgres
from ops.supervisor import Backoff, error_of
from tests.support.procs import ROOT, free_port, wait_for
from tests.support.workspace import WEB_KEY, basic_workspace, write

# `sluice up` with the restart backoff made small (habit 13: long-run paths made short), for the test that
# restarts a role ten times; everything else is the real command.
QUICK_BACKOFF_UP = ("import sys; from ops import cli, supervisor; "
                    "supervisor.RESTART_BACKOFF = supervisor.Backoff(first=0.1, cap=0.4, healthy_after=60.0); "
                    "sys.exit(cli.main(sys.argv[1:]))")


class Up:
    """`sluice up` in its own session, its output in tmp_path/up.log; stopped by pid."""

    def __init__(self, tmp_path: Path, env: dict[str, str], args: tuple[str, ...] = (), quick_backoff=False):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / "up.log"
        config = write(tmp_path / "workspace-config.json", basic_workspace())
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "SLUICE_PORT": str(self.port), "SLUICE_HOST": "127.0.0.1",
                    "SLUICE_CONFIG": str(config), "SLUICE_DATA_DIR": str(tmp_path / "data"),
                    "SLUICE_DATABASE_URL": "", "SLUICE_GATEWAY_WORKERS": "1", "SLUICE_GATEWAY_THREADS": "4",
                    "SLUICE_HEARTBEAT_SECONDS": "0.5", **env}
        cmd = ["-c", QUICK_BACKOFF_UP] if quick_backoff else ["-m", "ops.cli"]
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, *cmd, "up", *args], cwd=ROOT, env=full_env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def lines(self) -> list[dict]:
        out = []
        for text in self.log_path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(text))
        return out

    def logged(self, msg: str) -> list[dict]:
        return [x for x in self.lines() if x.get("msg") == msg and x.get("proc") == "up"]

    def wait_up(self, timeout: float = 60) -> None:
        def up():
            assert self.proc.poll() is None, f"sluice up exited {self.proc.returncode}:\n{self.log_path.read_text()}"
            return self.logged("sluice is up")

        wait_for(up, timeout, interval=0.1, what="sluice is up")

    def children(self, role: str) -> list[psutil.Process]:
        """Running direct children of `sluice up` for a role ("postgres" for the embedded server)."""
        found = []
        for child in psutil.Process(self.proc.pid).children():
            with contextlib.suppress(psutil.NoSuchProcess):
                cmd = child.cmdline()
                is_role = cmd[-1:] == [role] and "ops.cli" in cmd
                if (is_role or (role == "postgres" and cmd[0].endswith("/postgres"))) and \
                        child.status() != psutil.STATUS_ZOMBIE:
                    found.append(child)
        return found

    def send(self, name: str = "Supervised") -> requests.Response:
        body = {"userId": "u-sup", "event": name, "messageId": str(uuid.uuid4())}
        return requests.post(self.url + "/v1/track", json=body, auth=(WEB_KEY, ""), timeout=10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            code = self.proc.wait(10)
        self._log.close()
        return code

    def started_pids(self) -> list[int]:
        return [x["child_pid"] for x in self.logged("started")]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def heartbeat_rows(dsn: str) -> dict[str, tuple]:
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute("SELECT owner, state, detail FROM heartbeats WHERE owner LIKE 'up@%'")
        return {owner.rsplit(":", 1)[1]: (state, detail) for owner, state, detail in cur.fetchall()}


@pytest.fixture
def up_runs():
    """Every `sluice up` a test starts is stopped, whatever the test did."""
    runs: list[Up] = []
    yield runs
    for run in runs:
        run.stop()


# ---- restarts ----------------------------------------------------------------------------------------------

def test_backoff_doubles_to_its_cap():
    assert [Backoff().delay(n) for n in range(1, 10)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]


def test_the_last_error_of_a_child_is_read_from_its_log_lines():
    assert error_of('{"level": "error", "msg": "configuration error, not starting", "error": "bad"}') == \
        "configuration error, not starting: bad"
    assert error_of('{"level": "info", "msg": "started"}') is None
    assert error_of("psycopg2.OperationalError: connection refused") == "psycopg2.OperationalError: connection refused"
    assert error_of("[2024-01-01 00:00:00 +0000] [7] [INFO] Booting worker with pid: 8") is None


def test_a_role_killed_ten_times_comes_back_while_the_gateway_keeps_accepting(dsn, tmp_path, up_runs):
    up = Up(tmp_path, {"SLUICE_DATABASE_URL": dsn}, quick_backoff=True)
    up_runs.append(up)
    up.wait_up()
    gateway = up.children("gateway")
    assert len(gateway) == 1

    statuses: list[int] = []
    stop = threading.Event()

    def keep_sending():
        while not stop.is_set():
            statuses.append(up.send("During kills").status_code)

    sender = threading.Thread(target=keep_sending, daemon=True)
    sender.start()
    def crash_looping():
        state, detail = heartbeat_rows(dsn).get("processor#1", (None, None))
        return state == "crash-looping" and detail

    try:
        killed: set[int] = set()
        for _ in range(10):
            [proc] = wait_for(lambda: [p for p in up.children("processor") if p.pid not in killed], 30,
                              what="the processor to come back")
            killed.add(proc.pid)
            proc.send_signal(signal.SIGKILL)
            if len(killed) == 4:  # three restarts within a minute so far
                assert wait_for(crash_looping, 10, what="processor#1 crash-looping")["restarts_last_minute"] >= 3
        wait_for(lambda: [p for p in up.children("processor") if p.pid not in killed], 30,
                 what="the processor after the last kill")
        assert wait_for(crash_looping, 10, what="still crash-looping")["restarts_last_minute"] >= 10
        wait_for(lambda: len(statuses) > 20, 30, what="events sent")
    finally:
        stop.set()
        sender.join(15)
    assert set(statuses) == {200}, f"the gateway answered {sorted(set(statuses))} while the processor died"
    assert up.proc.poll() is None, "sluice up is still running"
    assert up.children("gateway") == gateway, "the gateway was never restarted"
    assert up.children("router")
    exits = [x for x in up.logged("process exited, restarting") if x["role"] == "processor"]
    assert len([x for x in exits if x.get("signal") == "SIGKILL"]) == 10

    assert up.stop() == 0
    assert heartbeat_rows(dsn) == {}, "a clean stop removes the supervisor's rows"


def test_a_killed_embedded_postgres_is_restarted(tmp_path, up_runs):
    up = Up(tmp_path, {})
    up_runs.append(up)
    up.wait_up()
    assert up.send("Before").status_code == 200
    pg = EmbeddedPostgres(tmp_path / "data")
    [postmaster] = up.children("postgres")
    port = pg.running_port()
    postmaster.send_signal(signal.SIGKILL)

    wait_for(lambda: [p for p in up.children("postgres") if p.pid != postmaster.pid], 60,
             what="a new postmaster")
    wait_for(lambda: up.send("Probe").status_code == 200, 60, what="the gateway accepting again")
    after = up.send("After the restart")
    assert after.status_code == 200
    assert pg.running_port() == port, "same port"
    assert up.logged("embedded Postgres exited, restarting")

    pg.port, pg.password = port, pg.read_password()
    with contextlib.closing(psycopg2.connect(pg.dsn)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM gw_jobs WHERE payload->>'event' = 'After the restart'")
        assert cur.fetchone() == (1,)
    assert up.proc.poll() is None
    assert up.stop() == 0
    assert gone(postmaster.pid) and pg.running_port() is None


# ---- configuration errors stop everything ---------------------------------------------------------------------

def test_a_port_in_use_is_one_line_and_nothing_started(tmp_path, up_runs):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        up = Up(tmp_path, {"SLUICE_PORT": str(port)})
        up_runs.append(up)
        code = up.proc.wait(30)
    assert code == os.EX_CONFIG
    output = up.log_path.read_text().splitlines()
    assert len(output) == 1, output
    line = json.loads(output[0])
    assert line["level"] == "error" and line["msg"] == f"port {port} is already in use, not starting"
    assert line["role"] == "gateway" and line["bind"] == f"127.0.0.1:{port}"
    assert not (tmp_path / "data").exists(), "no Postgres was started"


def test_an_invalid_workspace_config_stops_before_anything_starts(tmp_path, up_runs):
    up = Up(tmp_path, {})
    up_runs.append(up)
    (tmp_path / "workspace-config.json").write_text('{"sources": [{"id": "no-write-key"}]}')
    assert up.proc.wait(30) == os.EX_CONFIG
    [line] = up.lines()
    assert line["level"] == "error" and line["msg"] == "workspace config has problems, not starting"
    assert line["problems"]
    assert not (tmp_path / "data").exists(), "no Postgres was started"


def test_an_embedded_postgres_that_cannot_start_is_a_non_zero_exit(tmp_path, up_runs):
    pgdata = tmp_path / "data" / "pgdata"
    pgdata.mkdir(parents=True)
    (pgdata / "PG_VERSION").write_text("9\n")  # a data directory this Postgres cannot read
    up = Up(tmp_path, {})
    up_runs.append(up)
    assert up.proc.wait(60) not in (0, None)
    [fatal] = [x for x in up.lines() if x["level"] == "error"]
    assert fatal["msg"] == "embedded Postgres cannot be started" and fatal["data_dir"] == str(pgdata)
    assert not up.logged("started")


def test_a_role_exiting_78_stops_everything(dsn, tmp_path, up_runs):
    # The router finds a setting it cannot use (the gateway and processor do not read this one).
    up = Up(tmp_path, {"SLUICE_DATABASE_URL": dsn, "SLUICE_ENDPOINT_OVERRIDES": "{not json"})
    up_runs.append(up)
    code = up.proc.wait(60)
    assert code == os.EX_CONFIG
    [fatal] = [x for x in up.lines() if x.get("proc") == "up" and x["level"] == "error"]
    assert fatal["role"] == "router" and "configuration error" in fatal["msg"]
    assert "SLUICE_ENDPOINT_OVERRIDES" in fatal["last_error"]
    assert up.logged("sluice stopped")
    assert up.started_pids() and all(gone(pid) for pid in up.started_pids())
    assert heartbeat_rows(dsn) == {}


# ---- roles and counts ------------------------------------------------------------------------------------------

def test_a_gateway_only_machine(dsn, tmp_path, up_runs):
    up = Up(tmp_path, {"SLUICE_DATABASE_URL": dsn}, args=("--roles", "gateway"))
    up_runs.append(up)
    up.wait_up()
    assert len(up.children("gateway")) == 1
    assert up.children("processor") == [] and up.children("router") == []
    assert up.send().status_code == 200
    [line] = up.logged("sluice is up")
    assert line["roles"] == {"gateway": 1}
    assert up.stop() == 0


def test_two_processors_and_two_routers_without_a_gateway(dsn, tmp_path, up_runs):
    up = Up(tmp_path, {"SLUICE_DATABASE_URL": dsn, "SLUICE_ROLES": "processor,router", "SLUICE_PROCESSORS": "2",
                       "SLUICE_ROUTERS": "2"})
    up_runs.append(up)
    up.wait_up()
    assert len(up.children("processor")) == 2 and len(up.children("router")) == 2
    assert up.children("gateway") == []
    rows = wait_for(lambda: (r := heartbeat_rows(dsn)) and len(r) == 4 and r, 10, what="four heartbeat rows")
    assert {slot: state for slot, (state, _detail) in rows.items()} == {
        "processor#1": "up", "processor#2": "up", "router#1": "up", "router#2": "up"}
    assert up.stop() == 0
    assert heartbeat_rows(dsn) == {}
