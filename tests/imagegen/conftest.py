"""The chain's models and key, as the shared fake provider (tests/conftest.py) knows them."""

from __future__ import annotations

from tests.conftest import CHAIN_KEY, PROVIDER_MODELS

A, B, C = PROVIDER_MODELS[:3]
KEY = CHAIN_KEY
