"""`sluice up`: embedded Postgres (unless a database URL is set), migrations, and every Sluice process.

Children are started as `python -m ops.cli <role>`, restarted if they die, and stopped by pid on
Ctrl-C / SIGTERM; the embedded Postgres is stopped last.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from config.metrics import prepare_dir
from config.settings import Settings
from config.workspace import ConfigError, load_workspace
from jobsdb.db import redact_dsn
from jobsdb.embedded import EmbeddedPostgres
from jobsdb.migrate import migrate

log = logging.getLogger("sluice.up")
ROLES = ("gateway", "processor", "router")


class Supervisor:
    def __init__(self, settings: Settings, roles: tuple[str, ...] = ROLES):
        self.settings = settings
        self.roles = roles
        self.children: dict[str, subprocess.Popen] = {}
        self.restarts: dict[str, list[float]] = {}
        self.stopping = False
        self.pg: EmbeddedPostgres | None = None

    def prepare(self) -> Settings:
        s = self.settings
        try:
            ws = load_workspace(s.config)
        except ConfigError as exc:
            raise SystemExit(f"workspace config has problems, not starting:\n{exc}") from None
        if not s.database_url:
            self.pg = EmbeddedPostgres(Path(s.data_dir))
            dsn = self.pg.start()
            log.info("embedded Postgres running", extra={"dsn": redact_dsn(dsn), "data_dir": str(self.pg.pgdata),
                                                         "pg_pid": self.pg.pid(), "log": str(self.pg.log_file)})
            s = dataclasses.replace(s, database_url=dsn)
        metrics_dir = prepare_dir(Path(s.data_dir) / "metrics")  # every child writes its samples here
        log.info("metrics", extra={"samples_dir": metrics_dir, "scrape": f"http://127.0.0.1:{s.port}/metrics"})
        applied = migrate(s.database_url, s.jobs_per_dataset, s.gw_partitions, s.router_partitions)
        log.info("database ready", extra={"migrations_applied": applied})
        log.info("workspace config loaded", extra={"file": os.path.abspath(s.config), "sources": len(ws.sources),
                                                   "destinations": ws.destination_count})
        self.settings = s
        return s

    def spawn(self, role: str) -> None:
        env = {**os.environ, **self.settings.env_for_children()}
        proc = subprocess.Popen([sys.executable, "-m", "ops.cli", role], env=env)
        self.children[role] = proc
        log.info("started", extra={"role": role, "child_pid": proc.pid})

    def run(self) -> int:
        s = self.prepare()
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for role in self.roles:
            self.spawn(role)
        extra = {"gateway": f"http://127.0.0.1:{s.port}", "health": f"http://127.0.0.1:{s.port}/health",
                 "config": os.path.abspath(s.config)}
        if "admin" in self.roles:
            extra["admin"] = f"http://{s.admin_host}:{s.admin_port}/admin/jobs"
        log.info("sluice is up", extra=extra)
        try:
            while not self.stopping:
                for role, proc in list(self.children.items()):
                    code = proc.poll()
                    if code is None or self.stopping:
                        continue
                    recent = [t for t in self.restarts.get(role, []) if time.monotonic() - t < 60]
                    if len(recent) >= 5:
                        log.error("process keeps dying, giving up", extra={"role": role, "exit_code": code})
                        self.stopping = True
                        break
                    log.warning("process exited, restarting", extra={"role": role, "exit_code": code})
                    self.restarts[role] = [*recent, time.monotonic()]
                    self.spawn(role)
                time.sleep(0.5)
        finally:
            self.shutdown()
        return 0

    def _on_signal(self, signum, frame) -> None:
        self.stopping = True

    def shutdown(self) -> None:
        for role, proc in self.children.items():
            if proc.poll() is None:
                log.info("stopping", extra={"role": role, "child_pid": proc.pid})
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 25
        for proc in self.children.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.pg is not None:
            log.info("stopping embedded Postgres")
            self.pg.stop()
        log.info("sluice stopped")
