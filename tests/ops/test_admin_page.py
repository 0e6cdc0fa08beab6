"""The admin page in headless Debian Chromium (Python playwright) against real processes: a gateway,
processor, router and `sluice admin` on a real Postgres, destinations played by FakeDestination. Every
request the browser makes to another host is refused. Each test saves screenshots of what it opened
under its temporary directory (tmp_path/screens)."""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from tests.conftest import start_gateway
from tests.e2e.browser import chromium, loopback_only
from tests.ops.conftest import sluice, sluice_json, sql, start_processor
from tests.support import workspace as ws
from tests.support.fake_destination import FakeDestination, Reply
from tests.support.procs import SluiceProcess, free_port, wait_for

TOKEN = "page-test-token-0123456789"
AM_SECRET = "am-secret-key-DO-NOT-SHOW-4711"
HOOK_SECRET = "hook-bearer-DO-NOT-SHOW-0815"
RETRY_BODY = '{"error":"upstream down for maintenance"}'


# ---- the stack --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def destinations(fake: FakeDestination, hostile_name: str = "Webhook ok") -> list[dict]:
    ok = ws.destination("hook-ok", "WEBHOOK", "Webhook", {
        "webhookUrl": fake.url + "/ok", "webhookMethod": "POST",
        "headers": [{"from": "Authorization", "to": f"Bearer {HOOK_SECRET}"}]})
    ok["name"] = hostile_name
    return [
        ok,
        ws.webhook("hook-bad", fake.url + "/bad"),
        ws.webhook("hook-retry", fake.url + "/retry"),
        ws.webhook("hook-identify-only", fake.url + "/identify", message_types=["identify"]),
        ws.destination("am-1", "AM", "Amplitude", {"apiKey": AM_SECRET}),
    ]


class Stack:
    def __init__(self, dsn: str, tmp: Path, fake: FakeDestination, hostile_name: str = "Webhook ok"):
        self.dsn, self.tmp, self.fake = dsn, tmp, fake
        self.config = ws.write(tmp / "workspace-config.json", ws.basic_workspace(destinations(fake, hostile_name)))
        self.gateway = start_gateway(dsn, self.config, tmp)
        self.processor = start_processor(dsn, self.config, tmp)
        self.router = SluiceProcess("router", {
            "SLUICE_DATABASE_URL": dsn, "SLUICE_CONFIG": str(self.config), "SLUICE_CONFIG_POLL_INTERVAL": "0.2",
            "SLUICE_LEASE_SECONDS": "6", "SLUICE_ROUTER_MIN_BACKOFF": "0.2", "SLUICE_ROUTER_MAX_BACKOFF": "0.5",
            "SLUICE_ROUTER_TIMEOUT": "2", "SLUICE_LOG_LEVEL": "INFO",
            # hook-retry stays in backoff for minutes: the test sees it retrying, and can abort it
            "SLUICE_ROUTER_RETRY_OVERRIDES": json.dumps({"hook-retry": {"max_attempts": 50, "min_backoff": 300,
                                                                         "max_backoff": 300}}),
            "SLUICE_ENDPOINT_OVERRIDES": json.dumps({"https://api2.amplitude.com": fake.url + "/amplitude"})},
            tmp)
        port = free_port()
        self.admin_url = f"http://127.0.0.1:{port}"
        self.admin = SluiceProcess("admin", {
            "SLUICE_DATABASE_URL": dsn, "SLUICE_ADMIN_TOKEN": TOKEN, "SLUICE_ADMIN_PORT": str(port),
            "SLUICE_ADMIN_HOST": "127.0.0.1", "SLUICE_CONFIG": str(self.config), "SLUICE_CONFIG_POLL_INTERVAL": "0.2",
            "SLUICE_LOG_LEVEL": "INFO"}, tmp)

        def admin_up():
            assert self.admin.alive(), self.admin.output()
            return requests.get(self.admin_url + "/admin/jobs", headers={"Authorization": f"Bearer {TOKEN}"},
                                timeout=2).status_code == 200

        wait_for(admin_up, timeout=30, what="sluice admin to answer")

    def send(self, *events: dict) -> None:
        answer = self.gateway.post("/v1/batch", {"batch": list(events)})
        assert answer.status_code == 200, answer.text

    def stop(self) -> None:
        for proc in (self.admin, self.router, self.processor, self.gateway.proc):
            proc.stop()


