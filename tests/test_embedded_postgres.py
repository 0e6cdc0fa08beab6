"""The embedded Postgres asks for a password (scram-sha-256) kept in a 0600 file, and a data directory from
an earlier version (trust authentication) is upgraded in place, stopped or running, keeping its data."""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
from pathlib import Path

import psycopg2
import pytest

from jobsdb.embedded import POSTGRES_BIN_PATH, RUN_AS, EmbeddedPostgres, _open_up
from tests.support.procs import free_port


def refused(dsn: str) -> str:
    """The error a connection attempt gets; fails the test if the connection is accepted."""
    try:
        psycopg2.connect(dsn, connect_timeout=5).close()
    except psycopg2.OperationalError as exc:
        return str(exc)
    raise AssertionError(f"connected without the right password: {dsn}")


def hba_lines(pg: EmbeddedPostgres) -> list[list[str]]:
    text = (pg.pgdata / "pg_hba.conf").read_text()
    return [line.split() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def assert_password_required(pg: EmbeddedPostgres) -> None:
    base = f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
    assert "no password supplied" in refused(base)
    assert "password authentication failed" in refused(f"postgresql://postgres:wrong@127.0.0.1:{pg.port}/postgres")
    assert hba_lines(pg) == [["host", "all", "all", "127.0.0.1/32", "scram-sha-256"],
                             ["host", "all", "all", "::1/128", "scram-sha-256"]]


@pytest.fixture
def embedded(tmp_path):
    pg = EmbeddedPostgres(tmp_path / "data", fsync=False)
    yield pg
    pg.stop()


def test_the_password_is_required_and_kept_private(embedded):
    dsn = embedded.start()
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute("SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'postgres'")
        assert cur.fetchone() == (True,)
    assert_password_required(embedded)
    st = embedded.password_file.stat()
    assert st.st_mode & 0o777 == 0o600
    assert st.st_uid == os.geteuid(), "readable by the user running Sluice, whoever owns the data directory"
    assert embedded.password_file.read_text().strip() == embedded.password
    assert embedded.password not in (embedded.log_file.read_text() if embedded.log_file.exists() else "")

    embedded.stop()  # a restart keeps the same password
    again = EmbeddedPostgres(embedded.data_dir, port=embedded.port, fsync=False)
    assert again.start() == dsn


def _as_server_user(args: list[str], **kw) -> None:
    kw.setdefault("user", RUN_AS if os.geteuid() == 0 else None)
    subprocess.run(args, check=True, capture_output=True, timeout=120, **kw)


def init_the_old_way(data_dir: Path, port: int) -> Path:
    """What earlier versions made: initdb --auth=trust, no password, no password file; started and given a
    table with a row, as a running Sluice would have."""
    data_dir.mkdir(parents=True)
    pgdata = data_dir / "pgdata"
    if os.geteuid() == 0:  # as the old init did: the server user owns the data directory
        _open_up(data_dir)
        entry = pwd.getpwnam(RUN_AS)
        os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    _as_server_user([str(POSTGRES_BIN_PATH / "initdb"), "-D", str(pgdata), "--auth=trust", "--encoding=UTF8",
                     "--locale=C", "-U", "postgres"])
    with open(pgdata / "postgresql.conf", "a") as fh:
        fh.write("\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n")
    _as_server_user([str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata), "-l", str(data_dir / "postgres.log"),
                     "-o", f"-p {port}", "-w", "start"])
    with contextlib.closing(psycopg2.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres")) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
    return pgdata


@pytest.mark.parametrize("running", [False, True], ids=["stopped", "still-running"])
def test_a_trust_data_dir_is_upgraded_in_place(tmp_path, running):
    port = free_port()
    pg = EmbeddedPostgres(tmp_path / "data", port=port, fsync=False)
    try:
        init_the_old_way(pg.data_dir, port)
        if not running:
            pg.stop()
        assert not pg.password_file.exists()
        dsn = pg.start()
        assert pg.port == port
        assert_password_required(pg)
        assert pg.password_file.stat().st_mode & 0o777 == 0o600
        with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
            cur.execute("SELECT x FROM kept")
            assert cur.fetchall() == [(42,)]
    finally:
        pg.stop()
