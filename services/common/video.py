"""A video, defined once (as its run summary is: summary.py). Each field of `Video` says where
it is kept, whether UpdateVideo may set it (and how the value is checked), and whether the
status answer shows it. Everything else follows this table: the proto conversion (below),
the servicer's updates, the run rows and selects of all three stores
(services/status/stores/rows.py), and the gateway's status answer and its OpenAPI schema
(gateway/answers.py, gateway/schemas.py).

Adding a plain field (text or a number that a run keeps, such as a thumbnail's URL): a line
in `Video` below, the same name in the proto's `Video` (and, optional, in
`UpdateVideoRequest` when a writer sets it; `check=text` bounds a text field), a column of
preview_runs (a migration in sql/sqlite and sql/postgres), and the writer.
tests/test_one_definition.py holds the proto and the answer to this table."""

from __future__ import annotations

import json
import time
import typing
from collections.abc import Callable
from dataclasses import Field, asdict, dataclass, field, fields
from typing import Any

from services.common.errors import InvalidArgument
from services.common.summary import RunSummary, camel, summary_from_values, summary_json
from services.common.validation import SCENE_MAX
from storyshort.status.v1 import status_pb2

DRAFT = "draft"
GENERATING = "generating_images"
ASSETS_GENERATED = "assets_generated"
FAILED = "failed"
STATUSES = (DRAFT, GENERATING, ASSETS_GENERATED, FAILED)
ERROR_MAX = 2_000
TEXT_MAX = 2_048  # a plain text field's longest value (a URL fits)
PERCENT = {"ge": 0, "le": 100}

# Where a field is kept.
KEY = "key"  # the video's id
VIDEOS = "videos"  # the frontend's videos table (its names: stores/base.py's VideosTable)
RUN = "run"  # our own run row (preview_runs), a column of the field's name
SCENES = "scenes"  # one row per scene (preview_scenes)
OWNER = "owner"  # the frontend's owner column where it has one, else our run row


def now_ms() -> int:
    return int(time.time() * 1000)


def check_status(name: str) -> str:
    if name not in STATUSES:
        raise InvalidArgument(f"unknown status {name!r}; use one of {', '.join(STATUSES)}")
    return name


def check_progress(value: int) -> int:
    if not 0 <= value <= 100:
        raise InvalidArgument(f"progress must be between 0 and 100; got {value}")
    return value


def check_scene_count(value: int) -> int:
    if not 0 <= value <= SCENE_MAX:
        raise InvalidArgument(f"scene_count must be between 0 and {SCENE_MAX}; got {value}")
    return value


def cut_error(text: str) -> str:
    return text[:ERROR_MAX]


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Form:
    """How a value that is not a plain one travels: as the proto's value, as the run row's
    column, and in the status answer (from the proto's value)."""

    to_pb: Callable[[Any], Any]
    from_pb: Callable[[Any], Any]
    to_row: Callable[[Any], Any] = _same
    from_row: Callable[[Any], Any] = _same
    to_answer: Callable[[Any], Any] = _same


@dataclass(frozen=True)
class Shown:
    """A field the status answer shows, under its camelCase name."""

    description: str = ""
    required: bool = False  # in every answer, even a queued one
    # The OpenAPI type when it is not the field's own (a nested answer).
    schema: Any = None
    limits: dict[str, Any] = field(default_factory=dict)  # pydantic Field constraints


def about(
    *,
    kept: str = RUN,
    check: Callable[[Any], Any] | None = None,
    shown: Shown | None = None,
    form: Form | None = None,
) -> dict[str, Any]:
    """A `Video` field's metadata: ``check`` (None: UpdateVideo cannot set the field) is given
    the new value and answers it (or raises InvalidArgument)."""
    return {"kept": kept, "check": check, "shown": shown, "form": form}


def text(value: str) -> str:
    """UpdateVideo's check of a plain text field."""
    if len(value) > TEXT_MAX:
        raise InvalidArgument(f"{len(value)} characters; at most {TEXT_MAX} are allowed")
    return value


@dataclass
class SceneResult:
    scene: int
    state: str
    url: str = ""
    path: str = ""
    content_type: str = ""
    placeholder: bool = False
    provider: str = ""
    attempts: int = 0
    generate_ms: int = 0
    upload_ms: int = 0
    error: str = ""
    cost_usd: float = 0.0
    cost_known: bool = True
    paid_at_ms: int = 0
    prompt: str = ""  # what the image was made from ("": not known)
    reencoded: bool = False
    # While the scene is being made: its latest preview (a partial image's URL) and index.
    preview_url: str = ""
    preview_index: int = 0


SCENE_COLUMNS = tuple(f.name for f in fields(SceneResult))


def scene_to_pb(scene: SceneResult) -> status_pb2.SceneResult:
    # The dataclass holds plain values only, so its attribute dict goes straight to the
    # message (dataclasses.asdict deep-copies, and was the largest cost of a status read).
    return status_pb2.SceneResult(**vars(scene))


def scene_from_pb(message: status_pb2.SceneResult) -> SceneResult:
    return SceneResult(**{name: getattr(message, name) for name in SCENE_COLUMNS})


def summary_to_pb(summary: RunSummary) -> status_pb2.RunSummary:
    return status_pb2.RunSummary(**vars(summary))


def summary_from_pb(message: status_pb2.RunSummary) -> RunSummary:
    return summary_from_values({f.name: getattr(message, f.name) for f in fields(RunSummary)})


def summary_to_json(summary: RunSummary) -> str:
    return json.dumps(asdict(summary))


