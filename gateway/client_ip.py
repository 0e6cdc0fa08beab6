"""Which address a request came from (`request_ip`): the peer, or what trusted proxies say in
X-Forwarded-For. Anything else a client writes there is ignored, and the answer is always a valid IP
address or None."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from config.settings import SettingsError

_ZONE = re.compile(r"[A-Za-z0-9_.-]{1,32}")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(text: str, setting: str = "SLUICE_TRUSTED_PROXIES") -> tuple[IPNetwork, ...]:
    """Comma-separated CIDRs (or single addresses) to networks; SettingsError names the bad entry."""
    networks = []
    for entry in text.split(","):
        entry = entry.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise SettingsError(f"{setting}: {entry!r} is not an IP address or CIDR network "
                                "(expected e.g. 10.0.0.0/8, 192.0.2.7 or fc00::/7)") from None
    return tuple(networks)


def parse_ip(value: object) -> IPAddress | None:
    """An address as a client or proxy may write it: `192.0.2.1`, `2001:db8::1`, `[2001:db8::1]`, or either
    with a port (`192.0.2.1:5000`, `[2001:db8::1]:5000`). IPv4-mapped IPv6 becomes IPv4; an IPv6
    zone is dropped. None if it is not one."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or len(text) > 64:
        return None
    if text.startswith("["):  # [v6] or [v6]:port
        end = text.find("]")
        if end < 0 or (text[end + 1:] and not _is_port(text[end + 1:])):
            return None
        text = text[1:end]
    elif text.count(":") == 1 and "." in text:  # v4:port
        text, port = text.split(":")
        if not _is_port(":" + port):
            return None
    text, percent, zone = text.partition("%")  # an IPv6 zone (fe80::1%eth0) means something only on the proxy
    if percent and not _ZONE.fullmatch(zone):
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if percent and address.version == 4:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_port(text: str) -> bool:
    digits = text[1:]
    return text.startswith(":") and digits.isascii() and digits.isdigit() and len(digits) <= 5


def valid_ip(value: object) -> str | None:
    """The canonical text of an IP address, or None when `value` is not one."""
    address = parse_ip(value)
    return None if address is None else str(address)


def _trusted(address: IPAddress, trusted: Iterable[IPNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in trusted)


def client_ip(peer: str | None, forwarded_for: list[str], trusted: tuple[IPNetwork, ...],
              honour_forwarded: bool = True) -> str | None:
    """The client's address. `peer` is the TCP peer; `forwarded_for` the X-Forwarded-For header values in
    order. X-Forwarded-For counts only when the peer is a trusted proxy: walking it from the right, each
    trusted proxy is passed over and the first address that is not one is the client. An entry that is
    not an address ends the walk with None: a trusted proxy wrote something we cannot trust."""
    address = parse_ip(peer)
    if address is None:
        return None
    if not honour_forwarded or not forwarded_for or not _trusted(address, trusted):
        return str(address)
    hops = [hop for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        if not hop.strip():
            continue
        hop_address = parse_ip(hop)
        if hop_address is None:
            return None
        address = hop_address
        if not _trusted(address, trusted):
            break
    # Every hop trusted: the left-most is the furthest we know of.
    return str(address)
