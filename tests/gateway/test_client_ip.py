"""`request_ip` (gateway.client_ip): X-Forwarded-For believed only from trusted proxies, read from the
right; the answer is always a valid IP address or None, whatever a client writes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from config.settings import SettingsError, load_settings
from gateway.client_ip import client_ip, parse_networks, valid_ip
from gateway.enrich import enrich

DEFAULT = parse_networks(load_settings(env={}).trusted_proxies)
LB = parse_networks("198.51.100.0/24")  # a load balancer on public addresses; loopback not trusted


@pytest.mark.parametrize("peer, forwarded, trusted, expected", [
    # No header, or an untrusted peer: the peer, whatever the header says.
    ("203.0.113.5", [], DEFAULT, "203.0.113.5"),
    ("203.0.113.5", ["198.51.100.1"], DEFAULT, "203.0.113.5"),
    ("203.0.113.5", ["<script>alert(1)</script>"], DEFAULT, "203.0.113.5"),
    ("127.0.0.1", ["203.0.113.9"], LB, "127.0.0.1"),
    # A trusted peer: the right-most address that is not a trusted proxy.
    ("127.0.0.1", ["203.0.113.9"], DEFAULT, "203.0.113.9"),
    ("127.0.0.1", ["203.0.113.9, 10.0.0.1"], DEFAULT, "203.0.113.9"),
    ("10.0.0.2", ["1.1.1.1, 203.0.113.9, 192.168.1.1"], DEFAULT, "203.0.113.9"),  # 1.1.1.1: the client's claim
    ("127.0.0.1", ["1.1.1.1", "203.0.113.9"], DEFAULT, "203.0.113.9"),  # several headers, in order
    ("198.51.100.7", ["203.0.113.9, 198.51.100.8"], LB, "203.0.113.9"),
    ("127.0.0.1", ["10.0.0.7, 192.168.0.1"], DEFAULT, "10.0.0.7"),  # every hop trusted: the left-most
    ("127.0.0.1", [" 203.0.113.9 ,, "], DEFAULT, "203.0.113.9"),
    # Address forms proxies write.
    ("127.0.0.1", ["[2001:db8::7]:4711"], DEFAULT, "2001:db8::7"),
    ("127.0.0.1", ["203.0.113.9:4711"], DEFAULT, "203.0.113.9"),
    ("::ffff:127.0.0.1", ["::ffff:203.0.113.9"], DEFAULT, "203.0.113.9"),
    ("::1", ["2001:DB8::0:7"], DEFAULT, "2001:db8::7"),
    # Garbage from a trusted proxy: no address at all.
    ("127.0.0.1", ["<script>alert(1)</script>"], DEFAULT, None),
    ("127.0.0.1", ["203.0.113.9, unknown"], DEFAULT, None),
    ("127.0.0.1", ["203.0.113.9, 10.0.0.1, 999.1.1.1"], DEFAULT, None),
    ("127.0.0.1", ["203.0.113.9:port"], DEFAULT, None),
    ("127.0.0.1", ["1" * 100], DEFAULT, None),
    # The peer itself is not an address (a unix socket): none.
    ("", ["203.0.113.9"], DEFAULT, None),
    (None, [], DEFAULT, None),
])
def test_client_ip(peer, forwarded, trusted, expected):
    assert client_ip(peer, forwarded, trusted) == expected


def test_forwarded_for_switched_off():
    assert client_ip("127.0.0.1", ["203.0.113.9"], DEFAULT, honour_forwarded=False) == "127.0.0.1"


def test_garbage_left_of_the_client_does_not_matter():
    assert client_ip("127.0.0.1", ["<script>, 203.0.113.9"], DEFAULT) == "203.0.113.9"


def test_default_trusted_proxies_are_loopback_and_private_ranges():
    assert [str(n) for n in DEFAULT] == ["127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12",
                                         "192.168.0.0/16", "fc00::/7"]
    assert parse_networks(" 192.0.2.7 , ,2001:db8::/32") == parse_networks("192.0.2.7/32,2001:db8::/32")
    assert parse_networks("") == ()
    with pytest.raises(SettingsError, match="'proxy.example'"):
        parse_networks("10.0.0.0/8,proxy.example")


def enriched_ip(event_ip, request_ip):
    event = {"type": "track", "userId": "u", "event": "E"}
    if event_ip is not ...:
        event["request_ip"] = event_ip
    out, _key, _payload = enrich(event, event_type=None, received_at=datetime(2026, 1, 1, tzinfo=UTC),
                                 request_ip=request_ip)
    return out.get("request_ip", "absent")


@pytest.mark.parametrize("event_ip, request_ip, expected", [
    (..., "203.0.113.9", "203.0.113.9"),
    (..., None, "absent"),
    ("198.51.100.4", "203.0.113.9", "198.51.100.4"),  # the client's own, as rudder-server keeps it
    ("<script>", "203.0.113.9", "203.0.113.9"),
    ("<script>", None, "absent"),
    (12345, None, "absent"),
    ({"ip": "1.2.3.4"}, None, "absent"),
])
def test_event_request_ip_is_an_address_or_absent(event_ip, request_ip, expected):
    assert enriched_ip(event_ip, request_ip) == expected


def test_valid_ip():
    assert valid_ip("  10.0.0.1 ") == "10.0.0.1"
    assert valid_ip("fe80::1%eth0") == valid_ip("[fe80::1%eth0]:80") == "fe80::1"
    for bad in ("", " ", "10.0.0", "10.0.0.1.2", "[::1", "::1]", None, 7, "1.2.3.4:0:1", "fe80::1%<script>",
                "fe80::1%", "10.0.0.1%eth0", "::1%a b"):
        assert valid_ip(bad) is None, bad
