"""Browser SDKs in headless Debian Chromium (Python playwright, never a downloaded browser) against a real
gateway. The test page is served from a different port than the gateway, so every request is cross-origin
and the CORS preflight (analytics.js >= 1.84 sends Authorization) must succeed for anything to arrive."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

from tests.e2e.browser import PageWatch, loopback_only, page_wait_events, static_site
from tests.e2e.helpers import NODE_MODULES, WEB_KEY, assert_enriched, by_message_id, wait_events

AJS_UMD = NODE_MODULES / "@segment" / "analytics-next" / "dist" / "umd"
RSA_BUNDLED = NODE_MODULES / "@rudderstack" / "analytics-js" / "dist" / "npm" / "modern" / "bundled" / "umd"


def test_analytics_next_umd_cross_origin(gateway, db, browser, tmp_path):
    site = tmp_path / "site"
    shutil.copytree(AJS_UMD, site / "ajs")
    shutil.copytree(AJS_UMD, site / "analytics-next" / "bundles")  # lazy chunks: <_cdn>/analytics-next/bundles/
    api_host = f"127.0.0.1:{gateway.port}/v1"
    with static_site(site) as origin:
        assert origin != gateway.url
        (site / "index.html").write_text(f"""<!doctype html>
<html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>Sluice e2e shop</title></head><body>
<h1>shop</h1>
<script>window.analytics = {{_cdn: "{origin}"}};</script>
<script src="/ajs/index.js"></script>
<script>
  window.ajs = AnalyticsNext.AnalyticsBrowser.load(
    {{writeKey: "{WEB_KEY}",
      cdnSettings: {{integrations: {{"Segment.io": {{apiKey: "{WEB_KEY}"}}}}, metrics: {{sampleRate: 0}}}}}},
    {{integrations: {{"Segment.io": {{apiHost: "{api_host}", protocol: "http"}}}}}});
</script></body></html>""")
        context = browser.new_context()
        refused = loopback_only(context)
        try:
            page = context.new_page()
            watch = PageWatch(page, gateway.url)
            start = datetime.now(UTC)
            page.goto(origin + "/index.html?utm_source=e2e")
            # Each call resolves once the Segment.io plugin has delivered the event (or given up).
            sent = page.evaluate("""async () => {
                const ev = (ctx) => ctx.event;
                const page = ev(await window.ajs.page('Shop', 'Home', {section: 'front'}));
                const track = ev(await window.ajs.track('Product Viewed', {sku: 'sku-1', price: 9.99}));
                const ident = ev(await window.ajs.identify('browser-user-1', {email: 'lin@example.com'}));
                const after = ev(await window.ajs.track('Checkout Started', {items: 2}));
                return {page, track, ident, after, ua: navigator.userAgent, href: location.href};
            }""")
            end = datetime.now(UTC)
            assert not refused, refused
            assert not watch.failed, watch.failed
            assert not watch.http_errors, watch.http_errors
            assert not watch.console_errors, watch.console_errors
        finally:
            context.close()

    posts = [r for r in watch.posts if r.method == "POST"]
    assert sorted(r.url.rsplit("/", 1)[1] for r in posts) == ["i", "p", "t", "t"], [r.url for r in posts]
    assert all(status == 200 for _url, status in watch.responses), watch.responses
    on_wire = watch.sent()
    for _ev, headers in on_wire.values():
        assert headers["authorization"].startswith("Basic ")  # so the POST needed (and passed) a preflight
        assert headers["content-type"].startswith("text/plain")

    events = by_message_id(wait_events(db, 4))
    assert set(events) == set(on_wire)
    for mid, (wire_ev, _h) in on_wire.items():
        assert mid.startswith("ajs-next-")
        assert_enriched(events[mid], sent=wire_ev, sent_at=None, library="analytics.js", window=(start, end))

    page_ev, track, ident, after = (events[sent[k]["messageId"]] for k in ("page", "track", "ident", "after"))
    anon = sent["page"]["anonymousId"]
    assert anon and all(ev["anonymousId"] == anon for ev in (page_ev, track, ident, after))
    for ev in (page_ev, track, ident, after):
        assert ev["context"]["page"]["url"] == sent["href"] == origin + "/index.html?utm_source=e2e"
        assert ev["context"]["page"]["title"] == "Sluice e2e shop"
        assert ev["context"]["userAgent"] == sent["ua"]
    assert page_ev["type"] == "page" and page_ev["name"] == "Home" and page_ev["category"] == "Shop"
    assert page_ev["properties"]["section"] == "front" and page_ev["properties"]["url"] == sent["href"]
    assert track["event"] == "Product Viewed" and track["properties"] == {"sku": "sku-1", "price": 9.99}
    assert "userId" not in track or track["userId"] is None
    assert ident["type"] == "identify" and ident["userId"] == "browser-user-1"
    assert ident["traits"] == {"email": "lin@example.com"}
    assert after["userId"] == "browser-user-1" and after["event"] == "Checkout Started"


def test_rudderstack_js_v3_bundled_cross_origin(gateway, db, browser, tmp_path):
    site = tmp_path / "site"
    shutil.copytree(RSA_BUNDLED, site / "rsa")
    with static_site(site) as origin:
        (site / "index.html").write_text(f"""<!doctype html>
