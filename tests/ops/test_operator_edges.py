"""Operator rough edges: an unreachable database is one line and exit 1 in every command, never a
traceback nor the password; JSON outputs carry ISO 8601 times; help texts say what a flag really does."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.ops.conftest import add_failed, router_failure, sluice_json
from tests.support.procs import ROOT

DOWN = "postgresql://sluice:not-a-real-secret@127.0.0.1:1/sluice"


@pytest.mark.parametrize("args", [["jobs"], ["jobs", "--json"], ["migrate"], ["replay", "--all", "--dry-run"],
                                  ["replay", "--all", "--yes"]])
def test_an_unreachable_database_is_one_line(args):
    done = subprocess.run([sys.executable, "-m", "ops.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "SLUICE_DATABASE_URL": DOWN})
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"sluice {args[0]}: cannot reach the database: "), done.stderr
    assert "Traceback" not in done.stderr and "not-a-real-secret" not in done.stderr + done.stdout


def test_json_times_are_iso_8601(dsn):
    add_failed(dsn, router_failure("amp", "u1", 1, 400, dest_type="AM"))
    report = sluice_json(dsn, "jobs")
    last = report["failed"][0]["last"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00", last), last


def test_database_url_help_is_accurate():
    done = subprocess.run([sys.executable, "-m", "ops.cli", "jobs", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    text = " ".join(done.stdout.split())
    assert "empty starts the embedded Postgres" not in text
    assert "the embedded Postgres under --data-dir" in text
