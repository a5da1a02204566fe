"""Chain entries of several vendors, each with its own credentials, through each vendor's
real SDK against a fake that speaks its wire protocol: Azure OpenAI (`AsyncAzureOpenAI`),
any OpenAI-compatible server, and Google Imagen (`google-genai`). One vendor's outage leaves
the others serving; a chain file that cannot work is refused at start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.common.config import ImagegenSettings
from services.imagegen.chain_config import ChainConfigError, load_entries
from storyshort.imagegen.v1 import imagegen_pb2
from tests.fakes import google_imagen_fake as gf
from tests.fakes import openai_fake as fo
from tests.imagegen.conftest import KEY
from tests.imagegen.test_chain import outcomes, serve

AZURE_KEY, GOOGLE_KEY, COMPAT_KEY = "azure-test-key-1", "AIza-test-key-2", "compat-test-key-3"
IMAGEN = "imagen-4.0-generate-001"


@pytest.fixture
def azure() -> Iterator[fo.FakeOpenAI]:
    with fo.FakeOpenAI(models=[{"id": "previews", "model": "gpt-image-2"}], api_key=AZURE_KEY, azure=True) as fake:
        yield fake


@pytest.fixture
def imagen() -> Iterator[gf.FakeImagen]:
    with gf.FakeImagen(GOOGLE_KEY) as fake:
        yield fake


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_AZURE_KEY", AZURE_KEY)
    monkeypatch.setenv("TEST_GOOGLE_KEY", GOOGLE_KEY)
    monkeypatch.setenv("TEST_COMPAT_KEY", COMPAT_KEY)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def azure_entry(fake: fo.FakeOpenAI, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "azure-openai",
        "model": "gpt-image-2",
        "name": "azure-gpt-image-2",
        "deployment": "previews",
        "base_url": fake.base_url,
        "api_key_env": "TEST_AZURE_KEY",
        **extra,
    }


def imagen_entry(fake: gf.FakeImagen, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "google-imagen",
        "model": IMAGEN,
        "base_url": fake.base_url,
        "api_key_env": "TEST_GOOGLE_KEY",
        **extra,
    }


def chain_settings(tmp_path: Path, entries: list[dict[str, Any]], **env: Any) -> ImagegenSettings:
    path = tmp_path / "chain.json"
    path.write_text(json.dumps({"providers": entries}))
    values = {"IMAGEGEN_CHAIN_FILE": str(path), "IMAGEGEN_ATTEMPT_TIMEOUT": "5", **{k: str(v) for k, v in env.items()}}
    return ImagegenSettings.model_validate(values)


@pytest.mark.usefixtures("keys")
async def test_azure_openai_through_the_sdks_azure_client(tmp_path: Path, azure: fo.FakeOpenAI) -> None:
    async for imagegen in serve(chain_settings(tmp_path, [azure_entry(azure)])):
        answer = await imagegen.generate(size="1536x1024")
        assert outcomes(answer) == [("azure-gpt-image-2", "SUCCESS")]
        sent = azure.generation_requests()[0]
        assert sent.model == "previews"  # the deployment, in the path
        assert sent.headers["api-key"] == AZURE_KEY and "authorization" not in sent.headers
        assert sent.body["size"] == "1536x1024" and sent.body["quality"] == "low"
        assert "response_format" not in sent.body
        listed = await imagegen.stub.ListProviders(imagegen_pb2.ListProvidersRequest(), timeout=5)
        first = listed.providers[0]
        assert (first.name, first.kind, first.model) == ("azure-gpt-image-2", "azure-openai", "previews")


@pytest.mark.usefixtures("keys")
async def test_google_imagen_through_google_genai(tmp_path: Path, imagen: gf.FakeImagen) -> None:
    async for imagegen in serve(chain_settings(tmp_path, [imagen_entry(imagen)])):
        answer = await imagegen.generate(prompt="a lighthouse", size="1536x1024")
        assert outcomes(answer) == [(IMAGEN, "SUCCESS")] and answer.content_type == "image/png"
        sent = imagen.requests[0]
        assert sent.headers["x-goog-api-key"] == GOOGLE_KEY
        assert sent.body["instances"] == [{"prompt": "a lighthouse"}]
        assert sent.body["parameters"]["sampleCount"] == 1 and sent.body["parameters"]["aspectRatio"] == "4:3"


@pytest.mark.usefixtures("keys")
@pytest.mark.parametrize(
    ("behaviour", "outcome", "words"),
    [
        (gf.UNAVAILABLE, "TRANSIENT", "HTTP 503"),
        (gf.QUOTA, "RATE_LIMITED", "HTTP 429"),
        (gf.Filtered(), "CONTENT_POLICY", "safety filters"),
        (gf.Hang(), "TIMEOUT", "no image within"),
    ],
    ids=["unavailable", "quota", "filtered", "hang"],
)
async def test_imagen_failures_are_classified_and_the_next_vendor_serves(
    tmp_path: Path, imagen: gf.FakeImagen, azure: fo.FakeOpenAI, behaviour: gf.Behaviour, outcome: str, words: str
) -> None:
    imagen.script(IMAGEN, behaviour)
    entries = [imagen_entry(imagen, timeout=1), azure_entry(azure)]
    async for imagegen in serve(chain_settings(tmp_path, entries, IMAGEGEN_SAME_PROVIDER_RETRIES=0)):
        answer = await imagegen.generate()
        assert outcomes(answer) == [(IMAGEN, outcome), ("azure-gpt-image-2", "SUCCESS")]
        assert words in answer.attempts[0].reason
        assert imagen.count() == 1 and azure.count() == 1


@pytest.mark.usefixtures("keys")
async def test_a_wrong_key_at_one_vendor_opens_its_breaker_and_the_other_keeps_serving(
    tmp_path: Path, imagen: gf.FakeImagen, azure: fo.FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_AZURE_KEY", "a-revoked-key")
    entries = [azure_entry(azure), imagen_entry(imagen)]
    async for imagegen in serve(chain_settings(tmp_path, entries)):
        first = await imagegen.generate()
        assert outcomes(first) == [("azure-gpt-image-2", "HARD_FAILURE"), (IMAGEN, "SUCCESS")]
        assert "a-revoked-key" not in first.attempts[0].reason
        for _ in range(3):
            answer = await imagegen.generate()
            assert outcomes(answer) == [("azure-gpt-image-2", "SKIPPED"), (IMAGEN, "SUCCESS")]
        assert azure.count() == 1 and imagen.count() == 4


@pytest.mark.usefixtures("keys")
async def test_an_openai_compatible_server_with_its_own_key_and_address(tmp_path: Path) -> None:
    with fo.FakeOpenAI(models=[fo.model_entry("flux-schnell")], api_key=COMPAT_KEY) as compat:
        entry = {
            "kind": "openai-compatible",
            "model": "flux-schnell",
            "base_url": compat.base_url,
            "api_key_env": "TEST_COMPAT_KEY",
            "concurrency": 2,
        }
        async for imagegen in serve(chain_settings(tmp_path, [entry])):
            answer = await imagegen.generate()
            assert outcomes(answer) == [("flux-schnell", "SUCCESS")]
            assert compat.generation_requests()[0].headers["authorization"] == f"Bearer {COMPAT_KEY}"
            assert compat.count(None, path="/v1/models") == 1  # checked at start, as OpenAI's own
            listed = await imagegen.stub.ListProviders(imagegen_pb2.ListProvidersRequest(), timeout=5)
            assert listed.providers[0].concurrency_limit == 2


@pytest.mark.usefixtures("keys")
@pytest.mark.parametrize(
    ("entries", "words"),
    [
        ([{"kind": "midjourney", "model": "v7"}], "kind 'midjourney' is not one of openai, openai-compatible"),
        ([{"kind": "azure-openai", "model": "gpt-image-2", "api_key_env": "TEST_AZURE_KEY"}], "entries need base_url"),
        (
            [{"kind": "openai", "model": "gpt-image-2", "api_key_env": "NO_SUCH_KEY_VAR"}],
            "no key for gpt-image-2 (NO_SUCH_KEY_VAR)",
        ),
        (
            [{"model": "gpt-image-2", "api_key_env": "TEST_COMPAT_KEY"}] * 2,
            "the names gpt-image-2 stand twice",
        ),
        ([{"model": "gpt-image-2", "api_key_env": "TEST_COMPAT_KEY", "timout": 5}], "providers.0.timout"),
        ([{"model": "gpt-image-2", "api_key_env": "TEST_COMPAT_KEY", "quality": "ultra"}], "providers.0.quality"),
    ],
    ids=["unknown-kind", "azure-without-endpoint", "missing-key", "same-name-twice", "misspelt-field", "bad-quality"],
)
def test_a_chain_file_that_cannot_work_is_refused_at_start(
    tmp_path: Path, entries: list[dict[str, Any]], words: str
) -> None:
    with pytest.raises(ChainConfigError) as refused:
        load_entries(chain_settings(tmp_path, entries))
    assert words in str(refused.value)


def test_a_chain_file_that_is_not_json_is_refused_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "chain.json"
    path.write_text("providers: [gpt-image-2]")
    with pytest.raises(ChainConfigError, match=r"chain\.json: cannot read it as JSON"):
        load_entries(ImagegenSettings.model_validate({"IMAGEGEN_CHAIN_FILE": str(path)}))


def test_the_example_chain_file_in_the_readme_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.setenv(variable, f"{variable.lower()}-example")
    example = Path(__file__).parents[2] / "config" / "chain.example.json"
    entries = load_entries(ImagegenSettings.model_validate({"IMAGEGEN_CHAIN_FILE": str(example)}))
    assert [(e.kind, e.name) for e in entries] == [
        ("openai", "gpt-image-2.5-sunburst"),
        ("azure-openai", "gpt-image-2"),
        ("google-imagen", "imagen-4.0-generate-001"),
    ]
    assert entries[0].base_url == "https://api.openai.com/v1" and entries[0].quality == "low"
    assert entries[2].price is not None and entries[2].attempt_timeout(ImagegenSettings()) == 40


def test_the_service_refuses_to_start_on_a_chain_it_cannot_run(tmp_path: Path) -> None:
    path = tmp_path / "chain.json"
    path.write_text(json.dumps({"providers": [{"kind": "azure-openai", "model": "gpt-image-2"}]}))
    env = {**os.environ, "IMAGEGEN_CHAIN_FILE": str(path), "IMAGEGEN_PORT": "0", "IMAGEGEN_METRICS_PORT": "0"}
    started = subprocess.run(
        [sys.executable, "-m", "services.imagegen"], env=env, capture_output=True, text=True, timeout=60
    )
    assert started.returncode != 0
    assert "providers.0: azure-openai entries need base_url" in started.stderr
    assert "Traceback" not in started.stderr


async def test_on_openais_own_api_a_retired_model_is_skipped_though_listed(
    tmp_path: Path, fake_openai: fo.FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # OpenAI's model list carries no shutdown dates: the SDK's deprecation notes decide. A
    # compatible server that still lists dall-e-3 keeps serving it.
    monkeypatch.setenv("TEST_CHAIN_KEY", KEY)
    official = {"kind": "openai", "model": "dall-e-3", "name": "official", "base_url": fake_openai.base_url}
    compatible = {
        "kind": "openai-compatible",
        "model": "dall-e-3",
        "name": "compatible",
        "base_url": fake_openai.base_url,
    }
    entries = [{**e, "api_key_env": "TEST_CHAIN_KEY"} for e in (official, compatible)]
    async for imagegen in serve(chain_settings(tmp_path, entries)):
        answer = await imagegen.generate()
        assert outcomes(answer) == [("official", "SKIPPED"), ("compatible", "SUCCESS")]
        assert "retired on 2026-05-12" in answer.attempts[0].reason
        assert fake_openai.count("dall-e-3") == 1