def answers(rec) -> Reply:
    if rec.path == "/bad":
        return Reply(400, '{"error":"bad request: field <b>plan</b> is invalid"}')
    if rec.path == "/retry":
        return Reply(500, RETRY_BODY)
    return Reply(200, '{"ok":true,"echo":"received"}')


@pytest.fixture
def stack(dsn, tmp_path):
    with FakeDestination() as fake:
        fake.respond(answers)
        s = Stack(dsn, tmp_path, fake)
        try:
            yield s
        finally:
            s.stop()


@pytest.fixture
def context(browser, tmp_path):
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    refused = loopback_only(ctx)
    ctx.refused = refused
    ctx.screens = tmp_path / "screens"
    ctx.screens.mkdir(exist_ok=True)
    yield ctx
    ctx.close()
    assert refused == [], f"the page asked another host for {refused}"


class Watch:
    """Console errors, page errors, dialogs and requests of one page: none may come from event data."""

    def __init__(self, page):
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.requests: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("dialog", self._dialog)
        page.on("request", lambda r: self.requests.append(r.url))

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()


def track(user: str, name: str = "Signed Up", mid: str | None = None, **props) -> dict:
    return {"type": "track", "userId": user, "event": name, "messageId": mid or f"m-{uuid.uuid4().hex[:12]}",
            "properties": props or {"plan": "pro"}}


def login(page, url: str, token: str = TOKEN) -> None:
    page.goto(url + "/admin/ui/overview")
    page.wait_for_selector("#token")
    page.fill("#token", token)
    page.click("button[type=submit]")


