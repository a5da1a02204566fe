from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes import openai_fake as fo

A, B = "gpt-image-2.5-sunburst", "gpt-image-2"


@pytest.fixture
def fake() -> Iterator[fo.FakeOpenAI]:
    """The fake OpenAI server, listing both chain models and the DALL-E ones."""
    with fo.FakeOpenAI(models=[fo.model_entry(m) for m in (A, B, "dall-e-3", "dall-e-2")]) as server:
        yield server
