"""Fixtures for the end-to-end tests with real clients."""

from __future__ import annotations

import pytest

from tests.e2e.browser import chromium


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b
