"""The `sluice` command: one entry point for every process and operator task."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable

from config.logs import setup_logging
from config.settings import Settings, SettingsError, load_settings
from jobsdb.db import UNAVAILABLE_ERRORS, redact_dsn
from jobsdb.layout import LayoutMismatch

# Flags shared by the commands that touch the database or the config. Each also reads SLUICE_<NAME>.
COMMON_FLAGS = {
    "database_url": ("--database-url", str, "Postgres URL; empty: the embedded Postgres under --data-dir "
                     "(started by `sluice up` and `sluice migrate`; the other commands use it when it runs)"),
    "data_dir": ("--data-dir", str, "where the embedded Postgres keeps its data"),
    "config": ("--config", str, "workspace config file"),
    "log_level": ("--log-level", str, "DEBUG, INFO, WARNING or ERROR"),
}
GATEWAY_FLAGS = {
    "host": ("--host", str, "address the gateway binds"),
    "port": ("--port", int, "gateway port"),
    "gateway_workers": ("--workers", int, "gunicorn worker processes"),
    "gateway_threads": ("--threads", int, "threads per gateway worker"),
}
UP_FLAGS = {
    "roles": ("--roles", str, "roles this machine runs, comma-separated: gateway, processor, router, admin "
                              "(admin is added when SLUICE_ADMIN_TOKEN is set)"),
    "processors": ("--processors", int, "processor processes to run"),
    "routers": ("--routers", int, "router processes to run"),
}
ROLES = ("gateway", "processor", "router", "admin")


def _add_flags(parser: argparse.ArgumentParser, flags: dict) -> None:
    for name, (flag, kind, text) in flags.items():
        parser.add_argument(flag, dest=name, type=kind, default=None,
                            help=f"{text} (env SLUICE_{name.upper()})")


def _settings(args: argparse.Namespace) -> Settings:
    """The settings (a SettingsError ends the command with EX_CONFIG, see main)."""
    flags = (*COMMON_FLAGS, *GATEWAY_FLAGS, *UP_FLAGS)
    return load_settings({k: getattr(args, k) for k in flags if getattr(args, k, None) is not None})


def _need_database(settings: Settings) -> Settings:
    """The settings with a database URL: SLUICE_DATABASE_URL, else the embedded Postgres `sluice up` runs."""
    if settings.database_url:
        return settings
    from pathlib import Path

    from jobsdb.embedded import EmbeddedPostgres

    pg = EmbeddedPostgres(Path(settings.data_dir))
    port = pg.running_port() if (pg.pgdata / "PG_VERSION").exists() else None
    if port is None:
        raise SystemExit("sluice: no database: set SLUICE_DATABASE_URL, or run `sluice up` to start the embedded one")
    try:
        pg.password = pg.read_password()
    except PermissionError:
        raise SystemExit(f"sluice: cannot read {pg.password_file}: run this as the user who runs `sluice up`, "
                         "or set SLUICE_DATABASE_URL") from None
    if not pg.password:
        raise SystemExit(f"sluice: {pg.password_file} is missing: restart `sluice up` to set a new password")
    pg.port = port
    return dataclasses.replace(settings, database_url=pg.dsn)


def up_roles(settings: Settings) -> tuple[str, ...]:
    """What `sluice up` runs on this machine: SLUICE_ROLES, plus the admin API when a token is configured
    (never open by default). Raises SettingsError for an unknown or impossible role list."""
    names = [r.strip().lower() for r in settings.roles.split(",") if r.strip()]
    unknown = [r for r in names if r not in ROLES]
    if unknown:
        raise SettingsError(f"SLUICE_ROLES: unknown role {', '.join(map(repr, unknown))}; "
                            f"choose among {', '.join(ROLES)} (comma-separated)")
    if settings.admin_token and "admin" not in names:
        names.append("admin")
    if "admin" in names and not settings.admin_token:
        raise SettingsError("SLUICE_ROLES: the admin role needs SLUICE_ADMIN_TOKEN (the API is never open)")
    if not names:
        raise SettingsError("SLUICE_ROLES: no role to run; choose among " + ", ".join(ROLES))
    for role, count in (("processor", settings.processors), ("router", settings.routers)):
        if role in names and count < 1:
            raise SettingsError(f"SLUICE_{role.upper()}S must be at least 1 "
                                f"(leave {role} out of SLUICE_ROLES to run none here), found {count}")
    return tuple(r for r in ROLES if r in names)


# ---- commands -------------------------------------------------------------------------------------------

def cmd_up(args) -> int:
    from ops.supervisor import Supervisor

    settings = _settings(args)
    setup_logging("up", settings.log_level)
    return Supervisor(settings, up_roles(settings)).run()


def cmd_gateway(args) -> int:
    from gateway.server import run_gateway

    settings = _need_database(_settings(args))
    setup_logging("gateway", settings.log_level)
    run_gateway(settings)
    return 0


def cmd_role(role: str) -> Callable:
    def run(args) -> int:
        module = importlib.import_module(f"{role}.run")
        settings = _need_database(_settings(args))
        setup_logging(role, settings.log_level)
        return module.main(settings) or 0

    return run


def cmd_migrate(args) -> int:
    from jobsdb.migrate import migrate

    settings = _settings(args)
    if not settings.database_url:
        from pathlib import Path

        from jobsdb.embedded import EmbeddedPostgres

        pg = EmbeddedPostgres(Path(settings.data_dir))
        started = pg.running_port() is None
        dsn = pg.start()
        try:
            applied = migrate(dsn, settings.jobs_per_dataset, settings.gw_partitions, settings.router_partitions)
        finally:
            if started:
                pg.stop()
    else:
        applied = migrate(settings.database_url, settings.jobs_per_dataset, settings.gw_partitions,
                          settings.router_partitions)
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    return 0


def cmd_config_check(args) -> int:
    from config.workspace import main_check

    path = args.file or _settings(args).config
    return main_check(path)


def cmd_jobs(args) -> int:
    from ops.jobs import collect, render

    settings = _need_database(_settings(args))
    report = collect(settings.database_url)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(render(report))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sluice", description="Sluice: a self-hosted customer-data router.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable, text: str, flags: tuple[dict, ...] = (COMMON_FLAGS,)):
        p = sub.add_parser(name, help=text, description=text)
        for f in flags:
            _add_flags(p, f)
        p.set_defaults(func=func)
        return p

    add("up", cmd_up, "start Postgres (embedded unless SLUICE_DATABASE_URL), migrate, and run this machine's "
        "roles (SLUICE_ROLES; SLUICE_PROCESSORS processors, SLUICE_ROUTERS routers), restarting any that dies; "
        "exits 78 on a configuration error", (COMMON_FLAGS, GATEWAY_FLAGS, UP_FLAGS))
    add("gateway", cmd_gateway, "run the HTTP gateway (gunicorn)", (COMMON_FLAGS, GATEWAY_FLAGS))
    add("processor", cmd_role("processor"), "run the processor: dedup, fan-out, transformations")
    add("router", cmd_role("router"), "run the router: delivery with retries, per-user order")
    add("migrate", cmd_migrate, "apply database migrations")
    config = sub.add_parser("config", help="workspace config commands")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    check = config_sub.add_parser("check", help="check a workspace config file and print every problem",
                                  description="Check a workspace config file; prints each problem with its JSON path.")
    check.add_argument("file", nargs="?", help="the file (default: SLUICE_CONFIG or ./workspace-config.json)")
    _add_flags(check, COMMON_FLAGS)
    check.set_defaults(func=cmd_config_check)
    jobs = add("jobs", cmd_jobs, "queue depths per queue and state, oldest pending age, failures")
    jobs.add_argument("--json", action="store_true", help="print JSON instead of a table")
    extra = importlib.import_module("ops.commands") if _has("ops.commands") else None
    if extra is not None:
        extra.register(sub, add, COMMON_FLAGS)
    return parser


def _has(module: str) -> bool:
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        return 130
    except UNAVAILABLE_ERRORS as exc:
        # One line, never a traceback: which database, and what it answered (never the password).
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"sluice {args.command}: cannot reach the database: {redact_dsn(first)}", file=sys.stderr)
        return 1
    except (SettingsError, LayoutMismatch) as exc:
        # Restarting will not help: EX_CONFIG tells `sluice up` (or systemd, or an orchestrator) to stop trying.
        if not logging.getLogger().handlers:
            setup_logging(args.command)
        logging.getLogger("sluice").error("configuration error, not starting",
                                          extra={"command": args.command, "error": str(exc)})
        return os.EX_CONFIG


if __name__ == "__main__":
    sys.exit(main())
