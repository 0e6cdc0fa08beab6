"""What a destination declares about itself, in its own folder (`transformers/<dest>/spec.py`): its
config rules, the message types its transformer takes, how it batches and where it sends. The workspace
check, the fan-out and the docs ask this registry instead of keeping their own copies."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from transformers.config_rules import Path, Rules


@dataclass(frozen=True)
class DestinationSpec:
    name: str                                 # destinationDefinition.name, e.g. "GA4"
    display_name: str
    message_types: tuple[str, ...]            # what the transformer (or loader) accepts
    check: Callable[[Rules], None]            # the config rules
    endpoints: tuple[str, ...] = ()           # where requests go (before endpoint overrides)
    batching: dict | None = None              # {"events": n, "bytes": n} when requests merge
    notes: tuple[str, ...] = field(default=())  # shown by `config check` with the destination

    def problems(self, config: dict) -> list[tuple[Path, str]]:
        rules = Rules(config)
        self.check(rules)
        return rules.problems
