"""`sluice up`: this machine's share of Sluice from one command. The embedded Postgres (unless a database
URL is set), migrations, then the roles of SLUICE_ROLES as child processes (`python -m ops.cli <role>`).

A child that dies is restarted with exponential backoff, forever; the embedded Postgres too, on the
same port and data. Nothing but a configuration error (a child exiting EX_CONFIG, 78) or a signal
stops the others, so the gateway keeps accepting events while a stage behind it is down. What the
supervisor knows about each slot goes to the `heartbeats` table, where the gateway's /health reads it.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2

from config.metrics import prepare_dir
from config.settings import Settings
from config.workspace import ConfigError, load_workspace
from jobsdb import heartbeats
from jobsdb.db import UNAVAILABLE_ERRORS, redact_dsn, transaction
from jobsdb.embedded import EmbeddedPostgres
from jobsdb.migrate import migrate

log = logging.getLogger("sluice.up")
EX_CONFIG = os.EX_CONFIG  # 78: "configuration error, restarting will not help"
CRASH_LOOP_RESTARTS = 3  # restarts within a minute that make a slot "crash-looping"
READY_DEADLINE = 60.0  # seconds the gateway may take to answer /version before we say so
STOP_GRACE = 25.0  # seconds children get to finish after SIGTERM
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # our own gateway, never via a proxy


@dataclass(frozen=True)
class Backoff:
    """Delay before restarting a slot: `first` after its first exit, doubling up to `cap`; the streak is
    forgotten once the process has run `healthy_after` seconds."""

    first: float = 0.5
    cap: float = 30.0
    healthy_after: float = 60.0

    def delay(self, failures: int) -> float:
        return min(self.cap, self.first * 2 ** max(0, failures - 1))


RESTART_BACKOFF = Backoff()


class Fatal(Exception):
    """`sluice up` cannot go on: log one line, stop what runs, exit with `code`."""

    def __init__(self, message: str, code: int = 1, **extra):
        super().__init__(message)
        self.code = code
        self.extra = extra


@dataclass
class Slot:
    """One supervised process: a role's n-th child, or the embedded Postgres."""

    role: str
    n: int
    owner: str  # its row in `heartbeats`
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    failures: int = 0  # exits since it last ran healthy: the backoff exponent
    restarts: collections.deque = field(default_factory=collections.deque)  # when it was restarted
    exit_code: int | None = None
    next_start: float | None = 0.0  # when to (re)start it; None while it runs
    last_error: str | None = None
    relay: threading.Thread | None = None  # passes the child's stderr on
    ready: bool = False  # the embedded Postgres accepts connections

    @property
    def name(self) -> str:
        return f"{self.role}#{self.n}"

    def restarts_last_minute(self, now: float) -> int:
        while self.restarts and now - self.restarts[0] > 60:
            self.restarts.popleft()
        return len(self.restarts)

    def state(self, now: float) -> str:
        if self.restarts_last_minute(now) >= CRASH_LOOP_RESTARTS:
            return "crash-looping"
        return "up" if self.proc is not None else "restarting"

    def heartbeat(self, now: float) -> dict:
        detail = {"restarts_last_minute": self.restarts_last_minute(now), "exit_code": self.exit_code,
                  "next_start_in_s": None if self.next_start is None else round(max(0.0, self.next_start - now), 1)}
        if self.last_error:
            detail["last_error"] = self.last_error
        return {"owner": self.owner, "role": self.role, "state": self.state(now), "detail": detail,
                "pid": self.proc.pid if self.proc is not None else None}


