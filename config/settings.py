"""Typed service settings: YAML defaults, SLUICE_* environment overrides, CLI flags on top, parsed once."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DEFAULTS_FILE = Path(__file__).with_name("defaults.yaml")
ENV_PREFIX = "SLUICE_"


class SettingsError(ValueError):
    pass


@dataclass(frozen=True)
class Settings:
    database_url: str = ""
    data_dir: str = ".sluice"
    config: str = "./workspace-config.json"
    config_poll_interval: float = 5.0
    host: str = "0.0.0.0"
    port: int = 8080
    log_level: str = "INFO"
    gateway_workers: int = 2
    gateway_threads: int = 32
    gateway_worker_class: str = "gevent"
    group_commit_max_wait_ms: float = 2.0
    group_commit_max_events: int = 5000
    max_event_size: int = 32768
    max_request_size: int = 4194304
    max_batch_events: int = 2500
    trust_forwarded_for: bool = True
    trusted_proxies: str = "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7"
    public_url: str = ""
    rate_limit_enabled: bool = False
    rate_limit_events: int = 1000
    rate_limit_window: float = 60.0
    jobs_per_dataset: int = 100000
    retention_hours: float = 24.0
    lease_seconds: float = 60.0
    gw_partitions: int = 16
    janitor_interval_seconds: float = 10.0
    heartbeat_seconds: float = 5.0
    gw_rejected_retention_hours: float = 48.0
    gw_rejected_per_minute: int = 600
    gw_rejected_unauthenticated_bytes: int = 2048
    processor_batch_size: int = 1000
    processor_idle_sleep: float = 0.05
    dedup_enabled: bool = True
    dedup_window_seconds: float = 3600.0
    transform_time_limit_ms: int = 4000
    transform_memory_limit_mb: int = 128
    transform_batch_size: int = 200
    failed_jobs_retention_days: float = 30.0
    poison_attempts: int = 3
    transform_max_output_bytes: int = 1048576
    transform_workers: int = 1
    router_partitions: int = 16
    router_workers: int = 8
    router_max_attempts: int = 3
    router_retry_window_seconds: float = 10800.0
    router_min_backoff: float = 10.0
    router_max_backoff: float = 300.0
    router_timeout: float = 30.0
    router_batch_size: int = 500
    router_rate_limits: str = ""
    router_retry_overrides: str = ""
    endpoint_overrides: str = ""
    warehouse_sync_seconds: float = 0.0
    warehouse_sync_events: int = 100000
    warehouse_batch_size: int = 20000
    warehouse_connect_timeout: float = 10.0
    admin_token: str = ""
    admin_host: str = "127.0.0.1"
    admin_port: int = 8081
    roles: str = "gateway,processor,router"
    processors: int = 1
    routers: int = 1

    @property
    def endpoint_override_map(self) -> dict[str, str]:
        if not self.endpoint_overrides:
            return {}
        try:
            value = json.loads(self.endpoint_overrides)
        except json.JSONDecodeError as exc:
            raise SettingsError(f"SLUICE_ENDPOINT_OVERRIDES: expected a JSON object, {exc}") from exc
        if not isinstance(value, dict):
            raise SettingsError("SLUICE_ENDPOINT_OVERRIDES: expected a JSON object of prefix -> prefix")
        return {str(k): str(v) for k, v in value.items()}

    def env_for_children(self) -> dict[str, str]:
        """The settings as SLUICE_* variables, so child processes parse the same values."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[ENV_PREFIX + f.name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
        return out


def _coerce(name: str, raw: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
        raise SettingsError(f"{name}: expected a boolean (true/false), found {raw!r}")
    try:
        return kind(raw)
    except (TypeError, ValueError):
        raise SettingsError(f"{name}: expected {kind.__name__}, found {raw!r}") from None


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    defaults_file: Path | None = None,
) -> Settings:
    env = os.environ if env is None else env
    kinds = {f.name: f.type for f in dataclasses.fields(Settings)}
    type_map = {"str": str, "int": int, "float": float, "bool": bool}
    values: dict[str, Any] = {}
    with open(defaults_file or DEFAULTS_FILE) as fh:
        data = yaml.safe_load(fh) or {}
    for key, raw in data.items():
        if key not in kinds:
            raise SettingsError(f"{defaults_file or DEFAULTS_FILE}: unknown setting {key!r}")
        values[key] = raw
    for key in kinds:
        env_key = ENV_PREFIX + key.upper()
        if env_key in env:
            values[key] = env[env_key]
    for key, raw in (overrides or {}).items():
        if raw is None:
            continue
        if key not in kinds:
            raise SettingsError(f"unknown setting {key!r}")
        values[key] = raw
    typed = {}
    for key, raw in values.items():
        kind = type_map[kinds[key]] if isinstance(kinds[key], str) else kinds[key]
        typed[key] = _coerce(ENV_PREFIX + key.upper(), raw, kind)
    return Settings(**typed)
