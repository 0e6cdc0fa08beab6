"""Input that once answered 500 or sank other clients' events: out-of-range timestamps, deep nesting,
NUL in write keys, floods of bad requests. Each must cost only the request or event concerned."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import requests

from gateway.enrich import MAX_EVENT_DEPTH
from tests.conftest import gw_events, start_gateway
from tests.e2e.helpers import assert_skew_corrected, by_message_id, parse_ts, trunc_ms, wait_events
from tests.gateway.conftest import fetch
from tests.support.procs import wait_for
from tests.support.workspace import WEB_KEY

LATE = "9999-12-31T23:59:59-14:00"  # past datetime's range once in UTC
EARLY = "0001-01-01T00:00:00+14:00"  # before it


def track(mid: str, **extra) -> dict:
    return {"type": "track", "userId": f"u-{mid}", "event": "Probe", "messageId": mid, **extra}


# ---- timestamps --------------------------------------------------------------------------------------------

def test_out_of_range_timestamps_fall_back_to_received_at(gateway, db):
    sent = {}
    for field in ("timestamp", "originalTimestamp", "sentAt"):
        for value in (LATE, EARLY):
            mid = f"{field}-{value[:4]}"
            resp = gateway.post("/v1/track", track(mid, **{field: value}))
            assert resp.status_code == 200, (mid, resp.status_code, resp.text)
            sent[mid] = (field, value)
    # Each parses, but the skew correction lands out of range: still only this event's fallback.
    resp = gateway.post("/v1/track", track("overflow", originalTimestamp="0001-01-02T00:00:00Z",
                                           sentAt="9999-12-30T00:00:00Z"))
    assert resp.status_code == 200, resp.text
    events = by_message_id(wait_events(db, len(sent) + 1))
    for mid, (field, value) in sent.items():
        ev = events[mid]
        kept = "sentAt" if field == "sentAt" else "originalTimestamp"
        assert ev[kept] == value, (mid, ev)  # the client's string, as sent
        assert ev["timestamp"] == ev["receivedAt"], (mid, ev)
    ev = events["overflow"]
    assert ev["timestamp"] == ev["receivedAt"]
    assert ev["originalTimestamp"].startswith("0001-01-02") and ev["sentAt"].startswith("9999-12-30")


def test_out_of_range_timestamps_in_a_batch_leave_the_good_event_untouched(gateway, db):
    now = datetime.now(UTC)
    client_ts = (now - timedelta(seconds=30)).isoformat()
    good = track("good", timestamp=client_ts)
    batch = [good, track("bad-ts", timestamp=LATE), track("bad-sent", sentAt=EARLY),
             track("bad-orig", originalTimestamp=EARLY)]
    resp = gateway.post("/v1/batch", {"batch": batch, "sentAt": now.isoformat()})
    assert resp.status_code == 200 and resp.text == "OK", resp.text
    # A batch-level sentAt out of range: every event keeps it as sent, and falls back.
    resp = gateway.post("/v1/batch", {"batch": [track("env-1"), track("env-2", timestamp=client_ts)], "sentAt": LATE})
    assert resp.status_code == 200, resp.text

    events = by_message_id(wait_events(db, 6))
    ev = events["good"]
    assert_skew_corrected(ev)
    assert parse_ts(ev["originalTimestamp"]) == trunc_ms(parse_ts(client_ts))
    assert abs(parse_ts(ev["sentAt"]) - now) < timedelta(milliseconds=1)
    assert events["bad-ts"]["originalTimestamp"] == LATE
    assert events["bad-sent"]["sentAt"] == EARLY
    assert events["bad-orig"]["originalTimestamp"] == EARLY
    for mid in ("bad-ts", "bad-sent", "bad-orig", "env-1", "env-2"):
        assert events[mid]["timestamp"] == events[mid]["receivedAt"], events[mid]
    assert events["env-1"]["sentAt"] == LATE and events["env-2"]["sentAt"] == LATE
    assert parse_ts(events["env-2"]["originalTimestamp"]) == trunc_ms(parse_ts(client_ts))


# ---- nesting -----------------------------------------------------------------------------------------------

def nested_properties(depth: int) -> str:
    """JSON text of `properties` nested `depth` objects deep (built as text: json.dumps would recurse)."""
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


def single_body(mid: str, depth: int) -> bytes:
    return f'{{"type":"track","userId":"u","event":"Deep","messageId":"{mid}","properties":{nested_properties(depth)}}}'.encode()


def assert_one_line_error(resp: requests.Response, status: int) -> None:
    assert resp.status_code == status, (resp.status_code, resp.text[:300])
    body = resp.json()
    assert body["code"] and body["message"] and "\n" not in body["message"], body


def test_every_nesting_depth_is_200_or_400_never_5xx(gateway, db):
    good_ids = []
    with requests.Session() as s:
        s.auth = (WEB_KEY, "")
        # The documented limit: an event nests at most MAX_EVENT_DEPTH levels (properties is level 2).
        ok = s.post(gateway.url + "/v1/track", data=single_body("at-limit", MAX_EVENT_DEPTH - 1), timeout=15)
        assert ok.status_code == 200, ok.text
        good_ids.append("at-limit")
        assert_one_line_error(s.post(gateway.url + "/v1/track", data=single_body("over", MAX_EVENT_DEPTH),
                                     timeout=15), 400)
        for depth in range(899, 1102):
            resp = s.post(gateway.url + "/v1/track", data=single_body(f"deep-{depth}", depth), timeout=15)
            assert resp.status_code in (200, 400), (depth, resp.status_code, resp.text[:300])
            if resp.status_code == 400:
                assert_one_line_error(resp, 400)
            shallow = json.dumps(track(f"good-{depth}"))
            body = f'{{"batch":[{single_body(f"deep-b-{depth}", depth).decode()},{shallow}]}}'
            resp = s.post(gateway.url + "/v1/batch", data=body, timeout=15)
            assert resp.status_code == 200, (depth, resp.status_code, resp.text[:300])
            answer = resp.json()
            assert answer["accepted"] == 1 and [r["index"] for r in answer["rejected"]] == [0], (depth, answer)
            assert "nested" in answer["rejected"][0]["reason"] and "\n" not in answer["rejected"][0]["reason"]
            good_ids.append(f"good-{depth}")
    # Cutting the deep parts out of a body is only done for a request whose write key is valid and found
    # without parsing (Basic user, ?writeKey=); with the key inside the body, the request is one 400.
    body = f'{{"writeKey":"{WEB_KEY}","batch":[{single_body("deep-k", 1101).decode()},{json.dumps(track("k"))}]}}'
    assert_one_line_error(requests.post(gateway.url + "/v1/batch", data=body, timeout=15), 400)
    resp = requests.post(gateway.url + "/v1/batch", params={"writeKey": WEB_KEY}, data=body, timeout=15)
    assert resp.status_code == 200 and resp.json()["accepted"] == 1, resp.text
    good_ids.append("k")
    stored = {e["messageId"] for e in gw_events(db)}
    assert set(good_ids) <= stored
    assert not any(mid.startswith("deep") or mid == "over" for mid in stored)
    # The refused deep events were recorded (as bounded excerpts: they cannot be stored as JSON).
    [(n, longest)] = fetch(gateway.dsn, "SELECT count(*), max(octet_length(coalesce(raw, '') || coalesce(event::text, '')))"
                                        " FROM gw_rejected WHERE reason LIKE '%nested%'")
    assert n > 0 and longest <= 8192


# ---- NUL in write keys ----------------------------------------------------------------------------------------

def test_nul_write_keys_never_cost_other_clients_their_events(gateway, db):
    stop = threading.Event()
    attack_statuses: list[int] = []

    def attacker(kind: str) -> None:
        with requests.Session() as s:
            while not stop.is_set():
                if kind == "basic":
                    r = s.post(gateway.url + "/v1/track", json=track("x"), auth=("\x00bad", ""), timeout=15)
                elif kind == "body":
                    r = s.post(gateway.url + "/v1/track", data=json.dumps({**track("x"), "writeKey": "\x00bad"}),
                               timeout=15)
                else:
                    r = s.post(gateway.url + "/v1/track?writeKey=%00bad", json=track("x"), timeout=15)
                attack_statuses.append(r.status_code)

    def client(w: int) -> list[tuple[str, int]]:
        out = []
        with requests.Session() as s:
            for i in range(25):
                mid = f"good-{w}-{i}"
                r = s.post(gateway.url + "/v1/track", json=track(mid), auth=(WEB_KEY, ""), timeout=15)
                out.append((mid, r.status_code))
        return out

    attackers = [threading.Thread(target=attacker, args=(k,)) for k in ("basic", "body", "query") for _ in range(2)]
    for t in attackers:
        t.start()
    try:
        wait_for(lambda: len(attack_statuses) >= 30, timeout=20, what="the attack to be under way")
        with ThreadPoolExecutor(8) as pool:
            results = [x for chunk in pool.map(client, range(8)) for x in chunk]
    finally:
        stop.set()
        for t in attackers:
            t.join(20)
    codes = {code for _mid, code in results}
    assert codes == {200}, f"good clients got {sorted(codes)} while NUL write keys were sent"
    assert set(attack_statuses) == {401}, set(attack_statuses)
    stored = {e["messageId"] for e in gw_events(db)}
    assert {mid for mid, _ in results} <= stored
    # The attackers' rejections were recorded too, sanitised (NUL removed), within the cap.
    wait_for(lambda: fetch(gateway.dsn, "SELECT count(*) FROM gw_rejected WHERE write_key = 'bad'")[0][0] > 0,
             timeout=15, what="sanitised rejection records")


# ---- bounded rejection records ------------------------------------------------------------------------------

def unrecorded_over_cap(url: str) -> float:
    for line in requests.get(url + "/metrics", timeout=15).text.splitlines():
        if line.startswith('sluice_gateway_rejections_unrecorded_total{reason="over_cap"}'):
            return float(line.split()[-1])
    return 0.0


def test_rejection_records_are_capped_per_source_and_unauthenticated_bodies_are_short(dsn, workspace_file,
                                                                                     tmp_path, db):
    cap = 15
    gw = start_gateway(dsn, workspace_file, tmp_path, gw_rejected_per_minute=cap)
    try:
        with requests.Session() as s:
            for i in range(3 * cap):  # authenticated, invalid events (no event name)
                r = s.post(gw.url + "/v1/track", json={"userId": f"u{i}", "properties": {"pad": "p" * 3000}},
                           auth=(WEB_KEY, ""), timeout=15)
                assert r.status_code == 400
            big = json.dumps({"batch": [track(f"n{i}", properties={"pad": "q" * 500}) for i in range(40)]})
            assert len(big) > 20_000
            for i in range(3 * cap):  # no valid write key, a 20 KB body
                r = s.post(gw.url + "/v1/batch", data=big, auth=(f"wrong-key-{i}", ""), timeout=15)
                assert r.status_code == 401
        # Stored records arrive with the next commit; an accepted event forces one.
        assert gw.post("/v1/track", track("flush")).status_code == 200

        def counts():
            return dict(fetch(dsn, "SELECT source_id IS NOT NULL, count(*) FROM gw_rejected GROUP BY 1"))

        wait_for(lambda: counts() == {True: cap, False: cap}, timeout=15, what=f"{cap} records per source")
        [(longest,)] = fetch(dsn, "SELECT max(octet_length(coalesce(raw, '')) + octet_length(coalesce(event::text, '')))"
                                  " FROM gw_rejected WHERE source_id IS NULL")
        assert 0 < longest <= 2048, longest
        assert unrecorded_over_cap(gw.url) == 4 * cap
        assert counts() == {True: cap, False: cap}
    finally:
        gw.proc.stop()
