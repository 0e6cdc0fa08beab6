"""The admin page in stock Debian Firefox (firefox-esr, headless), driven over Marionette with Mozilla's
marionette_driver: no patched browser build and no geckodriver. The stack is test_admin_page.py's (gateway,
processor, router and `sluice admin` on a real Postgres, destinations played by FakeDestination). Each view
is checked at 1280x800 and at phone width (390x844): heading and a known value visible, no horizontal
overflow of the document (wide tables scroll inside their own .table-wrap). Screenshots go to
tmp_path/screens."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import uuid
from pathlib import Path

import pytest
from marionette_driver.marionette import Marionette

from tests.ops.test_admin_page import TOKEN, db_wait, stack, track  # noqa: F401 - stack is a fixture
from tests.support.procs import free_port, wait_for

FIREFOX = "/usr/bin/firefox-esr"
DESKTOP = (1280, 800)
PHONE = (390, 844)


class Firefox:
    """One headless firefox-esr with its own profile; Marionette on a loopback port. Every request to
    another host goes to a proxy port nobody listens on, so nothing the page asks for leaves the machine."""

    def __init__(self, profile: Path):
        profile.mkdir()
        self._dead = socket.socket()  # bound, never listening: connecting to it is refused at once
        self._dead.bind(("127.0.0.1", 0))
        dead_port = self._dead.getsockname()[1]
        port = free_port()
        prefs = {"marionette.port": port, "network.proxy.type": 1, "network.proxy.http": "127.0.0.1",
                 "network.proxy.http_port": dead_port, "network.proxy.ssl": "127.0.0.1",
                 "network.proxy.ssl_port": dead_port, "network.proxy.allow_hijacking_localhost": False,
                 "browser.shell.checkDefaultBrowser": False, "datareporting.policy.dataSubmissionEnabled": False}
        (profile / "user.js").write_text("".join(f"user_pref({_js(k)}, {_js(v)});\n" for k, v in prefs.items()))
        self.log = open(profile.parent / "firefox.log", "w")  # noqa: SIM115 - closed in stop()
        # -remote-allow-system-access: the viewport is set on the browser element, as WebDriver BiDi's
        # browsingContext.setViewport does (a window cannot be narrower than Firefox's toolbars).
        self.proc = subprocess.Popen([FIREFOX, "--headless", "--marionette", "-remote-allow-system-access",
                                      "--no-remote", "--profile", str(profile)],
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.client = Marionette(host="127.0.0.1", port=port, startup_timeout=60)
        self.client.start_session()

    def js(self, script: str, *args):
        return self.client.execute_script(script, script_args=list(args), new_sandbox=False)

    def go(self, url: str) -> None:
        self.client.navigate(url)

    def set_viewport(self, width: int, height: int) -> None:
        m = self.client
        with m.using_context(m.CONTEXT_CHROME):
            m.execute_script("""
                const [w, h] = arguments, b = gBrowser.selectedBrowser;
                for (const p of ['width', 'min-width', 'max-width']) b.style.setProperty(p, w + 'px');
                for (const p of ['height', 'min-height', 'max-height']) b.style.setProperty(p, h + 'px');
            """, script_args=[width, height])
        wait_for(lambda: self.js("return [window.innerWidth, window.innerHeight]") == [width, height],
                 timeout=10, what=f"the viewport to be {width}x{height}")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.client.delete_session()
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.log.close()
        self._dead.close()


def _js(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, int) else '"' + value + '"'


@pytest.fixture
def firefox(tmp_path):
    assert Path(FIREFOX).exists(), "Debian firefox-esr is required (make test-deps installs it)"
    ff = Firefox(tmp_path / "firefox-profile")
    try:
        yield ff
    finally:
        ff.stop()


# What one view looks like to the reader: the document's width against the viewport, every table wrapper,
# and any element that sticks out of the viewport without a scrolling (or clipping) ancestor to hold it.
LAYOUT = """
const doc = document.documentElement, vw = doc.clientWidth;  // the viewport less a vertical scrollbar
const held = el => { for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
    if (getComputedStyle(a).overflowX !== 'visible') return true; } return false; };
