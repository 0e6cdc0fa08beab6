"""Which destinations of a source get an event, and, for those that don't, the rule that said no.

Pure functions, no I/O. Rules before the user transformation look at the destination and the event's
`integrations` object; rules after it look at the event the destination would actually receive
(a transformation may change its type or name), as rudder-server does.
"""

from __future__ import annotations

from typing import Any

from config.workspace import Destination

# Rule names, as counted in filtered_counts.
DESTINATION_DISABLED = "destination_disabled"
PROCESSOR_DISABLED = "processor_disabled"
INTEGRATIONS = "integrations"
MESSAGE_TYPE = "supported_message_types"
EVENT_FILTERING = "event_filtering"
USER_TRANSFORM = "user_transform"  # the transformation returned null / an empty array
DUPLICATE = "duplicate"  # a messageId already processed within the dedup window
SOURCE_UNKNOWN = "source_unknown"  # the source was removed from the config after the event was accepted
SOURCE_DISABLED = "source_disabled"

_NO_INTEGRATIONS: dict = {}


def integrations_of(event: dict) -> dict | None:
    """The event's `integrations` object; None when it is present but not an object (nothing matches)."""
    value = event.get("integrations")
    if value is None:
        return _NO_INTEGRATIONS
    return value if isinstance(value, dict) else None


def allowed_by_integrations(integrations: dict | None, display_name: str) -> bool:
    """rudder-server's FilterClientIntegrations: keys are destination display names, `All` defaults to
    true, a boolean under the destination's name decides, an object under it means included."""
    if integrations is None:
        return False
    all_value = integrations.get("All", True)
    if not isinstance(all_value, bool):
        return False
    value = integrations.get(display_name)
    if isinstance(value, bool):
        return value
    if isinstance(value, dict):
        return True
    return all_value


def before_transform(event: dict, integrations: dict | None, dest: Destination) -> str | None:
    """The rule that keeps `dest` from receiving `event`, or None. Checked before the user transformation."""
    if not dest.enabled:
        return DESTINATION_DISABLED
    if not dest.is_processor_enabled:
        return PROCESSOR_DISABLED
    if not allowed_by_integrations(integrations, dest.display_name):
        return INTEGRATIONS
    return None


class DestinationRules:
    """A destination's rules, prepared once per config version (allow / deny lists as sets)."""

    def __init__(self, dest: Destination):
        self.dest = dest
        self.supported = frozenset(dest.supported_message_types) if dest.supported_message_types is not None else None
        option = dest.config.get("eventFilteringOption")
        self.filter_option = option if option in ("whitelistedEvents", "blacklistedEvents") else None
        self.listed = _names(dest.config.get(option)) if self.filter_option else None

    def after_transform(self, event: dict) -> str | None:
        """The rule that keeps this destination from receiving the (transformed) event, or None."""
        if self.supported is not None:
            kind = event.get("type")
            if not isinstance(kind, str) or kind.lower() not in self.supported:
                return MESSAGE_TYPE
        if self.filter_option is not None and not self._event_allowed(event):
            return EVENT_FILTERING
        return None

    def _event_allowed(self, event: dict) -> bool:
        # As in RudderStack's SDKs: only track events are filtered, names are compared trimmed and
        # case-insensitively, and an allow list that is not a list lets nothing through.
        if event.get("type") != "track":
            return True
        name = event.get("event")
        name = name.strip().upper() if isinstance(name, str) else ""
        if self.filter_option == "whitelistedEvents":
            return self.listed is not None and name in self.listed
        return self.listed is None or name not in self.listed


def after_transform(event: dict, dest: Destination) -> str | None:
    """The allow / deny list (`eventFilteringOption` with `whitelistedEvents` / `blacklistedEvents`, each
    a list of {eventName}) and the supported message types, applied to the event `dest` would receive."""
    return DestinationRules(dest).after_transform(event)


def _names(entries: Any) -> frozenset[str] | None:
    if not isinstance(entries, list):
        return None
    out = set()
    for entry in entries:
        value = entry.get("eventName") if isinstance(entry, dict) else entry
        if isinstance(value, str) and value.strip():
            out.add(value.strip().upper())
    return frozenset(out)
