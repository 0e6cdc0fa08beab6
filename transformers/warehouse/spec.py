"""POSTGRES, the warehouse destination: its config rules (RudderStack's keys, or a `url`)."""

from transformers.config_rules import MISSING, Rules, expected
from transformers.spec import DestinationSpec

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def check(r: Rules) -> None:
    url = r.get("url")
    if url is not MISSING and url is not None and not isinstance(url, str):
        r.add("url", expected("string (postgresql://user:password@host:port/database)", url))
    if not (isinstance(url, str) and url.strip()):  # a url stands in for the connection keys
        for key in ("host", "database", "user"):
            r.required_string(key)
    port = r.get("port")
    if port is not MISSING and port is not None:
        ok = (isinstance(port, int) and not isinstance(port, bool)) or (isinstance(port, str) and port.isdigit())
        if not ok:
            r.add("port", expected("port number (number or digit string)", port))
    if r.get("sslMode") not in (MISSING, None, ""):
        r.one_of("sslMode", SSL_MODES)
    r.number_like("syncFrequency", "minutes, as a number or a digit string")


SPEC = DestinationSpec(name="POSTGRES", display_name="PostgreSQL",
                       message_types=("track", "identify", "page", "screen", "group", "alias"), check=check)
