"""Estimated cost of an image, from a price table kept in configuration (no price in code).

IMAGEGEN_PRICES_FILE points at a JSON object keyed by model:

    {"gpt-image-2": {
        "per_image": {"1024x1024": {"low": 0.011, "medium": 0.042, "high": 0.167, "*": 0.042}, "*": {"*": 0.06}},
        "per_million_tokens": {"input": 5.0, "output": 40.0}}}

Where the API reports token usage and the model has token prices, the cost is computed from
the tokens; otherwise from the per-image price of the size and quality sent ("*" matches any).
A configured model with no price is a warning: its spend is counted as unknown, never zero."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger(__name__)


class TokenPrices(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: float = Field(ge=0)
    output: float = Field(ge=0)


class ModelPrice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # size -> quality -> USD per image
    per_image: dict[str, dict[str, float]] = Field(default_factory=dict)
    per_million_tokens: TokenPrices | None = None


class PriceTableFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: dict[str, ModelPrice]


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0


class PriceTable:
    def __init__(self, models: dict[str, ModelPrice]) -> None:
        self.models = models

    @classmethod
    def load(cls, path: Path | None) -> PriceTable:
        """Fails at start, naming the key, when the file is malformed."""
        if path is None:
            return cls({})
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise SystemExit(f"IMAGEGEN_PRICES_FILE {path}: cannot read it as JSON: {exc}") from exc
        try:
            table = PriceTableFile.model_validate({"models": raw})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'][1:])}: {err['msg']}" for err in exc.errors()[:5]
            )
            raise SystemExit(f"IMAGEGEN_PRICES_FILE {path} is malformed: {problems}") from exc
        for model, price in table.models.items():
            for size, qualities in price.per_image.items():
                for quality, usd in qualities.items():
                    if usd < 0:
                        raise SystemExit(f"IMAGEGEN_PRICES_FILE {path}: {model}.per_image.{size}.{quality} is negative")
        return cls(table.models)

    def warn_missing(self, models: list[str]) -> list[str]:
        missing = [m for m in models if m not in self.models]
        for model in missing:
            log.warning("no price for a configured model: its spend is counted as unknown", extra={"provider": model})
        return missing

    def per_image(self, model: str, size: str, quality: str) -> float | None:
        price = self.models.get(model)
        if price is None:
            return None
        qualities = price.per_image.get(size) or price.per_image.get("*")
        if not qualities:
            return None
        value = qualities.get(quality or "auto")
        if value is None:
            value = qualities.get("*")
        return value

    def cost(self, model: str, size: str, quality: str, usage: Usage | None) -> float | None:
        """Estimated USD for one image, or None when the price is unknown."""
        price = self.models.get(model)
        if price is None:
            return None
        if usage is not None and price.per_million_tokens is not None and (usage.input_tokens or usage.output_tokens):
            tokens = price.per_million_tokens
            return (usage.input_tokens * tokens.input + usage.output_tokens * tokens.output) / 1_000_000
        return self.per_image(model, size, quality)
