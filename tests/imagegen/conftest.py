from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes import openai_fake as fo

A, B = "gpt-image-2.5-sunburst", "gpt-image-2"
C = "gpt-image-2.6-flare"
KEY = "sk-test-chain-0123456789"


@pytest.fixture
def fake() -> Iterator[fo.FakeOpenAI]:
    """The fake OpenAI server, listing the chain's models and the DALL-E ones, and refusing
    any key but KEY."""
    with fo.FakeOpenAI(models=[fo.model_entry(m) for m in (A, B, C, "dall-e-3", "dall-e-2")], api_key=KEY) as server:
        yield server
