"""Estimated cost of an image, from a price table kept in configuration (no price in code).

IMAGEGEN_PRICES_FILE points at a JSON object keyed by model:

    {"gpt-image-2": {
        "per_image": {"1024x1024": {"low": 0.011, "medium": 0.042, "high": 0.167, "*": 0.042}, "*": {"*": 0.06}},
        "per_million_tokens": {"input": 5.0, "output": 40.0}}}

Where the API reports token usage and the model has token prices, the cost is computed from
the tokens; otherwise from the per-image price of the size and quality sent ("*" matches any).
Partial images streamed before the final are billed too: `per_partial` USD each, or about 100
output tokens each at the token price; quotes and holds count the partials a model may send.
A configured model with no price is a warning: its spend is counted as unknown, never zero."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.imagegen import metrics
from services.imagegen.providers.base import ImageProvider, ImageRequest, PriceKey, Usage, billed_partials

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
    # USD per partial image streamed before the final (unset: PARTIAL_TOKENS output tokens
    # at the token price, where there is one; else nothing is added).
    per_partial: float | None = Field(None, ge=0)


# OpenAI's guide: each partial image adds about 100 output image tokens.
PARTIAL_TOKENS = 100


class PriceTableFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: dict[str, ModelPrice]


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

    def per_image(self, model: str, size: str, quality: str, partials: int = 0) -> float | None:
        """One image's price, with ``partials`` partial images streamed before it."""
        price = self.models.get(model)
        if price is None:
            return None
        qualities = price.per_image.get(size) or price.per_image.get("*")
        if not qualities:
            return None
        value = qualities.get(quality or "auto")
        if value is None:
            value = qualities.get("*")
        if value is None or not partials:
            return value
        return value + partials * self.partial_price(price)

    @staticmethod
    def partial_price(price: ModelPrice) -> float:
        if price.per_partial is not None:
            return price.per_partial
        tokens = price.per_million_tokens
        return PARTIAL_TOKENS * tokens.output / 1_000_000 if tokens is not None else 0.0

    def quote(self, providers: list[ImageProvider], request: ImageRequest, streamed: bool) -> tuple[float, list[str]]:
        """The most one image can cost on these providers (``streamed``: with the partial
        images each may send), and those with no price for it."""
        highest, unpriced = 0.0, []
        for provider in providers:
            key = provider.price_key(request)
            estimate = self.per_image(provider.name, key.size, key.quality, billed_partials(provider, streamed))
            if estimate is None:
                unpriced.append(provider.name)
            else:
                highest = max(highest, estimate)
        return highest, unpriced

    def charge(self, model: str, key: PriceKey, usage: Usage | None, partials: int) -> float | None:
        """An image's cost, counted in the spend metrics (or as unpriced)."""
        cost = self.cost(model, key.size, key.quality, usage, partials)
        if cost is None:
            metrics.UNPRICED_IMAGES.labels(model).inc()
        else:
            metrics.SPEND.labels(model).inc(cost)
        return cost

    def cost(self, model: str, size: str, quality: str, usage: Usage | None, partials: int = 0) -> float | None:
        """Estimated USD for one image (and the partial images sent before it), or None
        when the price is unknown. Token usage, where given, counts the partials already."""
        price = self.models.get(model)
        if price is None:
            return None
        if usage is not None and price.per_million_tokens is not None and (usage.input_tokens or usage.output_tokens):
            tokens = price.per_million_tokens
            return (usage.input_tokens * tokens.input + usage.output_tokens * tokens.output) / 1_000_000
        return self.per_image(model, size, quality, partials)
