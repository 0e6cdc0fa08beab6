"""Settings that cannot hold are refused at start, with the reason, and exit 78 (restarting will not help)."""

from __future__ import annotations

from tests.support.procs import SluiceProcess, wait_for
from tests.support.workspace import basic_workspace, write


def start(role: str, dsn: str, tmp_path, **settings) -> SluiceProcess:
    config = write(tmp_path / "workspace-config.json", basic_workspace())
    env = {"SLUICE_DATABASE_URL": dsn, "SLUICE_CONFIG": str(config)}
    env.update({f"SLUICE_{k.upper()}": str(v) for k, v in settings.items()})
    return SluiceProcess(role, env, tmp_path)


def exit_code(proc: SluiceProcess) -> int:
    wait_for(lambda: not proc.alive(), 30, what=f"{proc.role} to refuse")
    return proc.proc.returncode


def test_router_timeout_against_lease(dsn, tmp_path):
    proc = start("router", dsn, tmp_path, lease_seconds=6, router_timeout=5)
    assert exit_code(proc) == 78
    out = proc.output()
    assert "SLUICE_ROUTER_TIMEOUT (5 s)" in out and "SLUICE_LEASE_SECONDS (6 s)" in out
    proc.stop()


def test_partition_counts_must_match_the_database(dsn, tmp_path):
    router = start("router", dsn, tmp_path, router_partitions=8)
    processor = start("processor", dsn, tmp_path, gw_partitions=4)
    try:
        assert exit_code(router) == 78
        assert "router_partitions is 8 here (SLUICE_ROUTER_PARTITIONS) but 16 in the database" in router.output()
        assert exit_code(processor) == 78
        assert "gw_partitions is 4 here (SLUICE_GW_PARTITIONS) but 16 in the database" in processor.output()
    finally:
        router.stop()
        processor.stop()
