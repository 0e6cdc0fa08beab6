"""User-agent strings parsed by `ua-parser` (the uap-core rules), for destinations that derive device
fields from `context.userAgent`.

Names are given as RudderStack's transformer reports them (it parses with ua-parser-js), so payloads
compare equal with RudderStack's: uap-core says "Mac OS X" or "Chrome Mobile" where ua-parser-js says
"Mac OS" or "Chrome". Only the family name is renamed; the parsing is the library's.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import ua_parser

# uap-core family -> ua-parser-js name, where the two differ for common agents.
BROWSER_NAMES = {
    "Chrome Mobile": "Chrome",
    "Chrome Mobile iOS": "Chrome Mobile",
    "Chrome Mobile WebView": "Chrome WebView",
    "HeadlessChrome": "Chrome Headless",
    "Firefox Mobile": "Mobile Firefox",
    "Firefox iOS": "Firefox",
    "Edge Mobile": "Edge",
    "Samsung Internet": "Samsung Browser",
    "Yandex Browser": "Yandex",
    "UC Browser": "UCBrowser",
}
OS_NAMES = {
    "Mac OS X": "Mac OS",
    "Chrome OS": "Chromium OS",
}
UNKNOWN = "Other"  # uap-core's family when nothing matched


@dataclass(frozen=True)
class UserAgent:
    """What a user agent says; None where the parser found nothing."""

    browser_name: str | None = None
    browser_version: str | None = None
    os_name: str | None = None
    os_version: str | None = None
    device_brand: str | None = None
    device_model: str | None = None

    def as_dict(self) -> dict:
        """`{"browser": {"name", "version"}, "os": {...}, "device": {"brand", "model"}}`, for mappings."""
        return {
            "browser": {"name": self.browser_name, "version": self.browser_version},
            "os": {"name": self.os_name, "version": self.os_version},
            "device": {"brand": self.device_brand, "model": self.device_model},
        }


EMPTY = UserAgent()


def _version(*parts: str | None) -> str | None:
    present = []
    for part in parts:
        if part is None or part == "":
            break
        present.append(part)
    return ".".join(present) or None


def _family(family: str | None, renames: dict[str, str]) -> str | None:
    if not family or family == UNKNOWN:
        return None
    return renames.get(family, family)


@functools.lru_cache(maxsize=4096)
def parse(user_agent: str) -> UserAgent:
    """The parsed user agent (cached: a stream repeats the same few agents); EMPTY if it says nothing."""
    if not isinstance(user_agent, str) or not user_agent.strip():
        return EMPTY
    result = ua_parser.parse(user_agent)
    browser, os, device = result.user_agent, result.os, result.device
    browser_name = _family(browser.family, BROWSER_NAMES) if browser else None
    os_name = _family(os.family, OS_NAMES) if os else None
    parsed = UserAgent(
        browser_name=browser_name,
        # a version without a name would be a version of nothing
        browser_version=_version(browser.major, browser.minor, browser.patch, browser.patch_minor)
        if browser and browser_name
        else None,
        os_name=os_name,
        os_version=_version(os.major, os.minor, os.patch, os.patch_minor) if os and os_name else None,
        device_brand=(device.brand or None) if device else None,
        device_model=(device.model or None) if device else None,
    )
    return EMPTY if parsed == EMPTY else parsed
