"""Embedded Postgres for the zero-setup default: pgserver's bundled binaries, our own lifecycle.

The server listens on 127.0.0.1 only, asks for a password (scram-sha-256, generated at init and kept
in a 0600 file beside the data), keeps its data under the data directory, and is started and stopped
explicitly (by `sluice up` or the test fixtures), never at interpreter exit behind our back.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import secrets
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

# pgserver ships the Postgres binaries; its own server class ties the server to one Python process.
POSTGRES_BIN_PATH = Path(importlib.util.find_spec("pgserver").submodule_search_locations[0]) / "pginstall" / "bin"
RUN_AS = "pgserver"  # Postgres refuses to run as root; this unprivileged user owns the data directory.
PASSWORD_FILE = "postgres.password"  # in the data directory, owned by the user running Sluice, mode 0600
PG_HBA = (
    "# Written by Sluice: the password (scram-sha-256) over loopback TCP, nothing else;\n"
    "# no local socket either (unix_socket_directories is '').\n"
    "host    all    all    127.0.0.1/32    scram-sha-256\n"
    "host    all    all    ::1/128         scram-sha-256\n"
)
CONF = (
    "\n# Sluice embedded defaults\n"
    "listen_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
    "password_encryption = 'scram-sha-256'\n"
    "max_connections = 200\nshared_buffers = 256MB\nwal_buffers = 16MB\n"
    "max_wal_size = 2GB\ncheckpoint_timeout = 15min\n"
    "synchronous_commit = on\n"
)


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


def _chown_tree(path: Path, user: str, keep: Path) -> None:
    """Give the tree to the server user, except `keep` (the password file stays with the invoking user)."""
    entry = pwd.getpwnam(user)
    for root, _dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in files:
            f = os.path.join(root, name)
            if f != str(keep):
                os.chown(f, entry.pw_uid, entry.pw_gid)


def _traversable(path: Path) -> None:
    """Let the unprivileged server user traverse to `path` (someone may have narrowed a parent since: a
    tool that keeps its temporary root at 0700, say)."""
    for p in [path, *path.parents]:
        with contextlib.suppress(PermissionError, FileNotFoundError):
            mode = p.stat().st_mode
            if not mode & 0o001:
                p.chmod(mode | 0o011)


def _open_up(path: Path) -> None:
    """Let the unprivileged server user traverse to its data directory and run the binaries."""
    _traversable(path)
    for root, _dirs, files in os.walk(POSTGRES_BIN_PATH.parent):
        with contextlib.suppress(PermissionError):
            os.chmod(root, os.stat(root).st_mode | 0o055)
        for name in files:
            f = os.path.join(root, name)
            with contextlib.suppress(PermissionError):
                os.chmod(f, os.stat(f).st_mode | 0o044 | (0o011 if os.stat(f).st_mode & 0o100 else 0))


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (an exited server whose parent has not reaped it
    still answers kill(pid, 0))."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return False
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    port: int = 0
    fsync: bool = True
    password: str = ""

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def password_file(self) -> Path:
        return self.data_dir / PASSWORD_FILE

    @property
    def dsn(self) -> str:
        auth = f"postgres:{self.password}" if self.password else "postgres"
        return f"postgresql://{auth}@127.0.0.1:{self.port}/postgres"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "postgres.log"

    def _run(self, exe: str, args: list[str], timeout: float = 60, input: str | None = None, secret: str = ""
             ) -> subprocess.CompletedProcess:
        """Run one of the bundled binaries; a failure raises RuntimeError with its output (`secret` masked:
        Postgres repeats a failed statement in its output)."""
        cmd = [str(POSTGRES_BIN_PATH / exe), *args]
        if _as_root():
            _traversable(self.data_dir.resolve())
        kwargs: dict = {"check": True, "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "timeout": timeout,
                        "text": True, "input": input}
        if _as_root():
            kwargs["user"] = RUN_AS
        try:
            return subprocess.run(cmd, **kwargs)
        except subprocess.CalledProcessError as exc:
            out = (exc.stdout or "").strip()
            if secret:
                out = out.replace(secret, "***")
            raise RuntimeError(f"{exe} {args[0]} exited with status {exc.returncode}: {out[-1500:]}") from None

    def init(self) -> None:
        """Create the cluster if there is none, then make sure it asks for the password."""
        self.data_dir = self.data_dir.resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if _as_root():
            _ensure_user()
            _open_up(self.data_dir)
            _chown_tree(self.data_dir, RUN_AS, keep=self.password_file)
        if not (self.pgdata / "PG_VERSION").exists():
            # Everything refused until require_password() has set the password and written pg_hba.conf.
            self._run("initdb", ["-D", str(self.pgdata), "--auth=reject", "--encoding=UTF8", "--locale=C", "-U",
                                 "postgres"])
            with open(self.pgdata / "postgresql.conf", "a") as fh:
                fh.write(CONF)
        self.require_password()

    # ---- the password -------------------------------------------------------------------------------

    def read_password(self) -> str:
        """The superuser's password from the data directory ('' when there is none yet).

        Raises PermissionError for a user other than the one who runs Sluice here."""
        try:
            st = self.password_file.stat()
            if st.st_mode & 0o077 and st.st_uid == os.geteuid():
                self.password_file.chmod(0o600)  # someone widened it: only the owner may read it
            return self.password_file.read_text().strip()
        except FileNotFoundError:
            return ""

    def _write_password_file(self, password: str) -> None:
        tmp = self.password_file.with_name(PASSWORD_FILE + ".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(password + "\n")
        os.replace(tmp, self.password_file)

    def _hba_is_ours(self) -> bool:
        try:
            return (self.pgdata / "pg_hba.conf").read_text() == PG_HBA
        except FileNotFoundError:
            return False

    def require_password(self) -> None:
        """Make the server ask for the password. A data directory from an earlier version (trust
        authentication, no password file) is upgraded in place: password set, pg_hba.conf rewritten."""
        password = self.read_password()
        if password and self._hba_is_ours():
            self.password = password
            return
        password = password or secrets.token_urlsafe(24)
        self._write_password_file(password)  # first: a crash below repeats the same steps with it
        sql = f"SET password_encryption = 'scram-sha-256';\nALTER ROLE postgres PASSWORD {_sql_literal(password)};\n"
        port = self.running_port()
        if port is None:
            # Single-user mode: no listener, so the cluster is never open while it changes.
            self._run("postgres", ["--single", "-D", str(self.pgdata), "-c", "exit_on_error=true", "postgres"],
                      input=sql, secret=password)
        else:
            self._set_password_live(port, sql)
        hba = self.pgdata / "pg_hba.conf"
        hba.write_text(PG_HBA)
        hba.chmod(0o600)
        if _as_root():
            entry = pwd.getpwnam(RUN_AS)
            os.chown(hba, entry.pw_uid, entry.pw_gid)
        if port is not None:
            self._run("pg_ctl", ["-D", str(self.pgdata), "reload"])
        self.password = password

    def _set_password_live(self, port: int, sql: str) -> None:
        """An older server still running with trust authentication: set the password through it."""
        import psycopg2

        try:
            conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                                    connect_timeout=5)
        except psycopg2.OperationalError as exc:
            raise RuntimeError(f"the embedded Postgres in {self.pgdata} is running and its password is not in "
                               f"{self.password_file}: stop it (pg_ctl stop) and start again") from exc
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    # ---- running it ---------------------------------------------------------------------------------

    def running_port(self) -> int | None:
        pid_file = self.pgdata / "postmaster.pid"
        if not pid_file.exists():
            return None
        lines = pid_file.read_text().splitlines()
        try:
            pid, port = int(lines[0]), int(lines[3])
        except (IndexError, ValueError):
            return None
        return port if pid_alive(pid) else None

    def pid(self) -> int | None:
        pid_file = self.pgdata / "postmaster.pid"
        if not pid_file.exists():
            return None
        try:
            return int(pid_file.read_text().splitlines()[0])
        except (IndexError, ValueError):
            return None

    def _clear_stale_pid_file(self) -> None:
        """Remove the lock file of a server that is gone. One killed while nobody reaps it stays a zombie,
        which Postgres would take for a live server holding the data directory."""
        pid = self.pid()
        if pid is not None and not pid_alive(pid):
            with contextlib.suppress(FileNotFoundError):
                (self.pgdata / "postmaster.pid").unlink()

    def _options(self) -> list[str]:
        if self.fsync:
            return []
        return ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]

    def start(self) -> str:
        """Start the server in the background (pg_ctl) unless it runs already; return its DSN."""
        self.init()
        existing = self.running_port()
        if existing:
            self.port = existing
            return self.dsn
        if not self.port:
            self.port = _free_port()
        self._clear_stale_pid_file()
        if _as_root() and self.log_file.exists():
            os.chown(self.log_file, pwd.getpwnam(RUN_AS).pw_uid, pwd.getpwnam(RUN_AS).pw_gid)
        try:
            self._run("pg_ctl", ["-D", str(self.pgdata), "-l", str(self.log_file), "-o",
                                 " ".join(["-p", str(self.port), *self._options()]), "-w", "-t", "60", "start"],
                      timeout=90)
        except RuntimeError as exc:
            raise RuntimeError(f"embedded Postgres failed to start: {exc}\n{self.log_tail()}") from None
        return self.dsn

    def spawn(self) -> subprocess.Popen:
        """Run the server in the foreground as the caller's child, on `port` (picked once, then kept), for
        a supervisor that restarts it: the child is reaped by its parent, never left a zombie holding
        the data directory's lock. Call init() first."""
        if not self.port:
            self.port = _free_port()
        self._clear_stale_pid_file()
        cmd = [str(POSTGRES_BIN_PATH / "postgres"), "-D", str(self.pgdata), "-p", str(self.port), *self._options()]
        with open(self.log_file, "ab") as log:
            # Its own session: Ctrl-C in the terminal reaches the supervisor, which stops the server last.
            return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, user=RUN_AS if _as_root() else None)

    def ready(self, pid: int) -> bool:
        """Whether the server with this pid accepts connections (its postmaster.pid says so)."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return False
        return len(lines) > 7 and lines[0].strip() == str(pid) and lines[7].strip() == "ready"

    def wait_ready(self, proc: subprocess.Popen, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready(proc.pid):
            if proc.poll() is not None:
                raise RuntimeError(f"embedded Postgres exited with status {proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded Postgres not ready after {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, mode: str = "fast") -> None:
        if self.running_port() is None:
            return
        self._run("pg_ctl", ["-D", str(self.pgdata), "-m", mode, "-w", "-t", "60", "stop"], timeout=90)
