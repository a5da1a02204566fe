"""What the HTTP app and the queue worker both build from the settings: the scene pipeline
and the healer."""

from __future__ import annotations

from gateway.budget import BudgetGuard
from gateway.clients import ServiceClients
from gateway.healing import Healer
from gateway.pipeline import Pipeline
from gateway.settings import GatewaySettings
from gateway.spool import ImageSpool


def build_healer(settings: GatewaySettings, clients: ServiceClients) -> Healer:
    return Healer(
        clients, first_wait=settings.heal_after, max_wait=settings.heal_max_wait, max_tries=settings.heal_max_tries
    )


def build_pipeline(settings: GatewaySettings, clients: ServiceClients) -> Pipeline:
    """The scene pipeline, as the gateway (in-process runs) and the queue worker use it."""
    budget = BudgetGuard(clients, settings.budget_daily_usd, settings.budget_video_usd)
    spool = ImageSpool(settings.data_dir / "spool")
    return Pipeline(clients, settings.scene_concurrency, settings.image_size, spool, budget)
