"""DESIGN §1: dependencies point one way. gateway, processor, router, ops → jobsdb, config, transformers;
transformers imports nothing of ours; jobsdb and config import no pipeline stage (config may read the
destination registry in transformers)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"gateway", "processor", "router", "transformers", "config", "jobsdb", "ops"}
FORBIDDEN = {
    "transformers": OURS - {"transformers"},
    "jobsdb": {"gateway", "processor", "router", "ops", "transformers"},
    # config asks the destination registry (transformers/registry.py), which imports nothing of ours.
    "config": {"gateway", "processor", "router", "ops", "jobsdb"},
    "gateway": {"processor", "router", "ops"},
    "processor": {"gateway", "router", "ops"},
    "router": {"gateway", "processor", "ops"},
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_point_one_way(package):
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        wrong = imports_of(path) & FORBIDDEN[package]
        if wrong:
            bad.append(f"{path.relative_to(ROOT)} imports {sorted(wrong)}")
    assert bad == []