const name = el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
    (el.className && typeof el.className === 'string' ? '.' + el.className.trim().replace(/\\s+/g, '.') : '');
const sticking = [...document.body.querySelectorAll('*')].filter(el => {
    const r = el.getBoundingClientRect(); return r.width > 0 && (r.right > vw + 1 || r.left < -1) && !held(el); });
return {
  viewport: window.innerWidth, client_width: vw, scroll_width: doc.scrollWidth, body_width: document.body.getBoundingClientRect().width,
  wraps: [...document.querySelectorAll('.table-wrap')].filter(w => w.getClientRects().length).map(w => ({
    table: (w.querySelector('table') || {}).id || (w.querySelector('table') || {}).className || '?',
    right: w.getBoundingClientRect().right, overflow_x: getComputedStyle(w).overflowX,
    scrolls: w.scrollWidth > w.clientWidth})),
  sticking_out: sticking.slice(0, 10).map(name),
};
"""

# The element is rendered, inside the viewport horizontally, and shows the text.
VISIBLE = """
const [sel, text] = arguments, el = document.querySelector(sel);
if (!el) return 'no ' + sel;
const r = el.getBoundingClientRect(), s = getComputedStyle(el);
if (!r.width || !r.height || s.visibility !== 'visible' || s.display === 'none') return sel + ' is not rendered';
if (r.left < 0 || r.left >= window.innerWidth) return sel + ' starts outside the viewport (left ' + r.left + ')';
if (!el.innerText.includes(text)) return sel + ' shows ' + JSON.stringify(el.innerText) + ', not ' + text;
return 'ok';
"""


def shown(ff: Firefox, selector: str, text: str) -> bool:
    answer = ff.js(VISIBLE, selector, text)
    assert answer == "ok", answer  # wait_for reports the last one
    return True


def check_view(ff: Firefox, admin_url: str, screens: Path, view: str, heading: str,
               known: list[tuple[str, str]]) -> dict:
    width, _ = ff.js("return [window.innerWidth, window.innerHeight]")
    assert ff.js(VISIBLE, "main h1", heading) == "ok"
    assert ff.js("return document.querySelector('main h1').innerText") == heading
    for selector, text in known:
        wait_for(lambda s=selector, t=text: shown(ff, s, t), timeout=10, what=f"{view} at {width}: {selector}")
    layout = ff.js(LAYOUT)
    assert layout["viewport"] == width
    # No horizontal scrolling of the page: not wider than the viewport, nor than the part of it beside a
    # vertical scrollbar (Firefox's takes 12 px here; Chromium's headless ones overlay).
    fits = layout["client_width"]
    assert layout["scroll_width"] <= fits <= width, (view, width, layout)
    assert layout["body_width"] <= fits, (view, width, layout)
    assert layout["sticking_out"] == [], (view, width, layout)
    for wrap in layout["wraps"]:  # a wide table scrolls inside its wrapper, which fits the viewport
        assert wrap["right"] <= fits + 0.5 and wrap["overflow_x"] == "auto", (view, width, wrap)
    if width >= DESKTOP[0]:  # at 1280 every table fits: nothing hidden to the side
        assert [w["table"] for w in layout["wraps"] if w["scrolls"]] == [], (view, width, layout)
    resources = ff.js("return performance.getEntriesByType('resource').map(e => e.name)")
    assert [u for u in resources if not u.startswith(admin_url)] == [], resources
    png = screens / f"{view}-{width}.png"
    png.write_bytes(ff.client.screenshot(format="binary", full=True))
    assert png.stat().st_size > 1000
    return layout


def test_admin_views_are_readable_in_firefox_at_desktop_and_phone_width(stack, firefox, tmp_path):  # noqa: F811
    screens = tmp_path / "screens"
    screens.mkdir()
    url = stack.admin_url
    # Something in every view: delivered (hook-ok, am-1), a dead letter (hook-bad), a retry (hook-retry).
    first = f"ff-{uuid.uuid4().hex[:10]}"
    stack.send(track("firefox-user", "Firefox Opened", mid=first))

    ff = firefox
    ff.set_viewport(*DESKTOP)
    ff.go(url + "/admin/ui/overview")
    assert "/admin/login" in ff.js("return location.pathname")
    ff.client.find_element("css selector", "#token").send_keys(TOKEN)
    ff.client.find_element("css selector", "button[type=submit]").click()
    wait_for(lambda: ff.js("return location.pathname") == "/admin/ui/overview", timeout=10,
             what="the overview after logging in")

    # The live tail shows an event sent to the gateway now, then its deliveries.
    ff.go(url + "/admin/ui/live")
    wait_for(lambda: ff.js("return document.getElementById('live-state').textContent") == "live", timeout=10,
             what="the live tail to connect")
    mid = f"ff-{uuid.uuid4().hex[:10]}"
    stack.send(track("firefox-live", "Firefox Live", mid=mid))
    accepted = f"#live-rows tr[data-message-id='{mid}'][data-stage='accepted']"
    wait_for(lambda: ff.js("return document.querySelectorAll(arguments[0]).length", accepted) == 1, timeout=10,
             what="the sent event in the live tail")
    delivered = f"#live-rows tr[data-message-id='{mid}'][data-stage='delivered']"
    wait_for(lambda: "hook-ok" in ff.js("return [...document.querySelectorAll(arguments[0])].map(r => r.innerText)"
                                        ".join(' ')", delivered), timeout=15, what="hook-ok's delivery in the tail")
    live_known = [(accepted, "Firefox Live"), (delivered, "HTTP 200")]

    db_wait(stack.dsn, "SELECT count(*) FROM failed_jobs WHERE destination_id = 'hook-bad'", 2)
    db_wait(stack.dsn, "SELECT count(*) FROM rt_jobs WHERE destination_id = 'hook-retry' "
                       "AND next_attempt_at > now()", 2)
    views = [
        ("overview", "/admin/ui/overview", "Overview",
         [("#destinations tr[data-destination='hook-ok'] td.dest", "hook-ok"),
          ("#queues tr[data-queue='rt']", "router")]),
        ("live", "/admin/ui/live", "Live events", live_known),
        ("failures", "/admin/ui/failures", "Failures",
         [("#retrying-jobs tr[data-destination='hook-retry']", "hook-retry"),
          ("#failed-jobs tbody tr", "hook-bad")]),
        ("lookup", f"/admin/ui/lookup?by=message&q={mid}", "Lookup",
         [(f"article.trace[data-message-id='{mid}'] tr[data-destination='hook-ok']", "delivered"),
          (f"article.trace[data-message-id='{mid}'] tr[data-destination='hook-bad']", "failed")]),
    ]
    layouts = {}
    for size in (DESKTOP, PHONE):
        ff.set_viewport(*size)
        for view, path, heading, known in views:
            if view == "lookup" and size == DESKTOP:  # by the form, as an operator does
                ff.go(url + "/admin/ui/lookup")
                ff.client.find_element("css selector", "#lookup-form input[name=q]").send_keys(mid)
                ff.client.find_element("css selector", "#lookup-form button[type=submit]").click()
                wait_for(lambda: ff.js("return location.search").startswith("?"), timeout=10, what="the lookup")
            else:
                ff.go(url + path)
            layouts[view, size[0]] = check_view(ff, url, screens, view, heading, known)
            if view == "live" and size == PHONE:  # the tail as cards: no table header
                assert ff.js("return getComputedStyle(document.querySelector('#live thead')).display") == "none"

    # At phone width the wide tables scroll in their wrappers instead of widening the page.
    assert {w["table"] for w in layouts["overview", PHONE[0]]["wraps"] if w["scrolls"]} >= {"destinations"}
    assert {w["table"] for w in layouts["failures", PHONE[0]]["wraps"] if w["scrolls"]} >= {"failed-jobs"}
