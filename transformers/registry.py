"""Every destination Sluice can deliver to, by destinationDefinition.name, with what it declares about
itself (transformers/<dest>/spec.py)."""

from __future__ import annotations

from transformers.amplitude.spec import SPEC as AMPLITUDE
from transformers.ga.spec import SPEC as GA
from transformers.ga4.spec import SPEC as GA4
from transformers.spec import DestinationSpec
from transformers.warehouse.spec import SPEC as POSTGRES
from transformers.webhook.spec import SPEC as WEBHOOK

SPECS: dict[str, DestinationSpec] = {s.name: s for s in (GA4, GA, AMPLITUDE, WEBHOOK, POSTGRES)}


def spec_of(dest_type: str) -> DestinationSpec | None:
    return SPECS.get(dest_type)
