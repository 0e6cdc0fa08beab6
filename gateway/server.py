"""Runs the gateway under gunicorn (gthread workers); each worker owns its group committer and config watcher."""

from __future__ import annotations

import logging

from gunicorn.app.base import BaseApplication

from config.logs import setup_logging
from config.metrics import mark_process_dead, prepare_dir
from config.settings import Settings
from config.workspace import WorkspaceWatcher
from gateway.app import create_app
from gateway.group_commit import GroupCommitter

log = logging.getLogger("sluice.gateway")


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
                               settings.group_commit_max_events, offload=offload).start()
    return create_app(settings, watcher, committer, processes=settings.gateway_workers, offload=offload)


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
        self.cfg.set("loglevel", "warning")
        self.cfg.set("proc_name", "sluice-gateway")

        def post_fork(server, worker):
            setup_logging("gateway", s.log_level)

        def child_exit(server, worker):
            mark_process_dead(worker.pid)

        self.cfg.set("post_fork", post_fork)
        self.cfg.set("child_exit", child_exit)

    def load(self):
        return build_app(self.settings)


def run_gateway(settings: Settings) -> None:
    prepare_dir(wipe=False)  # before any worker imports prometheus_client; `sluice up` has made it already
    log.info("gateway listening", extra={"bind": f"{settings.host}:{settings.port}",
                                         "workers": settings.gateway_workers, "threads": settings.gateway_threads})
    GatewayServer(settings).run()
