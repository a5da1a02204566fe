"""What a Generate call answers: the image and every attempt made for it (the chain makes
them, the replay cache keeps them, the servicer turns them into protobuf)."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.images import ImageInfo
from services.imagegen.providers.base import Outcome, Usage


@dataclass(frozen=True)
class AttemptRecord:
    provider: str
    outcome: Outcome
    reason: str
    ms: int
    usage: Usage | None = None
    # Estimated USD; None when the model has no price. Only a successful attempt is paid.
    cost: float | None = 0.0


@dataclass(frozen=True)
class ChainResult:
    image: bytes
    info: ImageInfo
    provider: str
    placeholder: bool
    attempts: list[AttemptRecord]

    @property
    def cost(self) -> float:
        return sum(a.cost or 0.0 for a in self.attempts)

    @property
    def cost_known(self) -> bool:
        return all(a.cost is not None for a in self.attempts)


@dataclass(frozen=True)
class PartialImage:
    """A partial image of a call, checked: what GenerateStream sends before the final."""

    image: bytes
    info: ImageInfo
    index: int
    provider: str