class HeartbeatWriter(threading.Thread):
    """Writes the slots' rows from its own thread, so a database that is down or slow never holds up
    supervision: a write that fails is skipped, and the next one reconnects (short connect timeout)."""

    def __init__(self, dsn: str):
        super().__init__(name="heartbeats", daemon=True)
        self.dsn = dsn
        self.rows: list[dict] = []
        self.closing: list[str] | None = None  # owners to remove on the way out
        self.wake = threading.Event()
        self.conn = None

    def publish(self, rows: list[dict]) -> None:
        self.rows = rows
        self.wake.set()

    def close(self, timeout: float = 5.0) -> None:
        self.closing = [r["owner"] for r in self.rows]
        self.wake.set()
        self.join(timeout)

    def run(self) -> None:
        closing = None
        while closing is None:
            self.wake.wait()
            self.wake.clear()
            closing = self.closing
            if closing is None:
                self._write(self.rows, [])
            else:
                self._write([], closing)
        if self.conn is not None:
            self.conn.close()

    def _write(self, rows: list[dict], remove: list[str]) -> None:
        try:
            if self.conn is None or self.conn.closed:
                self.conn = psycopg2.connect(self.dsn, application_name="sluice-up", connect_timeout=2,
                                             options="-c statement_timeout=2000")
            with transaction(self.conn) as cur:
                for row in rows:
                    heartbeats.beat(cur, **row)
                for owner in remove:
                    heartbeats.remove(cur, owner)
        except psycopg2.Error as exc:
            log.debug("heartbeat skipped", extra={"error": str(exc).strip()[:200]})
            if self.conn is not None:
                self.conn.close()
            self.conn = None


