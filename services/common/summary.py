"""A video run's summary, defined once. The gateway counts it, the status service keeps it,
the status answer shows it; everything else derives from this class: the JSON answer's
camelCase keys and the OpenAPI schema (gateway/schemas.py), store rows (the stores'
rows.py), and the proto's `RunSummary` message (same field names, checked by a test).
Adding a field: here and in protos/storyshort/status/v1/status.proto."""

from __future__ import annotations

import typing
from dataclasses import dataclass, fields
from typing import Any


@dataclass
class RunSummary:
    generated: int = 0  # scenes that got a real image
    placeholders: int = 0
    failed: int = 0  # scenes that could not be stored
    skipped: int = 0  # scenes that already had a real image (a resumed run)
    hard_provider_failures: int = 0
    provider_attempts: int = 0
    elapsed_ms: int = 0
    spend_usd: float = 0.0  # estimated; unknown when unpriced_images > 0
    unpriced_images: int = 0


FIELD_TYPES: dict[str, type] = typing.get_type_hints(RunSummary)


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.title() for word in rest)


def summary_from_values(values: dict[str, Any]) -> RunSummary:
    """From any mapping of field names (a JSON row, a message's fields), each value of its
    declared type; unknown names are ignored."""
    return RunSummary(**{name: FIELD_TYPES[name](v) for name, v in values.items() if name in FIELD_TYPES})


def summary_json(summary: Any) -> dict[str, Any]:
    """The answer's camelCase summary from anything with the fields (a dataclass, a
    message). Spend is null where it is unknown (an image had no price), never 0."""
    out: dict[str, Any] = {camel(f.name): getattr(summary, f.name) for f in fields(RunSummary)}
    out["spendUsd"] = round(summary.spend_usd, 6) if not summary.unpriced_images else None
    return out
