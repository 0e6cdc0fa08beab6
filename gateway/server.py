"""Runs the gateway under gunicorn (gevent workers by default); each worker owns its group committer,
side connections and config watcher. gunicorn's own lines are JSON like every other Sluice line."""

from __future__ import annotations

import contextlib
import errno
import logging
import socket

import psycopg2
from gunicorn import glogging
from gunicorn.app.base import BaseApplication

from config.logs import setup_logging
from config.metrics import mark_process_dead, prepare_dir
from config.settings import Settings, SettingsError
from config.workspace import WorkspaceWatcher
from gateway.app import create_app
from gateway.client_ip import parse_networks
from gateway.group_commit import GroupCommitter
from gateway.sdk_config import resolve_public_url
from jobsdb import layout

log = logging.getLogger("sluice.gateway")
EX_CONFIG = layout.EXIT_CONFIG  # 78: a configuration error, restarting will not help


def build_app(settings: Settings):
    offload = None
    if settings.gateway_worker_class == "gevent":
        # Requests wait for their commit as greenlets; the commit itself (psycopg2, COPY) runs on one of
        # gevent's native threads, so the event loop keeps serving while Postgres works.
        import gevent

        offload = gevent.get_hub().threadpool.apply
    watcher = WorkspaceWatcher(settings.config, poll_interval=settings.config_poll_interval)
    watcher.start()
    committer = GroupCommitter(settings.database_url, settings.group_commit_max_wait_ms,
                               settings.group_commit_max_events, offload=offload,
                               heartbeat_seconds=settings.heartbeat_seconds).start()
    return create_app(settings, watcher, committer, offload=offload)


class JsonLogger(glogging.Logger):
    """gunicorn's logger, sending its lines through the root logger (config.logs.JsonFormatter)."""

    def setup(self, cfg):
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            logger.propagate = True


class GatewayServer(BaseApplication):
    def __init__(self, settings: Settings):
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        self.cfg.set("bind", f"{s.host}:{s.port}")
        self.cfg.set("workers", s.gateway_workers)
        self.cfg.set("worker_class", s.gateway_worker_class)
        self.cfg.set("threads", s.gateway_threads)
        self.cfg.set("timeout", 60)
        # gevent waits for idle keep-alive clients on stop; in-flight requests need only one commit.
        self.cfg.set("graceful_timeout", 5)
        self.cfg.set("keepalive", 5)
        self.cfg.set("backlog", 2048)
        self.cfg.set("worker_connections", 2000)
        self.cfg.set("accesslog", None)
        self.cfg.set("logger_class", JsonLogger)
        self.cfg.set("loglevel", s.log_level.lower())
        self.cfg.set("proc_name", "sluice-gateway")
        # gunicorn's control socket ($HOME/.gunicorn/gunicorn.ctl) is one path per user: every gateway on
        # the machine would fight over it, and nothing of ours uses it.
        self.cfg.set("control_socket_disable", True)

        def post_fork(server, worker):
            setup_logging("gateway", s.log_level)

        def worker_exit(server, worker):
            app = getattr(worker, "wsgi", None)
            if app is not None and "sluice" in getattr(app, "extensions", {}):
                with contextlib.suppress(Exception):
                    app.extensions["sluice"].close()

        def child_exit(server, worker):
            mark_process_dead(worker.pid)

        self.cfg.set("post_fork", post_fork)
        self.cfg.set("worker_exit", worker_exit)
        self.cfg.set("child_exit", child_exit)

    def load(self):
        return build_app(self.settings)


def bind_problem(host: str, port: int) -> str | None:
    """Why gunicorn could not listen on host:port (in use, not a local address, not allowed), or None."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot resolve {host!r}: {exc.strerror}"
    family, kind, proto, _name, address = infos[0]
    with contextlib.closing(socket.socket(family, kind, proto)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn does
        try:
            sock.bind(address)
        except OSError as exc:
            what = "already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            return f"cannot listen on {host}:{port}: {what}"
    return None


def settings_problem(settings: Settings) -> str | None:
    """A gateway setting that cannot be used (public_url, trusted_proxies), checked before any worker starts."""
    try:
        resolve_public_url(settings)
        parse_networks(settings.trusted_proxies)
    except SettingsError as exc:
        return str(exc)
    return None


def layout_problem(settings: Settings) -> str | None:
    """The gateway writes gw_partitions parts: it must agree with the layout `sluice migrate` stored.
    Checked once if Postgres answers; a gateway started while it is down checks nothing (it answers 503)."""
    try:
        stored = layout.load(settings.database_url)
    except psycopg2.Error:  # unreachable, or not migrated yet: the commits will say so
        return None
    try:
        layout.check(stored, "gateway", gw_partitions=settings.gw_partitions)
    except layout.LayoutMismatch as exc:
        return str(exc)
    return None


def run_gateway(settings: Settings) -> None:
    """Serve until stopped. Exits with status 78 (EX_CONFIG) on a configuration error, with one log line."""
    problem = settings_problem(settings) or bind_problem(settings.host, settings.port) or layout_problem(settings)
    if problem:
        log.error(problem, extra={"bind": f"{settings.host}:{settings.port}", "exit_status": EX_CONFIG})
        raise SystemExit(EX_CONFIG)
    prepare_dir(wipe=False)  # before any worker imports prometheus_client; `sluice up` has made it already
    log.info("gateway listening", extra={"bind": f"{settings.host}:{settings.port}",
                                         "workers": settings.gateway_workers, "threads": settings.gateway_threads})
    GatewayServer(settings).run()
