"""Shared fixtures: a real Postgres (throwaway, or SLUICE_TEST_DATABASE_URL), a fresh database per test
cloned from a migrated template, and real Sluice processes."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import urllib.parse
from pathlib import Path

import psycopg2
import pytest
import requests

from jobsdb.embedded import EmbeddedPostgres
from jobsdb.migrate import migrate
from tests.support import workspace as ws
from tests.support.procs import SluiceProcess, free_port, wait_for

TEMPLATE = "sluice_template"
_counter = itertools.count()


def _with_db(dsn: str, dbname: str) -> str:
    parts = urllib.parse.urlsplit(dsn)
    return urllib.parse.urlunsplit(parts._replace(path="/" + dbname))


class PostgresServer:
    def __init__(self, admin_dsn: str, embedded: EmbeddedPostgres | None):
        self.admin_dsn = admin_dsn
        self.embedded = embedded

    def admin(self):
        conn = psycopg2.connect(self.admin_dsn)
        conn.autocommit = True
        return conn

    def create_database(self, name: str) -> str:
        with contextlib.closing(self.admin()) as conn, conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
            cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
        return _with_db(self.admin_dsn, name)

    def stop(self) -> None:
        assert self.embedded is not None, "only the embedded test server can be stopped"
        self.embedded.stop()

    def start(self) -> None:
        assert self.embedded is not None
        self.embedded.start()


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory) -> PostgresServer:
    url = os.environ.get("SLUICE_TEST_DATABASE_URL")
    embedded = None
    if url:
        admin_dsn = url
    else:
        embedded = EmbeddedPostgres(tmp_path_factory.mktemp("pg"), fsync=False)
        admin_dsn = embedded.start()
    server = PostgresServer(admin_dsn, embedded)
    with contextlib.closing(server.admin()) as conn, conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}"')
        cur.execute(f'CREATE DATABASE "{TEMPLATE}"')
    migrate(_with_db(admin_dsn, TEMPLATE), jobs_per_dataset=100_000)
    yield server
    if embedded is not None:
        embedded.stop()


@pytest.fixture
def dsn(pg_server) -> str:
    """A fresh, migrated database for this test."""
    return pg_server.create_database(f"t{os.getpid()}_{next(_counter)}")


@pytest.fixture
def db(dsn):
    conn = psycopg2.connect(dsn)
    yield conn
    conn.close()


@pytest.fixture
def workspace_file(tmp_path) -> Path:
    return ws.write(tmp_path / "workspace-config.json", ws.basic_workspace())


class Gateway:
    def __init__(self, proc: SluiceProcess, port: int, dsn: str):
        self.proc, self.port, self.dsn = proc, port, dsn
        self.url = f"http://127.0.0.1:{port}"

    def post(self, path: str, body=None, write_key: str | None = ws.WEB_KEY, **kw) -> requests.Response:
        auth = (write_key, "") if write_key else None
        data = body if isinstance(body, bytes | str) or body is None else json.dumps(body)
        return requests.post(self.url + path, data=data, auth=auth, timeout=15, **kw)

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(self.url + path, timeout=15, **kw)


def start_gateway(dsn: str, config: Path, log_dir: Path, **settings) -> Gateway:
    port = free_port()
    env = {"SLUICE_DATABASE_URL": dsn, "SLUICE_PORT": str(port), "SLUICE_HOST": "127.0.0.1",
           "SLUICE_CONFIG": str(config), "SLUICE_GATEWAY_WORKERS": "1", "SLUICE_GATEWAY_THREADS": "8",
           "SLUICE_CONFIG_POLL_INTERVAL": "0.2"}
    env.update({f"SLUICE_{k.upper()}": str(v) for k, v in settings.items()})
    proc = SluiceProcess("gateway", env, log_dir)
    gw = Gateway(proc, port, dsn)

    def up():
        assert proc.alive(), f"gateway exited:\n{proc.output()}"
        return requests.get(gw.url + "/version", timeout=2).status_code == 200

    wait_for(up, timeout=30, what="gateway to answer")
    return gw


@pytest.fixture
def gateway(dsn, workspace_file, tmp_path):
    gw = start_gateway(dsn, workspace_file, tmp_path)
    yield gw
    gw.proc.stop()


def gw_events(conn, **where) -> list[dict]:
    """The events in the gateway queue, oldest first."""
    with conn.cursor() as cur:
        cur.execute("SELECT payload, source_id, user_key FROM gw_jobs ORDER BY job_id")
        rows = cur.fetchall()
    conn.commit()
    return [dict(p, _source_id=s, _user_key=u) for p, s, u in rows]
