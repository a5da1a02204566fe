"""Placeholders that tell the story: a card at the requested size with the scene's number,
the first words of its prompt, and a line saying it is a placeholder, so a storyboard of
them reads as the story; a configured file still wins."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from services.common.images import render_placeholder
from services.imagegen.providers.base import ImageRequest
from services.imagegen.providers.placeholder import PlaceholderProvider
from storyshort.imagegen.v1 import imagegen_pb2
from tests.fakes import openai_fake as fo
from tests.imagegen.test_chain import start


def ink(data: bytes, box: tuple[float, float, float, float]) -> int:
    """Dark pixels (text) in a part of the image given as fractions of its sides."""
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        part = image.convert("L").crop(
            (int(box[0] * width), int(box[1] * height), int(box[2] * width), int(box[3] * height))
        )
        return sum(part.histogram()[:150])


def test_a_card_shows_the_scene_its_prompt_and_that_it_is_a_placeholder() -> None:
    card = render_placeholder(1024, 1024, 3, "A lighthouse keeper climbs the spiral stairs at dusk")
    with Image.open(io.BytesIO(card)) as image:
        assert image.size == (1024, 1024) and image.format == "PNG"
    assert ink(card, (0.0, 0.0, 1.0, 0.2)) > 500, "the scene's number, at the top"
    assert ink(card, (0.0, 0.2, 1.0, 0.5)) > 500, "the prompt's first words"
    assert ink(card, (0.0, 0.88, 1.0, 1.0)) > 100, "the placeholder line, at the bottom"
    other_scene = render_placeholder(1024, 1024, 4, "A lighthouse keeper climbs the spiral stairs at dusk")
    other_prompt = render_placeholder(1024, 1024, 3, "A fox crosses a frozen river")
    assert len({card, other_scene, other_prompt}) == 3, "every scene's card is its own"
    long = render_placeholder(512, 288, 12, " ".join(["word"] * 400))
    with Image.open(io.BytesIO(long)) as image:
        assert image.size == (512, 288)


async def test_the_provider_renders_a_card_per_scene_and_a_configured_file_wins(tmp_path: Path) -> None:
    rendered = PlaceholderProvider()
    one, _ = await rendered.image(ImageRequest("a fox", (256, 256), scene=1))
    two, _ = await rendered.image(ImageRequest("a heron", (256, 256), scene=2))
    assert one != two
    assert (await rendered.image(ImageRequest("a fox", (256, 256), scene=1)))[0] == one
    path = tmp_path / "mine.png"
    path.write_bytes(render_placeholder(64, 64))
    configured = PlaceholderProvider(path)
    assert (await configured.image(ImageRequest("a fox", (256, 256), scene=1)))[0] == path.read_bytes()


async def test_with_no_model_every_scene_gets_its_own_card(fake_openai: fo.FakeOpenAI) -> None:
    async for imagegen in start(fake_openai, OPENAI_API_KEY=""):
        answers: list[imagegen_pb2.GenerateResponse] = [
            await imagegen.generate(prompt=f"scene {n}: a storm", video_id="v", scene=n, size="512x512") for n in (1, 2)
        ]
        assert all(a.placeholder for a in answers)
        assert answers[0].image != answers[1].image
