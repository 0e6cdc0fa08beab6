"""The gateway's HTTP contract (DESIGN.md section 3) at the wire level, with plain `requests`."""

from __future__ import annotations

import base64
import gzip
import json
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import requests

from tests.conftest import gw_events, start_gateway
from tests.e2e.helpers import (
    LOCAL_IP,
    WEB_SOURCE_ID,
    assert_skew_corrected,
    by_message_id,
    parse_ts,
    wait_events,
)
from tests.support.procs import wait_for
from tests.support.workspace import BACKEND_KEY, DISABLED_KEY, WEB_KEY


def assert_json_error(resp: requests.Response, status: int, code: str | None = None) -> dict:
    """An error is JSON with string `code` and `message` (what the Python SDKs parse), never an HTML page."""
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    assert "<html" not in resp.text.lower() and "<!doctype" not in resp.text.lower(), resp.text[:500]
    assert resp.headers["Content-Type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert isinstance(body.get("code"), str) and body["code"], body
    assert isinstance(body.get("message"), str) and body["message"], body
    if code is not None:
        assert body["code"] == code, body
    return body


def rejected_rows(db) -> list[dict]:
    with db.cursor() as cur:
        cur.execute("SELECT source_id, write_key, request_ip, endpoint, status, reason, event, raw "
                    "FROM gw_rejected ORDER BY id")
        cols = [d[0] for d in cur.description]
        rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    db.commit()
    return rows


def basic(key: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def track(i: int | str = 1, **extra) -> dict:
    return {"type": "track", "userId": f"u-{i}", "event": f"Event {i}", "messageId": f"m-{i}", **extra}


# ---- pixel and beacon --------------------------------------------------------------------------------------

def test_pixel_track_returns_uncacheable_gif_and_queues(gateway, db):
    resp = gateway.get("/pixel/v1/track", params={
        "writeKey": WEB_KEY, "event": "Email Opened", "anonymousId": '"px-anon-1"', "messageId": "px-1",
        "properties.plan": "pro", "properties.campaign.name": "spring", "context.campaign.source": "mail"})
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "image/gif"
    assert resp.content.startswith(b"GIF8") and len(resp.content) < 100
    cache = resp.headers.get("Cache-Control", "")
    assert "no-cache" in cache and "no-store" in cache, resp.headers
    (ev,) = wait_events(db, 1)
    assert ev["type"] == "track" and ev["event"] == "Email Opened" and ev["messageId"] == "px-1"
    assert ev["anonymousId"] == "px-anon-1"  # surrounding quotes stripped
    assert ev["properties"] == {"plan": "pro", "campaign": {"name": "spring"}}
    assert ev["context"]["campaign"] == {"source": "mail"}
    assert ev["_source_id"] == WEB_SOURCE_ID and ev["request_ip"] == LOCAL_IP
    assert "writeKey" not in ev and ev["receivedAt"] and ev["timestamp"]


def test_pixel_page_and_pixel_errors_still_answer_a_gif(gateway, db):
    ok = gateway.get("/pixel/v1/page", params={"writeKey": WEB_KEY, "anonymousId": "px-anon-2"})
    assert ok.status_code == 200 and ok.headers["Content-Type"] == "image/gif"
    (ev,) = wait_events(db, 1)
    assert ev["type"] == "page" and ev["name"] == "Unknown Page" and ev["anonymousId"] == "px-anon-2"

    bad_key = gateway.get("/pixel/v1/track", params={"writeKey": "nope", "event": "E", "anonymousId": "a"})
    no_event = gateway.get("/pixel/v1/track", params={"writeKey": WEB_KEY, "anonymousId": "a"})
    for resp in (bad_key, no_event):
        assert resp.headers["Content-Type"] == "image/gif" and resp.content.startswith(b"GIF8")
        assert "no-store" in resp.headers.get("Cache-Control", "")
    assert bad_key.status_code == 401 and no_event.status_code == 400
    assert len(gw_events(db)) == 1


def test_beacon_text_plain_with_query_write_key(gateway, db):
    body = json.dumps({"batch": [track("bc1"), {"type": "page", "anonymousId": "bc-anon", "name": "Landing"}],
                       "sentAt": datetime.now(UTC).isoformat()})
    resp = requests.post(f"{gateway.url}/beacon/v1/batch", params={"writeKey": WEB_KEY}, data=body,
                         headers={"Content-Type": "text/plain;charset=UTF-8"}, timeout=15)
    assert resp.status_code == 200, resp.text
    events = wait_events(db, 2)
    assert [e["type"] for e in events] == ["track", "page"]
    assert all(e["_source_id"] == WEB_SOURCE_ID for e in events)
    no_key = requests.post(f"{gateway.url}/beacon/v1/batch", data=body, headers={"Content-Type": "text/plain"},
                           timeout=15)
    assert_json_error(no_key, 401)


# ---- auth -----------------------------------------------------------------------------------------------

def test_write_key_sources_and_auth_errors(gateway, db):
    # Basic auth, body writeKey (analytics-python 2.3.x, older analytics.js), ?writeKey=.
    assert gateway.post("/v1/track", track("a1"), write_key=WEB_KEY).status_code == 200
    assert gateway.post("/v1/track", track("a2", writeKey=BACKEND_KEY), write_key=None).status_code == 200
    resp = requests.post(f"{gateway.url}/v1/batch?writeKey={WEB_KEY}", json={"batch": [track("a3")]}, timeout=15)
    assert resp.status_code == 200
    events = by_message_id(wait_events(db, 3))
    assert events["m-a1"]["_source_id"] == "src-web" and events["m-a3"]["_source_id"] == "src-web"
    assert events["m-a2"]["_source_id"] == "src-backend"
    assert "writeKey" not in events["m-a2"]

    assert_json_error(gateway.post("/v1/track", track("x1"), write_key=None), 401)
    assert_json_error(gateway.post("/v1/track", track("x2"), write_key="not-a-key"), 401)
    assert_json_error(gateway.post("/v1/batch", {"batch": [track("x3")]}, write_key="not-a-key"), 401)
    assert_json_error(gateway.post("/v1/track", track("x4"), write_key=DISABLED_KEY), 404)
    assert_json_error(gateway.post("/v1/batch", {"batch": [track("x5")], "writeKey": DISABLED_KEY},
                                   write_key=None), 404)
    assert len(gw_events(db)) == 3


# ---- malformed requests ---------------------------------------------------------------------------------

def test_bad_requests_are_400_with_json_bodies(gateway, db):
    assert_json_error(gateway.post("/v1/batch", b'{"batch": [', headers={"Content-Type": "application/json"}), 400)
    assert_json_error(gateway.post("/v1/track", b"not json at all"), 400)
    assert_json_error(gateway.post("/v1/batch", b""), 400)
    assert_json_error(gateway.post("/v1/batch", {"batch": []}), 400)
    assert_json_error(gateway.post("/v1/batch", {"batch": "nope"}), 400)
    assert_json_error(gateway.post("/v1/track", {"userId": "u1", "properties": {}}), 400)  # no event name
    assert_json_error(gateway.post("/v1/track", {"event": "E"}), 400)  # neither userId nor anonymousId
    assert_json_error(gateway.post("/v1/track", ["not", "an", "object"]), 400)
    assert_json_error(gateway.post("/v1/batch", {"batch": ["a string", 42]}), 400)
    assert_json_error(gateway.post("/v1/batch", {"batch": [{"type": "track", "userId": "u"}]}), 400)
    assert_json_error(gateway.post("/v1/batch", b"\x1f\x8bnot really gzip",
                                   headers={"Content-Encoding": "gzip"}), 400)
    assert gw_events(db) == []


def test_unknown_path_and_wrong_method_are_json(gateway):
    assert_json_error(gateway.get("/no/such/path"), 404)
    assert_json_error(gateway.post("/v1/nosuchtype", track()), 404)
    assert_json_error(gateway.get("/v1/track"), 405)
    assert_json_error(gateway.get("/v1/batch"), 405)
    assert_json_error(requests.delete(gateway.url + "/v1/batch", timeout=15), 405)


def test_wrong_method_names_the_allowed_methods(gateway):
    """RFC 9110 15.5.6: a 405 response MUST carry an Allow header."""
    resp = gateway.get("/v1/track")
    assert resp.status_code == 405
    assert "POST" in resp.headers.get("Allow", ""), dict(resp.headers)


def test_mixed_batch_accepts_valid_rejects_and_records_invalid(gateway, db):
    batch = [
        track("ok1"),
        {"type": "track", "userId": "u-bad1", "messageId": "bad-no-event"},
        "not an object",
        {"type": "identify", "anonymousId": "anon-ok2", "traits": {"k": "v"}, "messageId": "m-ok2"},
        {"type": "page", "name": "Nobody", "messageId": "bad-no-ids"},
        {"type": "launch", "userId": "u-bad3", "messageId": "bad-type"},
        track("big", properties={"blob": "x" * 40_000}),
    ]
    resp = gateway.post("/v1/batch", {"batch": batch, "sentAt": datetime.now(UTC).isoformat()})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    rejected = {r["index"]: r["reason"] for r in body["rejected"]}
    assert sorted(rejected) == [1, 2, 4, 5, 6], body
    assert "event" in rejected[1]
    assert "object" in rejected[2]
    assert "userId" in rejected[4] and "anonymousId" in rejected[4]
    assert "type" in rejected[5]
    assert "limit" in rejected[6]
    assert body.get("accepted") == 2

    events = by_message_id(wait_events(db, 2))
    assert sorted(events) == ["m-ok1", "m-ok2"]
    assert events["m-ok2"]["traits"] == {"k": "v"}

    rows = rejected_rows(db)
    assert len(rows) == 5, rows
    assert all(r["status"] == 400 and r["endpoint"] == "/v1/batch" for r in rows)
    assert all(r["source_id"] == WEB_SOURCE_ID and r["request_ip"] == LOCAL_IP for r in rows)
    assert sorted(r["reason"] for r in rows) == sorted(rejected.values())
    by_mid = {(r["event"] or {}).get("messageId"): r for r in rows if isinstance(r["event"], dict)}
    assert by_mid["bad-no-event"]["reason"] == rejected[1]
    assert by_mid["bad-no-ids"]["reason"] == rejected[4]
    assert by_mid["bad-type"]["reason"] == rejected[5]


def test_single_event_over_32kb_is_413(gateway, db):
    resp = gateway.post("/v1/track", track("huge", properties={"blob": "y" * 33_000}))
    assert_json_error(resp, 413)
    ok = gateway.post("/v1/track", track("fits", properties={"blob": "y" * 30_000}))
    assert ok.status_code == 200
    assert [e["messageId"] for e in wait_events(db, 1)] == ["m-fits"]


def test_request_over_the_size_limit_is_413(dsn, workspace_file, tmp_path, db):
    gw = start_gateway(dsn, workspace_file, tmp_path, max_request_size=2000)
    try:
        small = {"batch": [track("s1")]}
        assert gw.post("/v1/batch", small).status_code == 200
        big = {"batch": [track(f"b{i}", properties={"pad": "z" * 200}) for i in range(10)]}
        assert len(json.dumps(big)) > 2000
        assert_json_error(gw.post("/v1/batch", big), 413)
        # Over the limit once decompressed (a small gzip body must not bypass it).
        packed = gzip.compress(json.dumps(big).encode())
        assert len(packed) < 2000
        assert_json_error(gw.post("/v1/batch", packed, headers={"Content-Encoding": "gzip"}), 413)
        # Chunked upload (no Content-Length): still bounded.
        text = json.dumps(big).encode()
        chunks = (text[i:i + 500] for i in range(0, len(text), 500))
        assert_json_error(requests.post(gw.url + "/v1/batch", data=chunks, auth=(WEB_KEY, ""), timeout=15), 413)
        assert [e["messageId"] for e in gw_events(db)] == ["m-s1"]
    finally:
        gw.proc.stop()


def test_too_many_events_in_one_batch_is_refused(gateway, db):
    batch = [{"type": "track", "userId": "u", "event": "E"} for _ in range(2501)]
    resp = gateway.post("/v1/batch", {"batch": batch})
    assert_json_error(resp, 413)
    assert gw_events(db) == []


# ---- analytics.js short paths, single-event routes, gzip, timestamps --------------------------------------

SHORT = {"t": ("track", {"event": "Clicked"}), "p": ("page", {"name": "Home"}), "i": ("identify", {"traits": {"a": 1}}),
         "s": ("screen", {"name": "Main"}), "g": ("group", {"groupId": "g1"}), "a": ("alias", {"previousId": "old"})}


def test_analytics_js_short_paths_text_plain_body_write_key(gateway, db):
    sent_at = datetime.now(UTC).isoformat()
    for short, (_etype, extra) in SHORT.items():
        body = {"anonymousId": "ajs-anon", "userId": "ajs-user", "messageId": f"short-{short}", "writeKey": WEB_KEY,
                "sentAt": sent_at, "timestamp": sent_at, "context": {"library": {"name": "analytics.js"}}, **extra}
        resp = requests.post(f"{gateway.url}/v1/{short}", data=json.dumps(body),
                             headers={"Content-Type": "text/plain"}, timeout=15)
        assert resp.status_code == 200, (short, resp.text)
    metrics = requests.post(f"{gateway.url}/v1/m", data='{"series":[]}', headers={"Content-Type": "text/plain"},
                            timeout=15)
    assert metrics.status_code == 200
    events = by_message_id(wait_events(db, len(SHORT)))
    for short, (etype, extra) in SHORT.items():
        ev = events[f"short-{short}"]
        assert ev["type"] == etype and ev["_source_id"] == WEB_SOURCE_ID, ev
        assert all(ev[k] == v for k, v in extra.items())
        assert "writeKey" not in ev
    assert len(gw_events(db)) == len(SHORT)  # /v1/m is not an event

    batched = {"writeKey": WEB_KEY, "sentAt": sent_at,
               "batch": [{"type": "track", "anonymousId": "ajs-anon", "event": "B1", "messageId": "b-1"}]}
    resp = requests.post(f"{gateway.url}/v1/b", data=json.dumps(batched), headers={"Content-Type": "text/plain"},
                         timeout=15)
    assert resp.status_code == 200
    assert "b-1" in by_message_id(wait_events(db, len(SHORT) + 1))


@pytest.mark.parametrize("etype", ["track", "identify", "page", "screen", "group", "alias"])
def test_single_event_routes(gateway, db, etype):
    body = {"userId": "single-user", "messageId": f"single-{etype}", **SHORT[etype[0]][1]}
    resp = gateway.post(f"/v1/{etype}", body, headers={"Content-Type": "application/json;charset=UTF-8"})
    assert resp.status_code == 200 and resp.text == "OK"
    (ev,) = wait_events(db, 1)
    assert ev["type"] == etype and ev["messageId"] == f"single-{etype}" and ev["userId"] == "single-user"


def test_gzip_body_and_import_path(gateway, db):
    payload = {"batch": [track("gz1"), track("gz2")], "sentAt": datetime.now(UTC).isoformat()}
    resp = gateway.post("/v1/batch", gzip.compress(json.dumps(payload).encode()),
                        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert resp.status_code == 200, resp.text
    resp = gateway.post("/v1/import", gzip.compress(json.dumps({"batch": [track("imp1")]}).encode()),
                        headers={"Content-Encoding": "gzip"})
    assert resp.status_code == 200, resp.text
    assert sorted(by_message_id(wait_events(db, 3))) == ["m-gz1", "m-gz2", "m-imp1"]


def test_timestamps_enrichment_arithmetic(gateway, db):
    """Client clock 10 minutes fast: timestamp = receivedAt - (sentAt - originalTimestamp)."""
    client_now = datetime.now(UTC) + timedelta(minutes=10)
    original = client_now - timedelta(seconds=30)  # event happened 30 s (client clock) before sending
    body = {"sentAt": client_now.isoformat(), "context": {"app": {"name": "batch-ctx"}},
            "batch": [track("ts1", timestamp=original.isoformat()),
                      track("ts2", timestamp=original.isoformat(), sentAt=(client_now - timedelta(seconds=5)).isoformat()),
                      track("ts3")]}
    before = datetime.now(UTC)
    assert gateway.post("/v1/batch", body).status_code == 200
    after = datetime.now(UTC)
    events = by_message_id(wait_events(db, 3))
    for ev in events.values():
        assert_skew_corrected(ev)
        assert before - timedelta(milliseconds=1) <= parse_ts(ev["receivedAt"]) <= after
        assert ev["context"]["app"] == {"name": "batch-ctx"}  # batch context merged into each event
    e1, e2 = events["m-ts1"], events["m-ts2"]
    assert parse_ts(e1["originalTimestamp"]) == original.replace(microsecond=original.microsecond // 1000 * 1000)
    assert abs(parse_ts(e1["sentAt"]) - client_now) < timedelta(milliseconds=1)  # from the envelope
    assert abs((parse_ts(e1["receivedAt"]) - parse_ts(e1["timestamp"])) - timedelta(seconds=30)) \
        <= timedelta(milliseconds=2)
    assert abs((parse_ts(e2["receivedAt"]) - parse_ts(e2["timestamp"])) - timedelta(seconds=25)) \
        <= timedelta(milliseconds=2)  # the event's own sentAt wins over the envelope's
    # No client timestamp (e3): only the formula above is asserted. Today originalTimestamp falls back to
    # receivedAt, as in rudder-server, which leaves the client's clock skew in `timestamp`.


def test_concurrent_requests_all_acknowledged_and_queued(gateway, db):
    """Group commit under load: every 200 is a committed event, from many connections at once."""
    def worker(w: int) -> list[tuple[str, int]]:
        out = []
        with requests.Session() as s:
            for i in range(10):
                mid = f"c-{w}-{i}"
                batch = {"batch": [{"type": "track", "userId": f"cu-{w}", "event": "Load", "messageId": mid}]}
                r = s.post(gateway.url + "/v1/batch", json=batch, auth=(WEB_KEY, ""), timeout=30)
                out.append((mid, r.status_code))
        return out

    with ThreadPoolExecutor(24) as pool:
        results = [x for chunk in pool.map(worker, range(24)) for x in chunk]
    assert {code for _mid, code in results} == {200}
    queued = gw_events(db)
    assert sorted(e["messageId"] for e in queued) == sorted(mid for mid, _ in results)
    # Per user, the queue keeps the order in which one client's requests were acknowledged.
    for w in range(24):
        mine = [e["messageId"] for e in queued if e["userId"] == f"cu-{w}"]
        assert mine == [f"c-{w}-{i}" for i in range(10)]


# ---- CORS, health, version, rate limit -----------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/v1/t", "/v1/batch", "/v1/track", "/beacon/v1/batch"])
def test_cors_preflight_echoes_origin_and_requested_headers(gateway, path):
    origin = "http://shop.example.test:3000"
    asked = "authorization,content-type,x-retry-count,anonymousid,sentat"
    resp = requests.options(gateway.url + path, timeout=15, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": asked})
    assert 200 <= resp.status_code < 300, resp.status_code
    assert resp.headers["Access-Control-Allow-Origin"] == origin
    allowed = {h.strip().lower() for h in resp.headers["Access-Control-Allow-Headers"].split(",")}
    assert set(asked.split(",")) <= allowed and "authorization" in allowed
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    post = gateway.post(path, {"batch": [track("cors")]} if "batch" in path else {**track("cors"), "type": "track"},
                        headers={"Origin": origin})
    assert post.status_code == 200 and post.headers["Access-Control-Allow-Origin"] == origin


def test_health_and_version(gateway):
    health = gateway.get("/health")
    assert health.status_code == 200 and health.headers["Content-Type"].startswith("application/json")
    body = health.json()
    assert body["db"] == "UP" and body["server"] == "UP"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["config"]["loadedAt"]), "ISO 8601"
    version = gateway.get("/version")
    assert version.status_code == 200 and version.json()["version"]


def test_rate_limit_429_with_retry_after(dsn, workspace_file, tmp_path, db):
    gw = start_gateway(dsn, workspace_file, tmp_path, rate_limit_enabled="true", rate_limit_events=3,
                       rate_limit_window=60)
    try:
        statuses = [gw.post("/v1/track", track(f"rl{i}")) for i in range(5)]
        assert [r.status_code for r in statuses[:3]] == [200, 200, 200]
        limited = statuses[3]
        assert_json_error(limited, 429)
        assert int(limited.headers["Retry-After"]) >= 1
        # Limits are per write key: another source is unaffected.
        assert gw.post("/v1/track", track("other"), write_key=BACKEND_KEY).status_code == 200
        wait_for(lambda: len(gw_events(db)) == 4, timeout=10, what="4 accepted events")
    finally:
        gw.proc.stop()


# ---- hostile or odd bodies: a client mistake is a 4xx (SDKs retry 5xx forever), and never sinks its neighbours ----

def test_deeply_nested_json_is_400_not_500(gateway, db):
    body = b'{"userId":"u","event":"E","properties":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert len(body) < 32_768 * 8
    resp = gateway.post("/v1/track", body)
    # A 500 makes every SDK retry the same poison request (up to 10 times, or 12 hours for Segment clients).
    assert_json_error(resp, 400)
    assert gw_events(db) == []


@pytest.mark.parametrize("bad", [
    pytest.param(b'{"type":"track","userId":"u-nan","event":"E","messageId":"bad","properties":{"x":NaN}}', id="NaN"),
    pytest.param(b'{"type":"track","userId":"u-inf","event":"E","messageId":"bad","properties":{"x":1e400}}', id="1e400"),
    pytest.param(b'{"type":"track","userId":"u-\\u0000-nul","event":"E","messageId":"bad"}', id="NUL-in-userId"),
])
def test_one_unstorable_event_does_not_sink_the_batch(gateway, db, bad):
    """Postgres refuses NaN/Infinity in jsonb and NUL in text; that must cost only the event concerned."""
    body = b'{"batch":[' + json.dumps(track("good1")).encode() + b"," + bad + b"," + json.dumps(track("good2")).encode() + b"]}"
    resp = gateway.post("/v1/batch", body)
    assert resp.status_code == 200, resp.text
    queued = by_message_id(gw_events(db))
    assert {"m-good1", "m-good2"} <= set(queued), resp.text
    if "bad" not in queued:  # rejected: then it is reported and recorded like any invalid event
        assert [r["index"] for r in resp.json()["rejected"]] == [1], resp.text
        wait_for(lambda: any(r["status"] == 400 for r in rejected_rows(db)), timeout=10, what="gw_rejected row")


@pytest.mark.parametrize("settings, cases", [
    pytest.param({}, [  # the default: loopback and private ranges are trusted proxies
        ("203.0.113.9, 10.0.0.1", "203.0.113.9"),  # the right-most address that is not a trusted proxy
        ("<script>alert(1)</script>", None),  # garbage from a trusted proxy: no address at all
        ("203.0.113.9, unknown", None),
    ], id="trusted-peer"),
    pytest.param({"trusted_proxies": "198.51.100.0/24"}, [  # this client (127.0.0.1) is no trusted proxy
        ("203.0.113.9", LOCAL_IP),
        ("<script>alert(1)</script>", LOCAL_IP),
    ], id="untrusted-peer"),
    pytest.param({"trust_forwarded_for": "false"}, [("203.0.113.9", LOCAL_IP)], id="switched-off"),
])
def test_request_ip_from_x_forwarded_for_only_via_trusted_proxies(dsn, workspace_file, tmp_path, db, settings, cases):
    gw = start_gateway(dsn, workspace_file, tmp_path, **settings)
    try:
        for i, (forwarded, _expected) in enumerate(cases):
            resp = gw.post("/v1/track", {"userId": f"ip-{i}", "event": "E"}, headers={"X-Forwarded-For": forwarded})
            assert resp.status_code == 200, resp.text
        # A refused request is recorded with the same address.
        assert gw.post("/v1/track", {"userId": "ip-bad"}, headers={"X-Forwarded-For": cases[-1][0]}).status_code == 400
        rows = wait_for(lambda: rejected_rows(db), timeout=10, what="gw_rejected row")
    finally:
        gw.proc.stop()
    events = {e["userId"]: e for e in gw_events(db)}
    for i, (forwarded, expected) in enumerate(cases):
        assert events[f"ip-{i}"].get("request_ip") == expected, forwarded
    assert [r["request_ip"] for r in rows] == [cases[-1][1]]


def test_sdk_settings_name_public_url_whatever_the_host_header(gateway, dsn, workspace_file, tmp_path):
    spoofed = {"Host": "evil.example", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}
    resp = gateway.get(f"/v1/projects/{WEB_KEY}/settings", headers=spoofed)
    assert resp.status_code == 200, resp.text
    assert resp.json()["integrations"]["Segment.io"] == {
        "apiKey": WEB_KEY, "apiHost": f"127.0.0.1:{gateway.port}/v1", "protocol": "http"}
    public = start_gateway(dsn, workspace_file, tmp_path, public_url="https://collect.example.com/cdp")
    try:
        resp = public.get(f"/v1/projects/{WEB_KEY}/settings", headers=spoofed)
        config = public.get(f"/sourceConfig/?p=npm&v=3.34.1&writeKey={WEB_KEY}", headers=spoofed)
    finally:
        public.proc.stop()
    assert resp.json()["integrations"]["Segment.io"] == {
        "apiKey": WEB_KEY, "apiHost": "collect.example.com/cdp/v1", "protocol": "https"}
    assert config.status_code == 200 and "evil.example" not in config.text
    assert config.json()["source"]["id"] == WEB_SOURCE_ID and config.json()["source"]["destinations"] == []


def test_source_config_over_http(gateway):
    origin = {"Origin": "http://shop.example"}
    resp = gateway.get(f"/sourceConfig/?writeKey={WEB_KEY}", headers=origin)
    assert resp.status_code == 200 and resp.headers["Access-Control-Allow-Origin"] == "http://shop.example"
    assert resp.json()["source"]["writeKey"] == WEB_KEY
    assert gateway.get("/sourceConfig", headers=basic(WEB_KEY)).status_code == 200
    assert_json_error(gateway.get("/sourceConfig/?writeKey=nope"), 401, "invalid_write_key")
    assert_json_error(gateway.get(f"/sourceConfig/?writeKey={DISABLED_KEY}"), 404, "source_disabled")