def summary_from_json(text: str | None) -> RunSummary:
    try:
        data = json.loads(text or "{}")
        return summary_from_values(data if isinstance(data, dict) else {})
    except (ValueError, TypeError):
        return RunSummary()


def prompts_to_json(prompts: dict[int, str]) -> str:
    return json.dumps([[scene, prompt] for scene, prompt in sorted(prompts.items())])


def prompts_from_json(text: str | None) -> dict[int, str]:
    try:
        return {int(scene): str(prompt) for scene, prompt in json.loads(text or "[]")}
    except (ValueError, TypeError):
        return {}


SUMMARY = Form(summary_to_pb, summary_from_pb, summary_to_json, summary_from_json, summary_json)
PROMPTS = Form(
    lambda prompts: [status_pb2.ScenePrompt(scene=n, prompt=p) for n, p in sorted(prompts.items())],
    lambda given: {p.scene: p.prompt for p in given},
    prompts_to_json,
    prompts_from_json,
)
SCENE_LIST = Form(lambda scenes: [scene_to_pb(s) for s in scenes], lambda given: [scene_from_pb(s) for s in given])


@dataclass
class Video:
    video_id: str = field(metadata=about(kept=KEY, shown=Shown("the video's id", required=True)))
    status: str = field(
        default=DRAFT,
        metadata=about(
            kept=VIDEOS,
            check=check_status,
            shown=Shown(
                "draft, generating_images, assets_generated or failed; queued (waiting its turn in the gateway), "
                "processing (not known now), or a status the frontend's own app set",
                required=True,
            ),
        ),
    )
    progress: int = field(
        default=0,
        metadata=about(
            kept=VIDEOS,
            check=check_progress,
            shown=Shown("percent of the scenes stored", required=True, limits=PERCENT),
        ),
    )
    scene_count: int = field(
        default=0, metadata=about(check=check_scene_count, shown=Shown("scenes in the latest run"))
    )
    error: str = field(default="", metadata=about(check=cut_error, shown=Shown("why the latest run failed")))
    updated_at_ms: int = field(
        default_factory=now_ms,
        metadata=about(shown=Shown("when the video last changed, ms since the epoch (0: not known)")),
    )
    scenes: list[SceneResult] = field(default_factory=list, metadata=about(kept=SCENES, form=SCENE_LIST))
    summary: RunSummary = field(
        default_factory=RunSummary,
        metadata=about(check=_same, form=SUMMARY, shown=Shown("the latest run", schema=RunSummary)),
    )
    # Scene number -> prompt, as the latest run was started.
    prompts: dict[int, str] = field(default_factory=dict, metadata=about(form=PROMPTS))
    owner: str = field(default="", metadata=about(kept=OWNER))  # the user it belongs to ("": no one)


FIELDS: tuple[Field[Any], ...] = fields(Video)
FIELD_TYPES: dict[str, type] = typing.get_type_hints(Video)
# The fields our run row keeps, each in a column of its name.
RUN_FIELDS = tuple(f.name for f in FIELDS if f.metadata["kept"] == RUN)
# The fields UpdateVideo may set (an optional field of UpdateVideoRequest each), and their checks.
CHECKS: dict[str, Callable[[Any], Any]] = {f.name: f.metadata["check"] for f in FIELDS if f.metadata["check"]}
# The fields the status answer shows.
SHOWN: dict[str, Shown] = {f.name: f.metadata["shown"] for f in FIELDS if f.metadata["shown"]}
SHOWN_NAMES = {name: camel(name) for name in SHOWN}


def _plain(name: str) -> Form:
    """A plain value's form: itself everywhere; from a NULL or missing column, its type's empty
    value (0, ""), never its default (updated_at_ms would be the time of the read)."""
    kind = FIELD_TYPES[name]
    return Form(_same, _same, _same, lambda value: kind() if value is None else kind(value))


# Every field's form, plain ones included, so each conversion is one lookup.
_FORMS: dict[str, Form] = {f.name: f.metadata["form"] or _plain(f.name) for f in FIELDS}


def video_to_pb(video: Video) -> status_pb2.Video:
    return status_pb2.Video(**{name: _FORMS[name].to_pb(value) for name, value in vars(video).items()})


def video_from_pb(message: status_pb2.Video) -> Video:
    return Video(**{f.name: _FORMS[f.name].from_pb(getattr(message, f.name)) for f in FIELDS})


def update_values(message: Any) -> dict[str, Any]:
    """The fields an UpdateVideoRequest sets, checked (InvalidArgument names the field)."""
    values: dict[str, Any] = {}
    for name, check in CHECKS.items():
        if message.HasField(name):
            try:
                values[name] = check(_FORMS[name].from_pb(getattr(message, name)))
            except InvalidArgument as exc:
                said = str(exc)  # named in the message, as a person reads it
                raise InvalidArgument(said if name in said else f"{name}: {said}", field=name) from exc
    return values


def run_from_row(row: Any) -> dict[str, Any]:
    """The run row's fields from a row (a dict by column name; a missing or NULL column gives
    its type's empty value, as with no run row yet)."""
    return {name: _FORMS[name].from_row(row.get(name)) for name in RUN_FIELDS}


def run_to_row(values: dict[str, Any]) -> dict[str, Any]:
    """Run-row columns for field values (only RUN_FIELDS)."""
    return {name: _FORMS[name].to_row(value) for name, value in values.items()}


def answer_values(video: status_pb2.Video) -> dict[str, Any]:
    """The status answer's video fields (camelCase) from the proto's video."""
    return {shown: _FORMS[name].to_answer(getattr(video, name)) for name, shown in SHOWN_NAMES.items()}
