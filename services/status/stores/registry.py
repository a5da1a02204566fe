"""The status stores there are, by the name STATUS_STORE takes: settings check a name
against it, the status service builds its store through it, `make run` describes it.

Each store's module answers two functions of the status settings: ``build`` (the store,
or SystemExit naming what it needs) and ``describe`` (where it keeps videos, in words,
never a secret). A module is imported only when its store is asked for, so a store's
client library loads only where it is used. Adding a store: its module, and its line here."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Protocol, cast

if TYPE_CHECKING:
    from services.common.config import StatusSettings
    from services.status.stores.base import StatusStore

STORES: dict[str, str] = {
    "sqlite": "services.status.stores.sqlite",
    "postgres": "services.status.stores.postgres",
    "supabase": "services.status.stores.supabase",
}


class StoreModule(Protocol):
    def build(self, settings: StatusSettings) -> StatusStore: ...

    def describe(self, settings: StatusSettings) -> str: ...


def known(name: str) -> str:
    """``name`` when a store has it, else ValueError naming the known ones."""
    if name not in STORES:
        raise ValueError(f"unknown status store {name!r}; known: {', '.join(STORES)}")
    return name


def store_module(name: str) -> StoreModule:
    return cast(StoreModule, importlib.import_module(STORES[known(name)]))


def build_store(settings: StatusSettings) -> StatusStore:
    return store_module(settings.store).build(settings)


def describe_store(settings: StatusSettings) -> str:
    return store_module(settings.store).describe(settings)
