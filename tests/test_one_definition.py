"""One definition per fact: the run summary (services/common/summary.py) and the video
(services/common/video.py) are each defined once; the proto, the store rows, the JSON answer
and the OpenAPI schema follow them, and the status answer's keys are the schema's."""

from __future__ import annotations

import json
from dataclasses import asdict, fields

from gateway.answers import queued_json, status_json
from gateway.schemas import SummaryOut, VideoStatusOut
from services.common import video
from services.common.errors import InvalidArgument
from services.common.summary import FIELD_TYPES, RunSummary, camel, summary_from_values, summary_json
from services.common.video import summary_from_json, summary_from_pb, summary_to_json, summary_to_pb
from storyshort.status.v1 import status_pb2


def test_the_proto_has_exactly_the_summarys_fields() -> None:
    assert {f.name for f in status_pb2.RunSummary.DESCRIPTOR.fields} == {f.name for f in fields(RunSummary)}


def test_every_form_round_trips_with_the_declared_types() -> None:
    summary = summary_from_values({name: (2.5 if kind is float else 7) for name, kind in FIELD_TYPES.items()})
    assert summary_from_pb(summary_to_pb(summary)) == summary
    assert summary_from_json(summary_to_json(summary)) == summary
    from_row = summary_from_json(json.dumps({**asdict(summary), "spend_usd": "2.5", "elapsed_ms": "7"}))
    assert from_row == summary and isinstance(from_row.spend_usd, float) and isinstance(from_row.elapsed_ms, int)


def test_the_answer_and_its_schema_have_the_same_keys() -> None:
    summary = RunSummary(generated=2, spend_usd=0.25)
    assert set(summary_json(summary)) == set(SummaryOut.model_fields) == {camel(f.name) for f in fields(RunSummary)}
    answer = status_pb2.GetVideoResponse(
        video=status_pb2.Video(video_id="v", status="assets_generated", progress=100, summary=summary_to_pb(summary))
    )
    schema = set(VideoStatusOut.model_fields)
    assert set(status_json(answer, "http://x")) | {"queuePosition"} == schema
    assert set(queued_json("v", 1)) <= schema
    VideoStatusOut.model_validate(status_json(answer, "http://x"))  # and the values fit it


# A video: defined once (services/common/video.py); the proto, the updates, the stores' run
# rows and the status answer follow it.


def test_the_proto_has_exactly_the_videos_fields_and_updatevideo_its_settable_ones() -> None:
    assert [f.name for f in status_pb2.Video.DESCRIPTOR.fields] == [f.name for f in video.FIELDS]
    settable = {f.name for f in status_pb2.UpdateVideoRequest.DESCRIPTOR.fields} - {"video_id"}
    assert settable == set(video.CHECKS)
    # Each settable field is optional in the request (so "not set" and "set to empty" differ).
    assert all(status_pb2.UpdateVideoRequest.DESCRIPTOR.fields_by_name[n].has_presence for n in settable)


def _a_video() -> video.Video:
    return video.Video(
        video_id="v1",
        status=video.GENERATING,
        progress=40,
        scene_count=5,
        error="boom",
        updated_at_ms=1_700_000_000_123,
        scenes=[video.SceneResult(scene=2, state="stored", url="http://x/2.png", cost_usd=0.04)],
        summary=RunSummary(generated=2, spend_usd=0.08),
        prompts={1: "a fox", 2: "a hen"},
        owner="user-1",
    )


def test_a_video_round_trips_through_the_proto_and_the_run_row() -> None:
    v = _a_video()
    assert video.video_from_pb(video.video_to_pb(v)) == v
    run = {name: getattr(v, name) for name in video.RUN_FIELDS}
    assert video.run_from_row(video.run_to_row(run)) == run
    # No run row yet (a LEFT JOIN's NULLs, or PostgREST's missing row): each type's empty value
    # (updated_at_ms 0: not known), never a default made at the read.
    assert video.run_from_row({}) == {name: video.FIELD_TYPES[name]() for name in video.RUN_FIELDS}
    assert video.run_from_row({})["updated_at_ms"] == 0


def test_updatevideo_sets_only_what_it_names_each_value_checked() -> None:
    request = status_pb2.UpdateVideoRequest(video_id="v", progress=30, error="x" * 5000)
    assert video.update_values(request) == {"progress": 30, "error": "x" * video.ERROR_MAX}
    try:
        video.update_values(status_pb2.UpdateVideoRequest(video_id="v", status="nonsense"))
    except InvalidArgument as exc:
        assert exc.field == "status" and "draft" in str(exc)
    else:
        raise AssertionError("an unknown status was taken")


def test_the_answer_shows_the_shown_fields_under_the_schemas_names() -> None:
    v = _a_video()
    answer = status_json(status_pb2.GetVideoResponse(video=video.video_to_pb(v)), "http://x")
    shown = {video.SHOWN_NAMES[name]: name for name in video.SHOWN}
    assert set(shown) <= set(answer) and set(shown) <= set(VideoStatusOut.model_fields)
    for key, name in shown.items():  # a plain field as it is; a nested one in its answer form
        assert answer[key] == (summary_json(v.summary) if name == "summary" else getattr(v, name)), key
    assert answer["sceneCount"] == 5 and answer["updatedAtMs"] == v.updated_at_ms and answer["error"] == "boom"
    assert "owner" not in answer and "prompts" not in answer  # kept, never shown
    VideoStatusOut.model_validate(answer)