def poll(page, predicate, timeout: float, what: str):
    """Call predicate until it returns something truthy, letting the page run between calls."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except AssertionError as exc:
            last = exc
        page.wait_for_timeout(100)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f": {last}" if last else ""))


def live_now(page) -> None:
    """Wait for the live tail to say it is connected. (Not wait_for_function: its polling evaluates a string,
    which the page's Content-Security-Policy rightly refuses.)"""
    poll(page, lambda: page.inner_text("#live-state") == "live", 10, "the live tail to connect")


def shot(context, page, name: str) -> Path:
    path = context.screens / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 1000
    return path


def db_wait(dsn: str, statement: str, expected, timeout: float = 30, args=None):
    return wait_for(lambda: sql(dsn, statement, args)[0][0] == expected, timeout=timeout,
                    what=f"{statement!r} to be {expected}")


def cell(page, row: str, field: str) -> str:
    return page.locator(f"{row} [data-field='{field}']").first.inner_text().strip()


# ---- tests ------------------------------------------------------------------------------------------------

def test_log_in_with_the_token_and_a_wrong_token_is_refused(stack, context):
    page = context.new_page()
    watch = Watch(page)
    page.goto(stack.admin_url + "/admin/ui/failures")
    assert "/admin/login" in page.url
    shot(context, page, "login")

    page.fill("#token", "not-the-token")
    page.click("button[type=submit]")
    page.wait_for_selector("#login-error")
    assert page.inner_text("#login-error") == "wrong token"
    assert "/admin/login" in page.url
    shot(context, page, "login-wrong-token")
    with context.new_page() as other:  # the wrong token opened nothing
        other.goto(stack.admin_url + "/admin/ui/overview")
        assert "/admin/login" in other.url

    page.fill("#token", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/admin/ui/failures$"))  # back where it was asked for
    assert page.locator("h1").inner_text() == "Failures"
    [cookie] = [c for c in context.cookies() if c["name"] == "sluice_admin"]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and cookie["path"] == "/admin"
    assert cookie["expires"] == -1  # a session cookie: gone when the browser closes
    assert page.evaluate("document.cookie") == ""  # HttpOnly: scripts cannot read it

    # Every POST made with the cookie needs the CSRF token; with it, it goes through.
    status = page.evaluate("""async () => (await fetch('/admin/ui/abort', {method: 'POST',
        headers: {'Content-Type': 'application/x-www-form-urlencoded'}, body: 'queue=rt&job_id=1'})).status""")
    assert status == 403
    status = page.evaluate("""async () => {
        const csrf = document.querySelector('meta[name=csrf-token]').content;
        return (await fetch('/admin/ui/abort', {method: 'POST', redirect: 'manual',
            headers: {'Content-Type': 'application/x-www-form-urlencoded', 'X-CSRF-Token': csrf},
            body: 'queue=rt&job_id=1'})).type; }""")
    assert status == "opaqueredirect"  # accepted (and answered with the usual redirect to the page)

    # The JSON API keeps working with the Bearer header, and only with the right one.
    ok = requests.get(stack.admin_url + "/admin/jobs", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert ok.status_code == 200 and "queues" in ok.json()
    assert requests.get(stack.admin_url + "/admin/api/overview", timeout=5).status_code == 401
    assert requests.get(stack.admin_url + "/admin/api/overview", headers={"Authorization": "Bearer nope"},
                        timeout=5).status_code == 401

    # Logging out ends the session.
    page.click("header .logout button")
    page.wait_for_url(re.compile(r".*/admin/login$"))
    page.goto(stack.admin_url + "/admin/ui/overview")
    assert "/admin/login" in page.url
    # The address the README gives, and the service's bare root, both lead to the login form.
    for start in ("/admin/", "/"):
        page.goto(stack.admin_url + start)
        assert urlsplit(page.url).path == "/admin/login" and page.locator("#token").count() == 1, page.url
    assert watch.dialogs == []


def expected_figures(dsn: str) -> dict:
    def one(statement: str, *args):
        return sql(dsn, statement, args or None)[0][0]

    out = {}
    for dest in ("hook-ok", "hook-bad", "hook-retry", "am-1", "hook-identify-only"):
        retrying_users = "SELECT user_key FROM rt_jobs WHERE destination_id = %s AND state = 0 AND next_attempt_at > now()"
        out[dest] = {
            "delivered": one("SELECT count(*) FROM rt_jobs WHERE destination_id = %s AND state = 1", dest),
            "failed": one("SELECT count(*) FROM failed_jobs WHERE destination_id = %s", dest),
            "retrying": one("SELECT count(*) FROM rt_jobs WHERE destination_id = %s AND state = 0 "
                            "AND next_attempt_at IS NOT NULL", dest),
            "waiting": one(f"SELECT count(*) FROM rt_jobs WHERE destination_id = %s AND state = 0 "
                           f"AND next_attempt_at IS NULL AND user_key IN ({retrying_users})", dest, dest),
            "filtered": {r: n for r, n in sql(dsn, "SELECT rule, sum(count)::int FROM filtered_counts "
                                                   "WHERE destination_id = %s GROUP BY rule", (dest,))},
        }
    out["accepted"] = one("SELECT count(*) FROM gw_jobs WHERE source_id = 'src-web'")
    out["rejected"] = one("SELECT count(*) FROM gw_rejected WHERE source_id = 'src-web'")
    out["p50_ok"] = float(one("SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY 1000 * extract(epoch FROM "
                        "last_attempt_at - (payload->>'received_at')::timestamptz)) FROM rt_jobs "
                        "WHERE destination_id = 'hook-ok' AND state = 1"))
    return out


def test_overview_numbers_match_the_database(stack, context):
    # A known set: 4 users x 2 events. hook-ok and am-1 deliver all 8; hook-bad refuses all 8 (400: dead
    # letters at once); hook-retry answers 500, so each user's first event retries (backoff of 5 minutes)
    # and the second waits behind it (the barrier); hook-identify-only filters every track event by rule.
    events = [track(f"user-{u}", "Order Completed", seq=k) for u in range(4) for k in range(2)]
    stack.send(*events)
    bad = stack.gateway.post("/v1/track", {"event": "No User"})  # no userId: rejected
    assert bad.status_code == 400
    db_wait(stack.dsn, "SELECT count(*) FROM rt_jobs WHERE destination_id = 'hook-ok' AND state = 1", 8)
    db_wait(stack.dsn, "SELECT count(*) FROM rt_jobs WHERE destination_id = 'am-1' AND state = 1", 8)
    db_wait(stack.dsn, "SELECT count(*) FROM failed_jobs WHERE destination_id = 'hook-bad'", 8)
    db_wait(stack.dsn, "SELECT count(*) FROM rt_jobs WHERE destination_id = 'hook-retry' AND next_attempt_at > now()", 4)
    expected = expected_figures(stack.dsn)
    assert expected["hook-ok"]["delivered"] == 8 and expected["hook-bad"]["failed"] == 8
    assert expected["hook-retry"]["retrying"] == 4 and expected["hook-retry"]["waiting"] == 4
    assert expected["hook-identify-only"]["filtered"] == {"supported_message_types": 8}
    assert expected["accepted"] == 8 and expected["rejected"] == 1

    page = context.new_page()
    watch = Watch(page)
    login(page, stack.admin_url)
    page.wait_for_selector("#destinations")

    def figures_on_page():
        page.reload()
        row = "#destinations tr[data-destination='{}']"
        got = {}
        for dest in expected:
            if not dest.startswith(("hook", "am")):
                continue
            r = row.format(dest)
            filtered = page.locator(f"{r} [data-field='filtered'] .pill").all_inner_texts()
            got[dest] = {
                "delivered": int(cell(page, r, "delivered_5m")), "delivered_1h": int(cell(page, r, "delivered_1h")),
                "failed": int(cell(page, r, "failed_5m")), "failed_1h": int(cell(page, r, "failed_1h")),
                "retrying": int(page.locator(f"{r} [data-field='retrying'] [data-value]").inner_text()),
                "waiting": int(cell(page, r, "waiting")),
                "filtered": {t.split(": ")[0]: int(t.split(": ")[1]) for t in filtered},
            }
        src = "#sources tr[data-source='src-web']"
        got["accepted"] = (int(cell(page, src, "accepted_5m")), int(cell(page, src, "accepted_1h")))
        got["rejected"] = (int(cell(page, src, "rejected_5m")), int(cell(page, src, "rejected_1h")))
        for dest, want in expected.items():
            if dest.startswith(("hook", "am")):
                assert got[dest] == {**want, "delivered_1h": want["delivered"], "failed_1h": want["failed"]}, dest
        assert got["accepted"] == (expected["accepted"],) * 2
        assert got["rejected"] == (expected["rejected"],) * 2
        return got

    # The overview reads the database at most every few seconds and counts a moment late: poll.
    poll(page, figures_on_page, 40, "the overview to show the database's figures")

    retry_row = "#destinations tr[data-destination='hook-retry']"
    assert "HTTP 500" in cell(page, retry_row, "last_error") and "upstream down" in cell(page, retry_row, "last_error")
    assert "next attempt" in page.locator(f"{retry_row} [data-field='retrying']").inner_text()
    latency = cell(page, "#destinations tr[data-destination='hook-ok']", "latency_1h")
    p50 = float(latency.split(" / ")[0])
    assert abs(p50 - expected["p50_ok"]) <= max(1.5, 0.06 * expected["p50_ok"]), (latency, expected["p50_ok"])
    assert page.locator("#queues tr[data-queue='rt'] [data-field='pending']").inner_text() == "8"  # 4 + 4 waiting
    chart = page.locator("figure.chart[data-destination='hook-ok'] rect.ok")
    assert chart.count() >= 1
    assert "8 delivered" in page.locator("figure.chart[data-destination='hook-ok'] figcaption").inner_text()
    assert page.locator("figure.chart[data-destination='hook-bad'] rect.bad").count() >= 1
    api = requests.get(stack.admin_url + "/admin/api/overview", headers={"Authorization": f"Bearer {TOKEN}"},
                       timeout=10).json()
    hook_ok = next(d for d in api["destinations"] if d["id"] == "hook-ok")
    assert hook_ok["delivered_1h"] == 8 and hook_ok["latency_1h"]["p50"] == p50
    shot(context, page, "overview-1280")
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    shot(context, page, "overview-phone")
    assert AM_SECRET not in page.content() and HOOK_SECRET not in page.content()
    assert watch.errors == [] and watch.dialogs == []


def test_an_event_appears_in_the_live_tail_within_2_seconds(stack, context):
    page = context.new_page()
    watch = Watch(page)
    login(page, stack.admin_url)
    page.goto(stack.admin_url + "/admin/ui/live")
    live_now(page)

    mid = f"live-{uuid.uuid4().hex[:10]}"
    sent_at = time.monotonic()
    stack.send(track("live-user", "Live Clicked", mid=mid, button="buy"))
    accepted = f"#live-rows tr[data-message-id='{mid}'][data-stage='accepted']"
    poll(page, lambda: page.locator(accepted).count() == 1, 2.0 - (time.monotonic() - sent_at),
         "the accepted event in the live tail")
    # Then as transformed for each destination, and as delivered with the destination's answer.
    delivered = f"#live-rows tr[data-message-id='{mid}'][data-stage='delivered']"
    poll(page, lambda: page.locator(delivered).count() >= 2, 15, "delivered rows (hook-ok, am-1)")
    assert page.locator(f"#live-rows tr[data-message-id='{mid}'][data-stage='transformed']").count() >= 4
    hook_row = page.locator(delivered, has_text="hook-ok")
    assert "HTTP 200" in hook_row.inner_text() and "received" in hook_row.inner_text()
    retry = f"#live-rows tr[data-message-id='{mid}'][data-stage='retrying']"
    poll(page, lambda: page.locator(retry).count() == 1, 15, "the retrying row (hook-retry)")
    assert "HTTP 500" in page.locator(retry).inner_text()
    failed = f"#live-rows tr[data-message-id='{mid}'][data-stage='failed']"
    poll(page, lambda: page.locator(failed).count() == 1, 15, "the failed row (hook-bad)")
    failed_cells = page.locator(failed).locator("td").all_inner_texts()
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", failed_cells[0].strip()), failed_cells  # when it failed
    assert "destination answered 400" in page.locator(failed).inner_text()

    page.locator(accepted).click()
    body = page.locator("#json-body").inner_text()
    assert json.loads(body)["payload"]["properties"] == {"button": "buy"}
    page.locator(delivered, has_text="am-1").click()
    shown = json.loads(page.locator("#json-body").inner_text())
    assert shown["stage"] == "delivered" and shown["status"] == 200
    assert AM_SECRET not in page.locator("#json-body").inner_text()  # the Amplitude api_key is hidden
    assert "••••••" in json.dumps(shown["payload"], ensure_ascii=False)
    shot(context, page, "live-1280")

    # Filters: only one destination's events.
    page.select_option("select[name=destination]", "hook-bad")
    page.click("#live-filters button[type=submit]")
    mid2 = f"live-{uuid.uuid4().hex[:10]}"
    stack.send(track("live-user-2", "Filtered View", mid=mid2))
    poll(page, lambda: page.locator(f"#live-rows tr[data-message-id='{mid2}'][data-stage='failed']").count() == 1,
         15, "hook-bad's failure in the filtered tail")
    assert page.locator("#live-rows tr[data-stage='accepted']").count() == 0  # accepted events have no destination
    destinations_shown = set(page.locator("#live-rows tr").all_inner_texts())
    assert all("hook-bad" in text for text in destinations_shown), destinations_shown

    # Pause: nothing new is drawn until Resume. A second page, not paused, is the witness that the
    # event went through the tail meanwhile.
    witness = context.new_page()
    witness.goto(stack.admin_url + "/admin/ui/live?destination=hook-bad")
    live_now(witness)
    page.click("#pause")
    assert page.inner_text("#live-state") == "paused"
    mid3 = f"live-{uuid.uuid4().hex[:10]}"
    stack.send(track("live-user-3", "While Paused", mid=mid3))
    poll(witness, lambda: witness.locator(f"#live-rows tr[data-message-id='{mid3}']").count() >= 1, 15,
         "the witness page to show the event sent during the pause")
    assert page.locator(f"#live-rows tr[data-message-id='{mid3}']").count() == 0
    page.click("#pause")
    poll(page, lambda: page.locator("#live-rows tr.divider").count() == 1, 5, "the resume marker")
    poll(page, lambda: page.inner_text("#live-state") == "live", 10, "the tail to reconnect")
    assert page.locator(f"#live-rows tr[data-message-id='{mid3}']").count() == 0  # not replayed on resume
    witness.close()
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    shot(context, page, "live-phone")
    assert watch.errors == [] and watch.dialogs == []


def test_a_failed_job_is_replayed_from_the_page_and_delivered(stack, context):
    mid = f"replay-{uuid.uuid4().hex[:10]}"
    stack.send(track("replay-user", "Plan Changed", mid=mid))
    db_wait(stack.dsn, "SELECT count(*) FROM failed_jobs WHERE destination_id = 'hook-bad'", 1)
    # The destination is fixed: it accepts now.
    stack.fake.respond(lambda rec: Reply(200, '{"fixed":true}') if rec.path == "/bad" else answers(rec))

    page = context.new_page()
    watch = Watch(page)
    login(page, stack.admin_url)
    page.goto(stack.admin_url + "/admin/ui/failures?destination=hook-bad")
    assert page.inner_text("#matched") == "1"
    row = page.locator("#failed-jobs tbody tr").first
    assert "400" in row.inner_text() and "field <b>plan</b> is invalid" in row.inner_text()  # shown as text
    shot(context, page, "failures")
    page.click("form.replay button[type=submit]")
    page.wait_for_selector("#dry-run-count")
    assert page.inner_text("#dry-run-count") == "1"
    assert sql(stack.dsn, "SELECT count(*) FROM failed_jobs WHERE replayed_at IS NOT NULL")[0][0] == 0  # a dry run
    shot(context, page, "replay-confirm")
    page.click("#confirm-replay")
    page.wait_for_selector(".flash.ok")
    assert "replayed 1 failed jobs" in page.inner_text(".flash.ok")
    db_wait(stack.dsn, "SELECT count(*) FROM rt_jobs WHERE destination_id = 'hook-bad' AND state = 1 "
                       "AND message_id = %s", 1, args=(mid,))
    arrived = [r for r in stack.fake.delivered if r.path == "/bad"]
    assert len(arrived) == 1 and arrived[0].json()["messageId"] == mid
    [(replayed_by,)] = sql(stack.dsn, "SELECT replayed_by FROM failed_jobs WHERE message_id = %s", (mid,))
    assert replayed_by.startswith("admin-page:")
    assert watch.errors == [] and watch.dialogs == []


def test_abort_now_moves_a_retrying_job_to_the_dead_letters(stack, context):
    stack.send(track("stuck-user", "First"), track("stuck-user", "Second"))
    db_wait(stack.dsn, "SELECT count(*) FROM rt_jobs WHERE destination_id = 'hook-retry' AND next_attempt_at > now()", 1)
    [(job_id,)] = sql(stack.dsn, "SELECT job_id FROM rt_jobs WHERE destination_id = 'hook-retry' AND state = 0 "
                                 "AND next_attempt_at IS NOT NULL")
    # `sluice jobs` names the retrying destination, its last answer and the next attempt.
    report = sluice_json(stack.dsn, "jobs")
    [retrying] = [r for r in report["retrying"] if r["destination_id"] == "hook-retry"]
    assert retrying["jobs"] == 1 and retrying["last_status"] == 500 and "upstream down" in retrying["last_error"]
    assert retrying["next_attempt_at"] > report["now"]
    text = sluice(stack.dsn, "jobs").stdout
    line = next(x for x in text.splitlines() if "hook-retry" in x)
    assert "HTTP 500" in line and "upstream down" in line and "(in " in line, text
    page = context.new_page()
    login(page, stack.admin_url)
    page.goto(stack.admin_url + "/admin/ui/failures")
    job_row = page.locator(f"#retrying-jobs tr[data-job='{job_id}']")
    assert "HTTP 500" in job_row.inner_text() and "upstream down" in job_row.inner_text()
    assert job_row.locator("td").nth(8).inner_text() == "1"  # the user's second event waits behind it
    shot(context, page, "retrying")
    job_row.locator("button", has_text="Abort now").click()
    page.wait_for_selector(".flash.ok")
    assert f"aborted job {job_id}" in page.inner_text(".flash.ok")
    [(state,)] = sql(stack.dsn, "SELECT state FROM rt_jobs WHERE job_id = %s", (job_id,))
    assert state == 2
    [(stage, reason, status, response, history)] = sql(
        stack.dsn, "SELECT stage, reason, status_code, response, attempt_history FROM failed_jobs "
                   "WHERE original_job_id = %s AND original_queue = 'rt_jobs'", (job_id,))
    assert stage == "router" and reason.startswith("aborted by an operator (admin-page:") and status == 500
    assert response == RETRY_BODY and history["attempts"] == 1 and history["aborted_by"].startswith("admin-page")
    # Aborting again finds nothing in backoff: refused, nothing changes.
    page.evaluate("""async (id) => { const csrf = document.querySelector('meta[name=csrf-token]').content;
        await fetch('/admin/ui/abort', {method: 'POST', headers: {'Content-Type': 'application/x-www-form-urlencoded',
            'X-CSRF-Token': csrf}, body: 'queue=rt&job_id=' + id}); }""", job_id)
    assert sql(stack.dsn, "SELECT count(*) FROM failed_jobs WHERE original_job_id = %s", (job_id,))[0][0] == 1


def test_lookup_by_message_id_shows_each_destination(stack, context):
    mid = f"look-{uuid.uuid4().hex[:10]}"
    stack.send(track("lookup-user", "Looked Up", mid=mid))
    db_wait(stack.dsn, "SELECT count(*) FROM rt_jobs WHERE message_id = %s AND state = 1", 2, args=(mid,))
    db_wait(stack.dsn, "SELECT count(*) FROM failed_jobs WHERE message_id = %s", 1, args=(mid,))
    db_wait(stack.dsn, "SELECT count(*) FROM rt_jobs WHERE message_id = %s AND next_attempt_at > now()", 1,
            args=(mid,))
    page = context.new_page()
    watch = Watch(page)
    login(page, stack.admin_url)
    page.goto(stack.admin_url + "/admin/ui/lookup")
    page.fill("input[name=q]", mid)
    page.click("#lookup-form button[type=submit]")
    page.wait_for_selector(f"article.trace[data-message-id='{mid}']")
    status = {d: page.locator(f"article.trace tr[data-destination='{d}'] [data-field='status']").inner_text()
              for d in ("hook-ok", "am-1", "hook-bad", "hook-retry", "hook-identify-only")}
    assert status == {"hook-ok": "delivered", "am-1": "delivered", "hook-bad": "failed", "hook-retry": "retrying",
                      "hook-identify-only": "filtered"}
    text = page.locator("article.trace").inner_text()
    assert "by rule supported_message_types" in text and "processed" in text
    assert "destination answered 400" in text and "HTTP 500" in text
    assert AM_SECRET not in page.content() and HOOK_SECRET not in page.content()
    shot(context, page, "lookup")
    api = requests.get(stack.admin_url + "/admin/api/lookup", params={"message_id": mid},
                       headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).json()
    [event] = api["events"]
    assert {d["id"]: d["status"] for d in event["destinations"]} == status
    by_user = requests.get(stack.admin_url + "/admin/api/lookup", params={"user_id": "lookup-user"},
                           headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).json()
    assert [e["message_id"] for e in by_user["events"]] == [mid]
    assert watch.errors == [] and watch.dialogs == []


HOSTILE = [
    "<script>window.__pwned = 'script'</script>",
    "<img src=x onerror=\"window.__pwned='img'\">",
    "javascript:window.__pwned='js'",
    "\"><svg onload=\"window.__pwned='svg'\">",
    "</pre></td></tr><script>window.__pwned='break-out'</script>",
]


@pytest.fixture
def hostile_stack(dsn, tmp_path):
    with FakeDestination() as fake:
        # a destination whose answer is hostile too, and a destination name that is
        fake.respond(lambda rec: Reply(400, HOSTILE[1]) if rec.path == "/bad" else answers(rec))
        s = Stack(dsn, tmp_path, fake, hostile_name=HOSTILE[3])
        try:
            yield s
        finally:
            s.stop()


def test_hostile_event_values_are_shown_as_text_and_nothing_runs(hostile_stack, context):
    stack = hostile_stack
    page = context.new_page()
    watch = Watch(page)
    login(page, stack.admin_url)
    page.goto(stack.admin_url + "/admin/ui/live")
    live_now(page)
    events = []
    for i, bad in enumerate(HOSTILE):
        events.append({"type": "track", "userId": bad, "anonymousId": bad, "event": bad, "messageId": f"hostile-{i}",
                       "properties": {bad: bad, "link": bad, "nested": {"html": bad}},
                       "context": {"page": {"url": bad, "title": bad}}})
    events.append({"type": "identify", "userId": HOSTILE[2], "messageId": "hostile-identify",
                   "traits": {"name": HOSTILE[0], "email": HOSTILE[1]}})
    stack.send(*events)
    poll(page, lambda: page.locator("#live-rows tr[data-stage='accepted']").count() >= len(events), 10,
         "the hostile events in the live tail")
    db_wait(stack.dsn, "SELECT count(*) FROM failed_jobs WHERE destination_id = 'hook-bad'", len(events))
    poll(page, lambda: page.locator("#live-rows tr[data-stage='failed']").count() >= 1, 10, "a failure row")
    # The text is on the page, as text.
    tail = page.locator("#live-rows").inner_text()
    assert HOSTILE[0] in tail and HOSTILE[2] in tail
    for row in page.locator("#live-rows tr").all()[:12]:
        row.click()
        assert page.locator("#json-body").inner_text()
    shot(context, page, "hostile-live")

    views = ["/admin/ui/overview", "/admin/ui/failures", "/admin/ui/failures?destination=hook-bad",
             "/admin/ui/lookup?by=message&q=hostile-0", "/admin/ui/lookup?by=user&q=" + requests.utils.quote(HOSTILE[0]),
             "/admin/ui/lookup?by=message&q=" + requests.utils.quote(HOSTILE[1])]
    [(failed_id,)] = sql(stack.dsn, "SELECT min(id) FROM failed_jobs")
    [(gw_id,)] = sql(stack.dsn, "SELECT min(job_id) FROM gw_jobs")
    [(rt_id,)] = sql(stack.dsn, "SELECT min(job_id) FROM rt_jobs WHERE destination_id = 'hook-ok'")
    views += [f"/admin/ui/failed/{failed_id}", f"/admin/ui/job/gw/{gw_id}", f"/admin/ui/job/rt/{rt_id}"]
    for n, view in enumerate(views):
        page.goto(stack.admin_url + view)
        page.wait_for_load_state("load")
        for summary in page.locator("details > summary").all()[:30]:
            if summary.is_visible():
                summary.click()
        shot(context, page, f"hostile-{n}")
        assert page.evaluate("window.__pwned") is None, view
        assert page.locator("script:not([src])").count() == 0, view  # nothing from the data became a script
        assert page.locator("img, svg[onload], [onerror]").count() == 0, view  # the only svgs are the chart's
        content = page.content()
        assert AM_SECRET not in content and HOOK_SECRET not in content, view
    page.goto(stack.admin_url + "/admin/ui/lookup?by=message&q=hostile-0")
    assert HOSTILE[0] in page.locator("article.trace").inner_text()  # shown, as text
    page.goto(stack.admin_url + "/admin/ui/failures?destination=hook-bad")
    assert HOSTILE[1] in page.locator("#failed-jobs").inner_text()  # the destination's answer, as text
    # The replay confirmation shows reasons and answers too.
    page.click("form.replay button[type=submit]")
    page.wait_for_selector("#dry-run-count")
    assert page.evaluate("window.__pwned") is None
    shot(context, page, "hostile-replay-confirm")

    assert watch.dialogs == []
    # Only the page's own documents, scripts, styles, icon and streams were requested: no <img src=x>.
    paths = {urlsplit(u).path for u in watch.requests}
    assert {p for p in paths if not p.startswith("/admin/") or p.endswith("/x")} == set(), paths
    assert not [u for u in watch.requests if not u.startswith(stack.admin_url)], watch.requests
    assert watch.errors == [], watch.errors  # CSP blocks would show here


def test_sampled_when_the_stream_is_faster_than_the_tail(dsn, tmp_path, monkeypatch):
    """More new rows than a poll reads: the newest are shown, the rest counted, and the stream says so."""
    import psycopg2

    from jobsdb.queue import GatewayRow, enqueue_gw
    from ops import admin_live
    from ops.admin_live import Filters, LiveTail
    from ops.admin_secrets import Masker

    monkeypatch.setattr(admin_live, "ROWS_PER_POLL", 20)
    monkeypatch.setattr(admin_live, "LOOKBACK_IDS", 5)
    stop = admin_live.threading.Event()
    tail = LiveTail(dsn, lambda: Masker(None), stop)
    client = admin_live.Client(Filters())
    with tail.lock:
        tail.clients.add(client)
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        tail._poll(conn)  # starts at the end of the (empty) queue
        with contextlib.closing(psycopg2.connect(dsn)) as w, w.cursor() as cur:
            enqueue_gw(cur, [GatewayRow(0, "src-web", f"u{i}", json.dumps({"type": "track", "event": f"E{i}",
                                                                            "messageId": f"s-{i}"}), "now")
                             for i in range(100)])
            w.commit()
        tail._poll(conn)
    finally:
        conn.close()
    items, dropped, skipped = client.take(0)
    assert [i["message_id"] for i in items] == [f"s-{i}" for i in range(80, 100)]  # the newest 20
    assert skipped == 80 and dropped == 0
    stream = tail.stream(client)
    client.offer([], 7)
    assert next(stream).startswith("retry:") and next(stream).startswith("event: hello")
    assert next(stream) == 'event: sampled\ndata: {"dropped": 0, "skipped": 7}\n\n'
    stop.set()
