"""transformers/user_agent.py: ua-parser's results, named as RudderStack's parser names them."""

from __future__ import annotations

import pytest

from transformers import user_agent
from transformers.user_agent import EMPTY, UserAgent

MAC_CHROME = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_3) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/72.0.3626.121 Safari/537.36"
)
ANDROID_CHROME = (
    "Mozilla/5.0 (Linux; Android 13; SM-S901B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/112.0.0.0 Mobile Safari/537.36"
)


def test_desktop_agent() -> None:
    assert user_agent.parse(MAC_CHROME) == UserAgent(
        browser_name="Chrome",
        browser_version="72.0.3626.121",
        os_name="Mac OS",
        os_version="10.14.3",
        device_brand="Apple",
        device_model="Mac",
    )


def test_mobile_agent_renamed() -> None:
    parsed = user_agent.parse(ANDROID_CHROME)
    assert (parsed.browser_name, parsed.browser_version) == ("Chrome", "112.0.0.0")
    assert (parsed.os_name, parsed.os_version) == ("Android", "13")
    assert (parsed.device_brand, parsed.device_model) == ("Samsung", "SM-S901B")


@pytest.mark.parametrize("agent", ["", "   ", "garbage", None, 42])
def test_nothing_to_say(agent) -> None:
    assert user_agent.parse(agent) is EMPTY


def test_as_dict_for_mappings() -> None:
    assert user_agent.parse(MAC_CHROME).as_dict()["os"] == {"name": "Mac OS", "version": "10.14.3"}
    assert EMPTY.as_dict()["browser"] == {"name": None, "version": None}


def test_cached() -> None:
    assert user_agent.parse(MAC_CHROME) is user_agent.parse(MAC_CHROME)