<html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>Sluice e2e rudder</title></head><body>
<script src="/rsa/index.js"></script>
<script>
  window.rs = new rudderanalytics.RudderAnalytics();
  window.rs.load("{WEB_KEY}", "{gateway.url}", {{
    getSourceConfig: () => ({{source: {{id: "src-web", name: "web", enabled: true, workspaceId: "ws-test",
                                       config: {{}}, destinations: []}}}})
  }});
</script></body></html>""")
        context = browser.new_context()
        refused = loopback_only(context)
        try:
            page = context.new_page()
            watch = PageWatch(page, gateway.url)
            start = datetime.now(UTC)
            page.goto(origin + "/index.html")
            page.evaluate("""() => new Promise((resolve) => window.rs.ready(() => {
                window.rs.page('Docs', 'Intro', {section: 'top'});
                window.rs.track('Doc Read', {doc: 'intro', minutes: 3});
                window.rs.identify('rs-browser-user', {plan: 'free'});
                window.rs.track('Doc Shared', {channel: 'mail'});
                resolve();
            }))""")
            events = by_message_id(page_wait_events(page, db, 4))
            end = datetime.now(UTC)
            assert not refused, refused
            assert not watch.failed, watch.failed
            assert not watch.http_errors, watch.http_errors
            ua = page.evaluate("navigator.userAgent")
        finally:
            context.close()

    on_wire = watch.sent()
    assert set(events) == set(on_wire)
    assert all(status == 200 for _url, status in watch.responses), watch.responses
    for mid, (wire_ev, headers) in on_wire.items():
        assert headers["authorization"].startswith("Basic ") and "anonymousid" in headers
        assert_enriched(events[mid], sent=wire_ev, sent_at=None, library="RudderLabs JavaScript SDK",
                        window=(start, end))
        assert events[mid]["context"]["page"]["url"] == origin + "/index.html"
        assert events[mid]["context"]["userAgent"] == ua
    by_event = {ev.get("event") or ev["type"]: ev for ev in events.values()}
    anon = by_event["page"]["anonymousId"]
    assert anon and all(ev["anonymousId"] == anon for ev in events.values())
    assert by_event["page"]["name"] == "Intro" and by_event["page"]["category"] == "Docs"
    assert by_event["Doc Read"]["properties"] == {"doc": "intro", "minutes": 3}
    assert by_event["identify"]["userId"] == "rs-browser-user"
    assert by_event["identify"]["context"]["traits"]["plan"] == "free"
    assert by_event["Doc Shared"]["userId"] == "rs-browser-user"
