"""Embedded Postgres for the zero-setup default: pgserver's bundled binaries, our own lifecycle.

The server listens on 127.0.0.1 only, keeps its data under the data directory, and is started and
stopped explicitly (by `sluice up` or the test fixtures), never at interpreter exit behind our back.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

# pgserver ships the Postgres binaries; its own server class ties the server to one Python process.
POSTGRES_BIN_PATH = Path(importlib.util.find_spec("pgserver").submodule_search_locations[0]) / "pginstall" / "bin"
RUN_AS = "pgserver"  # Postgres refuses to run as root; this unprivileged user owns the data directory.


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_root() -> bool:
    return os.geteuid() == 0


def _ensure_user() -> None:
    try:
        pwd.getpwnam(RUN_AS)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", RUN_AS], check=True)


def _chown_tree(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for root, _dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


def _open_up(path: Path) -> None:
    """Let the unprivileged server user traverse to its data directory and run the binaries."""
    for p in [path, *path.parents]:
        with contextlib.suppress(PermissionError):
            mode = p.stat().st_mode
            if not mode & 0o001:
                p.chmod(mode | 0o011)
    for root, _dirs, files in os.walk(POSTGRES_BIN_PATH.parent):
        with contextlib.suppress(PermissionError):
            os.chmod(root, os.stat(root).st_mode | 0o055)
        for name in files:
            f = os.path.join(root, name)
            with contextlib.suppress(PermissionError):
                os.chmod(f, os.stat(f).st_mode | 0o044 | (0o011 if os.stat(f).st_mode & 0o100 else 0))


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    port: int = 0
    fsync: bool = True

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "postgres.log"

    def _run(self, exe: str, args: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [str(POSTGRES_BIN_PATH / exe), *args]
        kwargs: dict = {"check": True, "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "timeout": timeout,
                        "text": True}
        if _as_root():
            kwargs["user"] = RUN_AS
        return subprocess.run(cmd, **kwargs)

    def init(self) -> None:
        self.data_dir = self.data_dir.resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if _as_root():
            _ensure_user()
            _open_up(self.data_dir)
            _chown_tree(self.data_dir, RUN_AS)
        if (self.pgdata / "PG_VERSION").exists():
            return
        self._run("initdb", ["-D", str(self.pgdata), "--auth=trust", "--encoding=UTF8", "--locale=C", "-U",
                             "postgres"])
        with open(self.pgdata / "postgresql.conf", "a") as fh:
            fh.write(
                "\n# Sluice embedded defaults\n"
                "listen_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
                "max_connections = 200\nshared_buffers = 256MB\nwal_buffers = 16MB\n"
                "max_wal_size = 2GB\ncheckpoint_timeout = 15min\n"
                "synchronous_commit = on\n"
            )

    def running_port(self) -> int | None:
        pid_file = self.pgdata / "postmaster.pid"
        if not pid_file.exists():
            return None
        lines = pid_file.read_text().splitlines()
        try:
            pid, port = int(lines[0]), int(lines[3])
            os.kill(pid, 0)
        except (IndexError, ValueError, ProcessLookupError):
            return None
        return port

    def pid(self) -> int | None:
        pid_file = self.pgdata / "postmaster.pid"
        if not pid_file.exists():
            return None
        try:
            return int(pid_file.read_text().splitlines()[0])
        except (IndexError, ValueError):
            return None

    def start(self) -> str:
        self.init()
        existing = self.running_port()
        if existing:
            self.port = existing
            return self.dsn
        if not self.port:
            self.port = _free_port()
        opts = f"-p {self.port}" + ("" if self.fsync else " -c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        if _as_root() and self.log_file.exists():
            os.chown(self.log_file, pwd.getpwnam(RUN_AS).pw_uid, pwd.getpwnam(RUN_AS).pw_gid)
        try:
            self._run("pg_ctl", ["-D", str(self.pgdata), "-l", str(self.log_file), "-o", opts, "-w", "-t", "60",
                                 "start"], timeout=90)
        except subprocess.CalledProcessError as exc:
            tail = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
            raise RuntimeError(f"embedded Postgres failed to start: {exc.stdout}\n{tail}") from exc
        return self.dsn

    def stop(self, mode: str = "fast") -> None:
        if self.running_port() is None:
            return
        self._run("pg_ctl", ["-D", str(self.pgdata), "-m", mode, "-w", "-t", "60", "stop"], timeout=90)
