"""`sluice gateway` as a process: one clear JSON line and exit status 78 when it cannot listen, and
gunicorn's own lines in JSON like everything else."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys

from tests.support.procs import ROOT

EX_CONFIG = 78


def test_port_in_use_exits_78_with_one_json_line(dsn, workspace_file):
    with contextlib.closing(socket.socket()) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = {**os.environ, "SLUICE_DATABASE_URL": dsn, "SLUICE_HOST": "127.0.0.1", "SLUICE_PORT": str(port),
               "SLUICE_CONFIG": str(workspace_file), "SLUICE_GATEWAY_WORKERS": "1"}
        proc = subprocess.run([sys.executable, "-m", "ops.cli", "gateway"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == EX_CONFIG, (proc.returncode, lines)
    assert len(lines) == 1, lines
    line = json.loads(lines[0])
    assert line["level"] == "error" and str(port) in line["msg"] and "in use" in line["msg"], line


def test_gunicorn_lines_are_json(gateway):
    assert gateway.get("/version").status_code == 200
    assert gateway.proc.stop() is not None
    lines = [line for line in gateway.proc.log_path.read_text().splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
    gunicorn = [p for p in parsed if p.get("logger", "").startswith("gunicorn")]
    assert any("Booting worker" in p["msg"] for p in gunicorn), parsed
    assert all({"ts", "level", "proc", "pid", "msg"} <= set(p) for p in parsed)
