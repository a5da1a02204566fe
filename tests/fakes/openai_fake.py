"""A fake OpenAI images API: real HTTP on a loopback port, scripted per model, that the
real `openai` client talks to. It speaks the documented wire protocol:
POST /v1/images/generations, GET /v1/models, errors as {"error": {...}}.

Like the real API it refuses a body that is not JSON, a model it does not list, a wrong key
(when it is given one), and what the model family does not take: each family (GPT image,
dall-e-3, dall-e-2) has an allow-list of parameters and their values (`response_format` on
a GPT image model, `output_format` or `quality=ultra` on dall-e-3, `output_format=gif`, n
outside 1..10 or n > 1 on dall-e-3, unsupported sizes, prompts over the limit are 400s).
`azure=True` serves Azure OpenAI's shape instead: POST
/openai/deployments/{deployment}/images/generations?api-version=..., key in `api-key`.

Each model has a queue of behaviours (used one per request, the last one repeating):
Ok, Error, Hang, HangUp, Trickle, Garbage, BadBase64, EmptyData, UrlAnswer."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakes.http import LoopbackServer, QuietHandler
from tests.fakes.images import image_bytes


@dataclass
class Ok:
    latency: float = 0.0
    fmt: str = "PNG"
    # (0, 0): the size the request asked for.
    size: tuple[int, int] = (64, 64)
    usage: bool = True
    # Exact image bytes to answer instead of a generated image.
    payload: bytes | None = None
    # Streamed (`stream: true`): when each partial image goes, in seconds from the request's
    # arrival (None: evenly before the final; a model that is quick sends fewer, one per
    # PARTIAL_EVERY seconds of its latency at most), and which partials are broken bytes.
    partial_at: tuple[float, ...] | None = None
    broken_partials: frozenset[int] = frozenset()
    # Streamed: the body is left open after the final event (until the client hangs up).
    open_after_final: bool = False


@dataclass
class Flaky:
    """Answer 500 with probability ``rate`` (seeded), else like ``ok``."""

    rate: float
    ok: Ok = field(default_factory=Ok)
    seed: int = 1
    latency: float = 0.0

    def __post_init__(self) -> None:
        import random

        self._random = random.Random(self.seed)
        self.latency = self.ok.latency

    def pick(self) -> Ok | Error:
        return SERVER_ERROR if self._random.random() < self.rate else self.ok


@dataclass
class UrlAnswer:
    latency: float = 0.0
    fmt: str = "PNG"


@dataclass
class Error:
    status: int
    code: str = ""
    message: str = "error"
    type: str = "invalid_request_error"
    headers: dict[str, str] = field(default_factory=dict)
    latency: float = 0.0


@dataclass
class StreamCut:
    """A streamed answer that stops after ``partials`` partial images: no final, the
    connection closed (nothing billed)."""

    partials: int = 1
    latency: float = 0.2
    clean: bool = False  # the body ends properly (no final event) instead of a dropped connection


@dataclass
class Hang:
    """Accept the request and never answer (until the fake stops)."""


@dataclass
class HangUp:
    """Read the request, then close the connection without a word (a proxy or load
    balancer dropping it; a keep-alive connection closed as the request went out)."""


@dataclass
class Trickle:
    """Answer 200 with a Content-Length, then send the body a few bytes at a time."""

    interval: float = 0.5
    chunk: int = 8


@dataclass
class Garbage:
    """Valid base64 of bytes that are not an image (streamed: as the completed event's image)."""


@dataclass
class BadBase64:
    """b64_json that is not base64 at all."""


@dataclass
class EmptyData:
    """200 with an empty data list (seen from proxies)."""


Behaviour = Ok | UrlAnswer | Error | Hang | HangUp | Trickle | Garbage | BadBase64 | EmptyData | Flaky | StreamCut
# A model streams at most one partial per this many seconds of its latency.
PARTIAL_EVERY = 0.25

CONTENT_POLICY = Error(400, "content_policy_violation", "Your request was rejected by the safety system.")
BILLING = Error(400, "billing_hard_limit_reached", "Billing hard limit has been reached.")
QUOTA = Error(429, "insufficient_quota", "You exceeded your current quota.", type="insufficient_quota")
BAD_KEY = Error(401, "invalid_api_key", "Incorrect API key provided: {key}.", type="invalid_request_error")
UNKNOWN_MODEL = Error(404, "model_not_found", "The model does not exist.")
SERVER_ERROR = Error(500, "server_error", "The server had an error.", type="server_error")


def rate_limited(retry_after: float) -> Error:
    return Error(429, "rate_limit_exceeded", "Rate limit reached.", headers={"retry-after": f"{retry_after:g}"})


@dataclass
class Request:
    path: str
    model: str
    body: dict[str, Any]
    at: float
    headers: dict[str, str]
    answered: float = 0.0  # time.monotonic() when its answer was ready to go (0: none yet)


GPT_SIZES = {"1024x1024", "1536x1024", "1024x1536", "auto"}
DALL_E_3_SIZES = {"1024x1024", "1792x1024", "1024x1792"}
DALL_E_2_SIZES = {"256x256", "512x512", "1024x1024"}


@dataclass(frozen=True)
class Family:
    """What the Images API takes from one model family (the API reference, per parameter)."""

    sizes: frozenset[str]
    prompt_limit: int
    most_images: int
    # Each parameter the family takes, with the values it takes (None: checked elsewhere).
    parameters: dict[str, frozenset[Any] | None]


COMMON: dict[str, frozenset[Any] | None] = {"model": None, "prompt": None, "n": None, "size": None, "user": None}
# `stream` and `partial_images` are the images API's own parameters for every model; a
# model that cannot stream refuses them with a 400 of its own (param "stream").
STREAMING: dict[str, frozenset[Any] | None] = {"stream": None, "partial_images": None}
GPT_IMAGE = Family(
    frozenset(GPT_SIZES),
    32_000,
    10,
    {
        **COMMON,
        **STREAMING,
        "quality": frozenset({"low", "medium", "high", "auto"}),
        "output_format": frozenset({"png", "jpeg", "webp"}),
        "output_compression": None,
        "background": frozenset({"transparent", "opaque", "auto"}),
        "moderation": frozenset({"low", "auto"}),
    },
)
DALL_E_3 = Family(
    frozenset(DALL_E_3_SIZES),
    4_000,
    1,
    {
        **COMMON,
        **STREAMING,
        "quality": frozenset({"standard", "hd"}),
        "response_format": frozenset({"url", "b64_json"}),
        "style": frozenset({"vivid", "natural"}),
    },
)
DALL_E_2 = Family(
    frozenset(DALL_E_2_SIZES),
    1_000,
    10,
    {**COMMON, **STREAMING, "response_format": frozenset({"url", "b64_json"})},
)


def family(model: str) -> Family:
    if model.startswith("dall-e-3"):
        return DALL_E_3
    if model.startswith("dall-e-2"):
        return DALL_E_2
    return GPT_IMAGE


def refusal(body: dict[str, Any]) -> str:
    """What the real API answers 400 to, for this body ("" when it is acceptable): an
    allow-list of each family's parameters and their values."""
    model, prompt = str(body.get("model", "")), body.get("prompt")
    rules = family(model)
    for name, value in body.items():
        if name not in rules.parameters:
            return f"Unknown parameter: '{name}'."
        allowed = rules.parameters[name]
        if allowed is not None and value not in allowed:
            return f"Invalid value for '{name}': {value!r}. Supported values are: {', '.join(sorted(allowed))}."
    if not isinstance(prompt, str) or not prompt:
        return "'prompt' is required and must be a non-empty string"
    n = body.get("n", 1)
    if not isinstance(n, int) or isinstance(n, bool):
        return "'n' must be an integer"
    if not 1 <= n <= rules.most_images:
        return f"Invalid 'n': {n}. This model takes 1 to {rules.most_images} images per request."
    if "stream" in body and not isinstance(body["stream"], bool):
        return "'stream' must be a boolean"
    partial = body.get("partial_images", 0)
    if not isinstance(partial, int) or isinstance(partial, bool) or not 0 <= partial <= 3:
        return "Invalid 'partial_images': must be an integer from 0 to 3"
    compression = body.get("output_compression", 100)
    if not isinstance(compression, int) or isinstance(compression, bool) or not 0 <= compression <= 100:
        return "Invalid 'output_compression': must be an integer from 0 to 100"
    size = body.get("size", "1024x1024")
    if size not in rules.sizes:
        return f"Invalid size {size!r}; supported: {', '.join(sorted(rules.sizes))}"
    if len(prompt) > rules.prompt_limit:
        return f"prompt is too long: at most {rules.prompt_limit} characters"
    return ""


class FakeOpenAI(LoopbackServer):
    def __init__(
        self,
        models: list[dict[str, Any]] | None = None,
        *,
        api_key: str | Collection[str] | None = None,
        azure: bool = False,
        refuse_stream: Collection[str] = (),
    ) -> None:
        self.scripts: dict[str, list[Behaviour]] = {}
        # Models that answer `stream: true` with 400 (param "stream"), as a model card that
        # says "Streaming: not supported" does.
        self.refuse_stream = set(refuse_stream)
        # Partial images sent: (prompt, partial_image_index, when, broken).
        self.partials: list[tuple[str, int, float, bool]] = []
        self.default: Behaviour = Ok()
        self.models = models
        # The keys it accepts (None: any).
        self.api_keys = {api_key} if isinstance(api_key, str) else set(api_key) if api_key is not None else None
        self.azure = azure
        # Seconds an image URL's download waits before its bytes (a slow file server).
        self.file_latency = 0.0
        self.requests: list[Request] = []
        # TCP connections accepted: fewer than requests when clients reuse them.
        self.connections = 0
        self.max_in_flight: dict[str, int] = {}
        # Prompts that received an image: a prompt here twice is a scene paid for twice.
        self.paid: list[str] = []
        self._flight: dict[str, int] = {}
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        super().__init__(self._handler(), "fake-openai")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}" + ("" if self.azure else "/v1")

    def script(self, model: str, *behaviours: Behaviour) -> None:
        with self.lock:
            self.scripts[model] = list(behaviours)

    def count(self, model: str | None = None, path: str = "/v1/images/generations") -> int:
        with self.lock:
            return sum(1 for r in self.requests if r.path == path and (model is None or r.model == model))

    def generation_requests(self) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path == "/v1/images/generations"]

    def wait_for_requests(self, n: int, timeout: float = 10.0) -> bool:
        """Block until at least n generation requests have arrived (bounded)."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while len([r for r in self.requests if r.path == "/v1/images/generations"]) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.arrived.wait(left)
        return True

    def _next(self, model: str) -> Behaviour:
        with self.lock:
            queue = self.scripts.get(model)
            if not queue:
                return self.default
            return queue.pop(0) if len(queue) > 1 else queue[0]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(QuietHandler):
            def setup(self) -> None:  # one handler per connection
                super().setup()
                with fake.lock:
                    fake.connections += 1

            def parse_request(self) -> bool:
                # A provider's latency counts from the request's arrival: the time spent
                # parsing it here is inside the latency, not added to it.
                self.arrived_at = time.monotonic()
                return super().parse_request()

            def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
                # A request stops being in flight when its answer is ready to go: counting it
                # until the write returns would overlap with the client's next request,
                # which can arrive (the answer read, a slot freed) before this thread runs on.
                self._landed()
                if self._request is not None:
                    self._request.answered = time.monotonic()
                self.send(status, payload, headers)

            _request: Request | None = None

            _in_flight_for: str | None = None

            def _landed(self) -> None:
                model = self._in_flight_for
                if model is not None:
                    self._in_flight_for = None
                    with fake.lock:
                        fake._flight[model] -= 1

            def _record(self, model: str, body: dict[str, Any], path: str = "") -> None:
                self._request = Request(
                    path or self.path.split("?")[0],
                    model,
                    body,
                    time.monotonic(),
                    {k.lower(): v for k, v in self.headers.items()},
                )
                with fake.arrived:
                    fake.requests.append(self._request)
                    fake.arrived.notify_all()

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                self._record("", {})
                if path == "/v1/models":
                    if not self._authorised():
                        self._refuse(401, "Incorrect API key provided.", "invalid_api_key")
                        return
                    if fake.models is None:
                        self._json(500, {"error": {"message": "model list unavailable", "type": "server_error"}})
                        return
                    self._json(200, {"object": "list", "data": fake.models})
                elif path.startswith("/files/"):
                    if fake.stopping.wait(fake.file_latency):
                        return
                    fmt = path.rsplit(".", 1)[-1].upper()
                    data = image_bytes("JPEG" if fmt == "JPG" else fmt)
                    self.send_response(200)
                    self.send_header("Content-Type", f"image/{fmt.lower()}")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                else:
                    self._json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

            def _refuse(self, status: int, message: str, code: str | None = None) -> None:
                err = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
                self._json(status, {"error": err})

            def _authorised(self) -> bool:
                if fake.api_keys is None:
                    return True
                if fake.azure:
                    return self.headers.get("api-key") in fake.api_keys
                return self.headers.get("Authorization", "").removeprefix("Bearer ") in fake.api_keys

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                path, _, query = self.path.partition("?")
                try:
                    body = json.loads(raw)
                    if not isinstance(body, dict):
                        raise ValueError("not an object")
                except ValueError:
                    self._record("", {})
                    self._refuse(400, "We could not parse the JSON body of your request.")
                    return
                model = str(body.get("model", ""))
                if fake.azure:
                    # /openai/deployments/{deployment}/images/generations
                    parts = path.split("/")
                    if (
                        len(parts) != 6
                        or parts[1:3] != ["openai", "deployments"]
                        or parts[4:] != ["images", "generations"]
                    ):
                        self._record(model, body)
                        self._refuse(404, "Resource not found", "404")
                        return
                    model, path = parts[3], "/v1/images/generations"
                self._record(model, body, path)
                if path != "/v1/images/generations":
                    self._refuse(404, "not found")
                    return
                if not self._authorised():
                    self._refuse(401, "Incorrect API key provided.", "invalid_api_key")
                    return
                if fake.azure and "api-version=" not in query:
                    self._refuse(404, "Resource not found: api-version is missing", "404")
                    return
                entry = next((m for m in fake.models or [] if m.get("id") == model), None)
                if fake.models is not None and entry is None:
                    code = "DeploymentNotFound" if fake.azure else "model_not_found"
                    self._refuse(404, f"The model '{model}' does not exist", code)
                    return
                # An Azure deployment serves the model its entry names.
                problem = refusal({**body, "model": (entry or {}).get("model", model)})
                if problem:
                    self._refuse(400, problem)
                    return
                if body.get("stream") is True and (model in fake.refuse_stream or model.startswith("dall-e")):
                    err = {
                        "message": f"The model '{model}' does not support streaming.",
                        "type": "invalid_request_error",
                        "param": "stream",
                        "code": "unsupported_value",
                    }
                    self._json(400, {"error": err})
                    return
                behaviour = fake._next(model)
                with fake.lock:
                    fake._flight[model] = fake._flight.get(model, 0) + 1
                    fake.max_in_flight[model] = max(fake.max_in_flight.get(model, 0), fake._flight[model])
                self._in_flight_for = model
                if body.get("stream") is True and isinstance(behaviour, Ok | StreamCut | Flaky | Garbage):
                    try:
                        picked = behaviour.pick() if isinstance(behaviour, Flaky) else behaviour
                        if isinstance(picked, Error):
                            self._json(picked.status, {"error": {"message": picked.message, "type": picked.type}})
                        elif isinstance(picked, Garbage):  # a streamed answer whose final is not an image
                            self._stream(Ok(payload=os.urandom(512)), body, billed=False)
                        else:
                            self._stream(picked, body)
                    finally:
                        self._landed()
                    return
                try:
                    latency = getattr(behaviour, "latency", 0.0)
                    if latency and fake.stopping.wait(max(self.arrived_at + latency - time.monotonic(), 0.0)):
                        return
                    self._answer(behaviour, body)
                finally:
                    self._landed()

            def _event(self, name: str, data: dict[str, Any]) -> None:
                """One Server-Sent Event, as one chunk of the chunked body."""
                frame = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
                self.wfile.write(f"{len(frame):x}\r\n".encode() + frame + b"\r\n")
                self.wfile.flush()

            def _stream(self, b: Ok | StreamCut, body: dict[str, Any], billed: bool = True) -> None:
                """The images API's streamed answer: `image_generation.partial_image` events
                paced before the final, then `image_generation.completed` (with usage) and
                the end of the body. A quick model sends fewer partials than asked."""
                asked = int(body.get("partial_images") or 0)
                prompt = str(body.get("prompt", ""))
                size = tuple(int(x) for x in str(body.get("size", "1024x1024")).split("x"))
                fmt = str(body.get("output_format") or "png").upper()
                if isinstance(b, StreamCut):
                    times = [b.latency * (k + 1) / (b.partials + 1) for k in range(b.partials)]
                elif b.partial_at is not None:
                    times = list(b.partial_at[:asked])
                else:
                    count = min(asked, int(b.latency / PARTIAL_EVERY))
                    times = [b.latency * (k + 1) / (count + 1) for k in range(count)]
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream; charset=utf-8")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                common = {"background": "opaque", "output_format": fmt.lower(), "quality": body.get("quality", "auto")}
                try:
                    for index, at in enumerate(times):
                        if fake.stopping.wait(max(self.arrived_at + at - time.monotonic(), 0.0)):
                            return
                        broken = isinstance(b, Ok) and index in b.broken_partials
                        raw = os.urandom(256) if broken else image_bytes(fmt, size, partial_colour(index))
                        with fake.lock:
                            fake.partials.append((prompt, index, time.monotonic(), broken))
                        self._event(
                            "image_generation.partial_image",
                            {
                                "type": "image_generation.partial_image",
                                "b64_json": base64.b64encode(raw).decode(),
                                "partial_image_index": index,
                                "size": body.get("size", "1024x1024"),
                                "created_at": int(time.time()),
                                **common,
                            },
                        )
                    if isinstance(b, StreamCut):
                        if b.clean:
                            self.wfile.write(b"0\r\n\r\n")  # the end of the body, with no final
                        self.close_connection = True
                        return
                    if fake.stopping.wait(max(self.arrived_at + b.latency - time.monotonic(), 0.0)):
                        return
                    with fake.lock:
                        made = len(fake.paid)
                        if billed:
                            fake.paid.append(prompt)
                    final = b.payload if b.payload is not None else image_bytes(fmt, size, answer_colour(made))
                    usage = {
                        "input_tokens": 10,
                        "output_tokens": 100 + 100 * len(times),  # each partial is billed too
                        "total_tokens": 110 + 100 * len(times),
                        "input_tokens_details": {"image_tokens": 0, "text_tokens": 10},
                    }
                    self._landed()
                    if self._request is not None:
                        self._request.answered = time.monotonic()
                    self._event(
                        "image_generation.completed",
                        {
                            "type": "image_generation.completed",
                            "b64_json": base64.b64encode(final).decode(),
                            "size": body.get("size", "1024x1024"),
                            "created_at": int(time.time()),
                            "usage": usage,
                            **common,
                        },
                    )
                    if b.open_after_final:
                        self.close_connection = True
                        fake.stopping.wait()  # as Hang: held until the fake stops
                        return
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except OSError:
                    return

            def _answer(self, b: Behaviour, body: dict[str, Any]) -> None:
                created = int(time.time())
                if isinstance(b, Flaky):
                    with fake.lock:
                        b = b.pick()
                if isinstance(b, Ok):
                    if b.payload is not None:
                        raw = b.payload
                    else:
                        # Like a real model, each answer is a new image: its colour follows how
                        # many images were made before it (16 colours, so encoding them is
                        # cached and the fake's own cost stays out of its latency).
                        with fake.lock:
                            made = len(fake.paid)
                        colour = answer_colour(made)
                        if b.size == (0, 0):
                            width, height = (int(x) for x in str(body.get("size", "64x64")).split("x"))
                            raw = image_bytes(b.fmt, (width, height), colour)
                        else:
                            raw = image_bytes(b.fmt, b.size, colour)
                    data = base64.b64encode(raw).decode()
                    count = int(body.get("n", 1))  # as many images as asked for, each billed
                    payload: dict[str, Any] = {"created": created, "data": [{"b64_json": data}] * count}
                    with fake.lock:
                        fake.paid.extend([str(body.get("prompt", ""))] * count)
                    if b.usage:
                        payload["usage"] = {"input_tokens": 10, "output_tokens": 100, "total_tokens": 110}
                    self._json(200, payload)
                elif isinstance(b, UrlAnswer):
                    host = f"http://127.0.0.1:{fake.port}"
                    self._json(200, {"created": created, "data": [{"url": f"{host}/files/img.{b.fmt.lower()}"}]})
                elif isinstance(b, Error):
                    # Like the real API, an auth error may quote the key it was given.
                    key = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    message = b.message.replace("{key}", key)
                    err = {"message": message, "type": b.type, "param": None, "code": b.code or None}
                    self._json(b.status, {"error": err}, b.headers)
                elif isinstance(b, Hang):
                    fake.stopping.wait(120)
                elif isinstance(b, HangUp):
                    self.close_connection = True
                elif isinstance(b, Trickle):
                    payload_bytes = json.dumps(
                        {"created": created, "data": [{"b64_json": base64.b64encode(image_bytes()).decode()}]}
                    ).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload_bytes)))
                    self.end_headers()
                    try:
                        for i in range(0, len(payload_bytes), b.chunk):
                            self.wfile.write(payload_bytes[i : i + b.chunk])
                            self.wfile.flush()
                            if fake.stopping.wait(b.interval):
                                return
                    except OSError:
                        return
                elif isinstance(b, Garbage):
                    garbage = base64.b64encode(os.urandom(512)).decode()
                    self._json(200, {"created": created, "data": [{"b64_json": garbage}]})
                elif isinstance(b, BadBase64):
                    self._json(200, {"created": created, "data": [{"b64_json": "this is not base64!!"}]})
                elif isinstance(b, EmptyData):
                    self._json(200, {"created": created, "data": []})

        return Handler


def answer_colour(made: int) -> tuple[int, int, int]:
    """The colour of the fake's answer after ``made`` images (16 of them, in turn)."""
    return (40, 120, 200 + 3 * (made % 16))


def partial_colour(index: int) -> tuple[int, int, int]:
    """The colour of the fake's partial image ``index`` (its finals never use it)."""
    return (200, 60 + 40 * index, 60)


def warm_answers(fmt: str = "PNG", size: tuple[int, int] = (1024, 1024), partials: bool = False) -> None:
    """Encode every answer image (or, ``partials``, every partial image) of this format and
    size now (a benchmark's warm-up), so that encoding them never runs inside a measured run."""
    for made in range(3 if partials else 16):
        image_bytes(fmt, size, partial_colour(made) if partials else answer_colour(made))


def model_entry(model_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 1_700_000_000, "owned_by": "system", **extra}


def main() -> None:
    """`python -m tests.fakes.openai_fake [--latency S] [--key K]`: the fake in a process of its
    own (the TypeScript client's tests), printing its port; every model answers Ok after S
    seconds, its partial images on the way; it serves until stdin closes."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--key", default=None, help="the only API key accepted (default: any)")
    args = parser.parse_args()
    with FakeOpenAI(api_key=args.key) as fake:
        fake.default = Ok(latency=args.latency)
        print(fake.port, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
