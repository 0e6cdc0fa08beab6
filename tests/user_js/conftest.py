"""Fixtures for the user JavaScript runtime tests: pure, no database."""

import pytest

from transformers.user_js import UserTransformer


@pytest.fixture
def transformer():
    runner = UserTransformer(time_limit_ms=2000)
    yield runner
    runner.close()