class Supervisor:
    def __init__(self, settings: Settings, roles: tuple[str, ...], backoff: Backoff | None = None):
        self.settings = settings
        self.roles = roles
        self.backoff = backoff or RESTART_BACKOFF
        self.stopping = False
        self.wake = threading.Event()
        self.pg: EmbeddedPostgres | None = None
        prefix = f"up@{socket.gethostname()}/{os.getpid()}:"
        counts = {"processor": settings.processors, "router": settings.routers}
        self.slots = [Slot(role, n, f"{prefix}{role}#{n}") for role in roles for n in range(1, counts.get(role, 1) + 1)]
        self.pg_slot: Slot | None = None
        if not settings.database_url:
            self.pg_slot = Slot("postgres", 1, f"{prefix}postgres#1")
        self.beats: HeartbeatWriter | None = None

    # ---- start-up ---------------------------------------------------------------------------------------

    def run(self) -> int:
        try:
            self.check_ports()
            workspace = self.load_workspace()
        except Fatal as exc:
            log.error(str(exc), extra=exc.extra)
            return exc.code
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            self.prepare_database()
            log.info("workspace config loaded", extra={"file": os.path.abspath(self.settings.config),
                                                       "sources": len(workspace.sources),
                                                       "destinations": workspace.destination_count})
            return self.supervise()
        except Fatal as exc:
            log.error(str(exc), extra=exc.extra)
            return exc.code
        finally:
            self.shutdown()

    def check_ports(self) -> None:
        """The ports this machine's roles listen on must be free, before anything starts."""
        s = self.settings
        binds = [(role, host, port) for role, host, port in
                 (("gateway", s.host, s.port), ("admin", s.admin_host, s.admin_port)) if role in self.roles]
        for role, host, port in binds:
            try:
                family, kind, proto, _name, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                                         flags=socket.AI_PASSIVE)[0]
                with socket.socket(family, kind, proto) as sock:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
                    sock.bind(address)
            except OSError as exc:
                in_use = exc.errno == errno.EADDRINUSE
                raise Fatal(f"port {port} is already in use, not starting" if in_use else
                            f"cannot listen on {host}:{port}, not starting", EX_CONFIG, role=role,
                            bind=f"{host}:{port}", error=str(exc)) from None

    def load_workspace(self):
        try:
            return load_workspace(self.settings.config)
        except ConfigError as exc:
            raise Fatal("workspace config has problems, not starting", EX_CONFIG,
                        file=os.path.abspath(self.settings.config), problems=str(exc).splitlines()) from None

    def prepare_database(self) -> None:
        s = self.settings
        if self.pg_slot is not None:
            self.pg = EmbeddedPostgres(Path(s.data_dir))
            try:
                self.pg.init()
                port = self.pg.running_port()
                if port:  # left behind by a `sluice up` that was killed: run it as our child, on its port
                    self.pg.port = port
                    log.warning("embedded Postgres was already running, restarting it under this supervisor",
                                extra={"pg_pid": self.pg.pid()})
                    self.pg.stop()
                self.start(self.pg_slot)
                if self.pg_slot.proc is None:
                    raise RuntimeError(self.pg_slot.last_error)
                self.pg.wait_ready(self.pg_slot.proc)
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                raise Fatal("embedded Postgres cannot be started", 1, data_dir=str(self.pg.pgdata),
                            error=str(exc).strip()[-2000:], log=str(self.pg.log_file)) from None
            self.pg_slot.ready = True
            log.info("embedded Postgres running", extra={"dsn": redact_dsn(self.pg.dsn),
                                                         "data_dir": str(self.pg.pgdata), "pg_pid": self.pg_slot.proc.pid,
                                                         "password_file": str(self.pg.password_file),
                                                         "log": str(self.pg.log_file)})
            s = dataclasses.replace(s, database_url=self.pg.dsn)
        metrics_dir = prepare_dir(Path(s.data_dir) / "metrics")  # every child writes its samples here
        log.info("metrics", extra={"samples_dir": metrics_dir, "scrape": f"http://127.0.0.1:{s.port}/metrics"})
        try:
            applied = migrate(s.database_url, s.jobs_per_dataset, s.gw_partitions, s.router_partitions)
        except UNAVAILABLE_ERRORS as exc:
            raise Fatal("database unreachable, not starting", 1, database=redact_dsn(s.database_url),
                        error=str(exc).strip()[:300]) from None
        log.info("database ready", extra={"migrations_applied": applied})
        self.settings = s

    # ---- supervision ------------------------------------------------------------------------------------

    def supervise(self) -> int:
        s = self.settings
        self.beats = HeartbeatWriter(s.database_url)
        self.beats.start()
        started = time.monotonic()
        announced = warned = False
        next_beat = 0.0
        while not self.stopping:
            now = time.monotonic()
            changed = False
            for slot in self.all_slots():
                if self.stopping:
                    break
                if slot.proc is not None:
                    code = slot.proc.poll()
                    if code is None:
                        changed |= self.check_running(slot, now)
                        continue
                    self.exited(slot, code, now)
                    changed = True
                if slot.next_start is not None and now >= slot.next_start:
                    self.start(slot)
                    changed = True
            if not announced and not self.stopping:
                if self.gateway_answers():
                    self.announce()
                    announced = True
                elif not warned and now - started > READY_DEADLINE:
                    log.warning("the gateway does not answer yet", extra={"url": self.gateway_url() + "/version",
                                                                          "waited_s": READY_DEADLINE})
                    warned = True
            if changed or now >= next_beat:
                self.beats.publish([slot.heartbeat(now) for slot in self.all_slots()])
                next_beat = now + s.heartbeat_seconds
            self.wake.wait(0.1)
        return 0

    def all_slots(self) -> list[Slot]:
        return ([self.pg_slot] if self.pg_slot is not None else []) + self.slots

    def start(self, slot: Slot) -> None:
        now = time.monotonic()
        if slot.exit_code is not None:
            slot.restarts.append(now)
        slot.next_start = None
        slot.started_at = now
        slot.last_error = None
        try:
            if slot.role == "postgres":
                slot.proc = self.pg.spawn()
                slot.ready = False
            else:
                env = {**os.environ, **self.settings.env_for_children()}
                slot.proc = subprocess.Popen([sys.executable, "-m", "ops.cli", slot.role], env=env,
                                             stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
                slot.relay = threading.Thread(target=relay, args=(slot, slot.proc.stderr),
                                              name=f"relay-{slot.name}", daemon=True)
                slot.relay.start()
        except OSError as exc:
            slot.proc = None
            slot.last_error = str(exc)
            self.exited(slot, None, now)
            return
        log.info("started", extra={"role": slot.role, "slot": slot.name, "child_pid": slot.proc.pid})

    def check_running(self, slot: Slot, now: float) -> bool:
        """True when a running slot changed in a way worth a heartbeat (the embedded Postgres became ready)."""
        if slot.role == "postgres" and not slot.ready and self.pg.ready(slot.proc.pid):
            slot.ready = True
            log.info("embedded Postgres running", extra={"dsn": redact_dsn(self.pg.dsn), "pg_pid": slot.proc.pid})
            return True
        return False

    def exited(self, slot: Slot, code: int | None, now: float) -> None:
        slot.proc = None
        slot.exit_code = code
        if code == EX_CONFIG:
            if slot.relay is not None:
                slot.relay.join(2.0)  # the child's last lines, and its last error, first
            raise Fatal(f"{slot.role} cannot run: configuration error (exit {EX_CONFIG}); restarting will not "
                        "help, stopping", EX_CONFIG, role=slot.role, slot=slot.name, last_error=slot.last_error)
        if now - slot.started_at >= self.backoff.healthy_after:
            slot.failures = 0
        slot.failures += 1
        delay = self.backoff.delay(slot.failures)
        slot.next_start = now + delay
        extra = {"role": slot.role, "slot": slot.name, "exit_code": code, "restart_in_s": delay,
                 "restarts_last_minute": slot.restarts_last_minute(now)}
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                extra["signal"] = signal.Signals(-code).name
        if slot.last_error:
            extra["last_error"] = slot.last_error
        log.warning("embedded Postgres exited, restarting" if slot.role == "postgres" else "process exited, restarting",
                    extra=extra)

    def gateway_url(self) -> str:
        host = self.settings.host
        host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.settings.port}"

    def gateway_answers(self) -> bool:
        """True once the gateway listens (its /version answers); True at once when it does not run here."""
        if "gateway" not in self.roles:
            return True
        try:
            with _NO_PROXY.open(self.gateway_url() + "/version", timeout=0.5) as resp:
                return resp.status == 200
        except (OSError, ValueError):
            return False

    def announce(self) -> None:
        s = self.settings
        counts = collections.Counter(slot.role for slot in self.slots)
        extra: dict = {"roles": dict(counts), "config": os.path.abspath(s.config)}
        if "gateway" in self.roles:
            extra.update(gateway=self.gateway_url(), health=self.gateway_url() + "/health")
        if "admin" in self.roles:
            extra["admin"] = f"http://{s.admin_host}:{s.admin_port}/admin/"  # the page; the API is under it
        log.info("sluice is up", extra=extra)

    def _on_signal(self, signum, frame) -> None:
        self.stopping = True
        self.wake.set()

    # ---- stopping ---------------------------------------------------------------------------------------

    def shutdown(self) -> None:
        running = [slot for slot in self.slots if slot.proc is not None and slot.proc.poll() is None]
        for slot in running:
            log.info("stopping", extra={"role": slot.role, "slot": slot.name, "child_pid": slot.proc.pid})
            slot.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for slot in running:
            try:
                slot.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("did not stop in time, killing", extra={"role": slot.role, "child_pid": slot.proc.pid})
                slot.proc.kill()
                slot.proc.wait()
        if self.beats is not None:
            self.beats.close()
        if self.pg_slot is not None and self.pg_slot.proc is not None:
            log.info("stopping embedded Postgres")
            proc = self.pg_slot.proc
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # fast shutdown: roll back open transactions, checkpoint
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        log.info("sluice stopped")


def relay(slot: Slot, stream) -> None:
    """Pass a child's log lines on to our stderr, remembering its last error for the slot's record."""
    with stream:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace")
            # Keep reading even if our stderr is gone: a child blocked on a full pipe would stall its role.
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(line if line.endswith("\n") else line + "\n")
                sys.stderr.flush()
            error = error_of(line)
            if error:
                slot.last_error = error


def error_of(line: str) -> str | None:
    """The error a log line reports: a JSON line at level error or above, or a plain line that names one
    (a traceback's last line, gunicorn's [ERROR])."""
    line = line.strip()
    if line.startswith("{"):
        try:
            record = json.loads(line)
        except ValueError:
            return None
        if isinstance(record, dict) and record.get("level") in ("error", "critical"):
            text = str(record.get("msg", ""))
            if record.get("error"):
                text += f": {record['error']}"
            return text[:500]
        return None
    if "Error" in line or "ERROR" in line or "FATAL" in line or "Exception" in line:
        return line[:500]
    return None
