"""RudderStack's browser SDKs, loaded exactly as the README's snippets say (v1.1 `rudder-sdk-js` and v3
`@rudderstack/analytics-js`), in headless Chromium against a real gateway, with every request to a host
other than 127.0.0.1 refused: the SDK fetches its source config from Sluice and sends every call there.
The page is served from another port, so the source-config fetch and every event are cross-origin."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import gw_events
from tests.e2e.browser import PageWatch, loopback_only, page_wait_events, snippet_page, static_site
from tests.e2e.helpers import NODE_MODULES, WEB_KEY, assert_enriched, by_message_id
from tests.support.workspace import DISABLED_KEY

SDKS = {
    # README snippet name: (the npm file the README says to serve, the library name in context)
    "rudder-sdk-js": (NODE_MODULES / "rudder-sdk-js" / "dist" / "npm" / "index.js", "RudderLabs JavaScript SDK"),
    "rudderstack-analytics-js": (NODE_MODULES / "@rudderstack" / "analytics-js" / "dist" / "npm" / "modern"
                                 / "bundled" / "umd" / "index.js", "RudderLabs JavaScript SDK"),
}
# rudder-sdk-js prints this on every load (as console.error); it is the package's, not a failure.
DEPRECATION_NOTICE = "This RudderStack JavaScript SDK package is deprecated"

CALLS = """() => new Promise((resolve) => rudderanalytics.ready(() => {
    rudderanalytics.track('Doc Read', {doc: 'intro', minutes: 3});
    rudderanalytics.identify('rs-user-1', {plan: 'free'});
    rudderanalytics.group('org-1', {name: 'Acme'});
    rudderanalytics.alias('rs-user-2');
    resolve({ua: navigator.userAgent, href: location.href, anon: rudderanalytics.getAnonymousId()});
}))"""


@pytest.mark.parametrize("sdk", SDKS)
def test_readme_snippet_delivers_every_call_type(gateway, db, browser, tmp_path, sdk):
    sdk_file, library = SDKS[sdk]
    assert sdk_file.is_file(), f"{sdk_file} missing: run `make test-deps` (npm ci in tests/e2e)"
    html, src = snippet_page(sdk, WEB_KEY, gateway.url, f"Sluice e2e {sdk}")
    site = tmp_path / "site"
    (site / src.lstrip("/")).parent.mkdir(parents=True)
    shutil.copy(sdk_file, site / src.lstrip("/"))
    (site / "index.html").write_text(html)

    with static_site(site) as origin:
        context = browser.new_context()
        refused = loopback_only(context)
        try:
            page = context.new_page()
            watch = PageWatch(page, gateway.url)
            start = datetime.now(UTC)
            page.goto(origin + "/index.html")
            seen = page.evaluate(CALLS)
            try:
                events = by_message_id(page_wait_events(page, db, 5))
            except AssertionError as exc:
                raise AssertionError(f"{exc}; refused {refused}, gateway {watch.responses}, failed {watch.failed}, "
                                     f"console {watch.console_errors}") from None
            end = datetime.now(UTC)
            page.wait_for_load_state("networkidle")
        finally:
            context.close()

    assert not refused, f"the page asked a third party for {refused}"
    assert not watch.failed, watch.failed
    assert not watch.http_errors, watch.http_errors
    assert [e for e in watch.console_errors if DEPRECATION_NOTICE not in e] == []

    # The SDK asked Sluice for its source config, with its write key, and got it.
    config_gets = [r for r in watch.posts if r.method == "GET" and "/sourceConfig" in r.url]
    assert len(config_gets) == 1, [r.url for r in watch.posts]
    assert urlsplit(config_gets[0].url).path == "/sourceConfig/"
    assert parse_qs(urlsplit(config_gets[0].url).query)["writeKey"] == [WEB_KEY]
    assert all(status == 200 for _url, status in watch.responses), watch.responses

    on_wire = watch.sent()
    assert set(events) == set(on_wire)
    for mid, (wire_ev, headers) in on_wire.items():
        assert headers["authorization"].startswith("Basic ")  # so every POST passed a CORS preflight
        assert_enriched(events[mid], sent=wire_ev, sent_at=None, library=library, window=(start, end))
        assert events[mid]["context"]["page"]["url"] == seen["href"] == origin + "/index.html"
        assert events[mid]["context"]["userAgent"] == seen["ua"]
        assert events[mid]["anonymousId"] == seen["anon"]

    by_type = {ev["type"]: ev for ev in events.values()}
    assert sorted(by_type) == ["alias", "group", "identify", "page", "track"]
    assert by_type["track"]["event"] == "Doc Read" and by_type["track"]["properties"] == {"doc": "intro", "minutes": 3}
    assert by_type["identify"]["userId"] == "rs-user-1"
    assert by_type["identify"]["context"]["traits"]["plan"] == "free"
    assert by_type["group"]["groupId"] == "org-1" and by_type["group"]["traits"] == {"name": "Acme"}
    assert by_type["group"]["userId"] == "rs-user-1"
    assert by_type["alias"]["userId"] == "rs-user-2" and by_type["alias"]["previousId"] == "rs-user-1"


@pytest.mark.parametrize("sdk", SDKS)
def test_disabled_source_gets_404_and_the_sdk_sends_nothing(gateway, db, browser, tmp_path, sdk):
    """What docs/operations.md promises for a source switched off in the workspace config."""
    sdk_file, _library = SDKS[sdk]
    html, src = snippet_page(sdk, DISABLED_KEY, gateway.url, f"Sluice e2e {sdk} disabled")
    site = tmp_path / "site"
    (site / src.lstrip("/")).parent.mkdir(parents=True)
    shutil.copy(sdk_file, site / src.lstrip("/"))
    (site / "index.html").write_text(html)
    with static_site(site) as origin:
        context = browser.new_context()
        refused = loopback_only(context)
        try:
            page = context.new_page()
            watch = PageWatch(page, gateway.url)
            page.goto(origin + "/index.html")
            page.evaluate("() => rudderanalytics.track('Never Sent')")
            page.wait_for_timeout(1500)
        finally:
            context.close()
    assert not refused, refused
    assert [status for url, status in watch.responses if "/sourceConfig/" in url] == [404]
    assert not [r.url for r in watch.posts if r.method == "POST"]
    assert gw_events(db) == []
