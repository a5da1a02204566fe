"""A refused scene names its rule and its place in the body, in-process (nothing is called
before these answers): the error's `reason` is the rule's own (PROMPT_EMPTY, not a generic
INVALID_ARGUMENT) and `fieldViolations` points at the scene, so a form can mark the field.
The typed client (clients/typescript) reads both."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.settings import GatewaySettings


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    # The app's lifespan runs (its clients point at services that are not there: none is
    # called before a bad body is refused).
    with TestClient(create_app(GatewaySettings.model_validate({"MAX_SCENES": "3"}))) as made:
        yield made


CASES: list[tuple[list[dict[str, Any]], str, str]] = [
    ([{"prompt": "a"}, {"prompt": "  "}], "PROMPT_EMPTY", "scenes[1].prompt"),
    ([{"prompt": "x" * 32_001}], "PROMPT_TOO_LONG", "scenes[0].prompt"),
    ([{"prompt": "a\u0007b"}], "PROMPT_INVALID", "scenes[0].prompt"),
    ([{"prompt": "a"}] * 4, "TOO_MANY_SCENES", "scenes"),
    ([{"prompt": "a", "index": 2}, {"prompt": "b", "index": 2}], "SCENE_INDEX_REPEATED", "scenes"),
]


@pytest.mark.parametrize(("scenes", "reason", "field"), CASES)
def test_a_refused_scene_names_its_rule_and_field(
    client: TestClient, scenes: list[dict[str, Any]], reason: str, field: str
) -> None:
    answer = client.post("/api/generate-preview-images", json={"videoId": "v", "scenes": scenes})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "INVALID_ARGUMENT"
    assert error["reason"] == reason
    assert [v["field"] for v in error["fieldViolations"]] == [field]
    assert error["fieldViolations"][0]["description"] == error["message"]


def test_a_regenerate_with_an_empty_prompt_names_the_prompt(client: TestClient) -> None:
    answer = client.post("/api/videos/v/scenes/1/regenerate", json={"prompt": " "})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["reason"] == "PROMPT_EMPTY"
    assert [v["field"] for v in error["fieldViolations"]] == ["prompt"]


MALFORMED: list[tuple[bytes, str, str, str]] = [
    (
        b'{"videoId": "v", "scenes": [',
        "application/json",
        "BODY_NOT_JSON",
        "not valid JSON (Expecting value at character 28)",
    ),
    (b"garbage", "application/json", "BODY_NOT_JSON", "at character 0"),
    (b'[{"prompt": "a"}]', "application/json", "BODY_NOT_OBJECT", "must be a JSON object"),
    (b"videoId=v", "application/x-www-form-urlencoded", "BODY_NOT_OBJECT", "Content-Type: application/json"),
    (
        b'{"videoId": "v", "scenes": [{"prompt": "a"}]}',
        "text/plain",
        "BODY_NOT_OBJECT",
        "Content-Type: application/json",
    ),
    (b"", "application/json", "BODY_NOT_OBJECT", "must be a JSON object"),
]


@pytest.mark.parametrize(("body", "kind", "reason", "words"), MALFORMED)
def test_a_body_that_is_not_a_json_object_says_what_to_send(
    client: TestClient, body: bytes, kind: str, reason: str, words: str
) -> None:
    answer = client.post("/api/generate-preview-images", content=body, headers={"content-type": kind})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert (error["code"], error["reason"]) == ("INVALID_ARGUMENT", reason)
    assert words in error["message"], error["message"]
    assert "fieldViolations" not in error  # no field is at fault: the body is


def test_a_field_of_the_wrong_type_is_named_as_the_rules_name_it(client: TestClient) -> None:
    answer = client.post("/api/generate-preview-images", json={"videoId": 5, "scenes": [{"prompt": "a"}, {}]})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["reason"] == "FIELD_INVALID"
    assert [v["field"] for v in error["fieldViolations"]] == ["videoId", "scenes[1].prompt"]
    assert error["message"] == "; ".join(v["description"] for v in error["fieldViolations"])
    missing = client.get("/api/video-status").json()["error"]
    assert (missing["reason"], missing["fieldViolations"][0]["field"]) == ("FIELD_MISSING", "videoId")


def test_every_error_names_a_reason_programs_can_switch_on(client: TestClient) -> None:
    for answer, code in (
        (client.get("/api/no-such-route"), "NOT_FOUND"),
        (client.delete("/api/generate-preview-images"), "UNIMPLEMENTED"),
        (client.get("/storage/v1/object/public/no-such-bucket/a.png"), "NOT_FOUND"),
    ):
        error = answer.json()["error"]
        assert (error["code"], error["reason"]) == (code, code), answer.text
