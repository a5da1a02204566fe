"""One definition per fact: the run summary is defined once (services/common/summary.py);
the proto, the store rows, the JSON answer and the OpenAPI schema follow it, and the status
answer's keys are the schema's."""

from __future__ import annotations

import json
from dataclasses import asdict, fields

from gateway.answers import queued_json, status_json
from gateway.schemas import SummaryOut, VideoStatusOut
from services.common.summary import FIELD_TYPES, RunSummary, camel, summary_from_values, summary_json
from services.status.convert import summary_from_pb, summary_to_pb
from services.status.stores.rows import summary_from_json, summary_to_json
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
