"""A fake Google Imagen endpoint (Vertex AI express mode, as the `google-genai` SDK calls
it with an API key): real HTTP on a loopback port that the real SDK talks to.

POST /v1beta1/publishers/google/models/{model}:predict, key in `x-goog-api-key`, body
{"instances": [{"prompt"}], "parameters": {"sampleCount", "aspectRatio", ...}}; answers
{"predictions": [{"bytesBase64Encoded", "mimeType"}]}; errors as
{"error": {"code", "message", "status"}}. Like the real service it refuses a wrong key
(403 PERMISSION_DENIED), an unknown model (404), a body that is not JSON, no prompt, more
than 4 samples or an aspect ratio it does not know (400 INVALID_ARGUMENT).

Each model has a queue of behaviours (one per request, the last repeating)."""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakes.http import LoopbackServer, QuietHandler
from tests.fakes.images import image_bytes

PREFIX = "/v1beta1/publishers/google/models/"
RATIOS = {"1:1", "3:4", "4:3", "9:16", "16:9"}


@dataclass
class Ok:
    latency: float = 0.0


@dataclass
class Error:
    code: int
    status: str
    message: str = "error"


@dataclass
class Hang:
    """Accept the request and never answer (until the fake stops)."""


@dataclass
class Filtered:
    """The prompt was refused by the safety filters: a prediction with only a reason."""


Behaviour = Ok | Error | Hang | Filtered

UNAVAILABLE = Error(503, "UNAVAILABLE", "The service is currently unavailable.")
QUOTA = Error(429, "RESOURCE_EXHAUSTED", "Quota exceeded for aiplatform.googleapis.com.")


@dataclass
class Request:
    model: str
    body: dict[str, Any]
    headers: dict[str, str]


class FakeImagen(LoopbackServer):
    def __init__(self, api_key: str, models: tuple[str, ...] = ("imagen-4.0-generate-001",)) -> None:
        self.api_key = api_key
        self.models = models
        self.scripts: dict[str, list[Behaviour]] = {}
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        super().__init__(self._handler(), "fake-imagen")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, model: str, *behaviours: Behaviour) -> None:
        with self.lock:
            self.scripts[model] = list(behaviours)

    def count(self, model: str | None = None) -> int:
        with self.lock:
            return sum(1 for r in self.requests if model is None or r.model == model)

    def _next(self, model: str) -> Behaviour:
        with self.lock:
            queue = self.scripts.get(model)
            if not queue:
                return Ok()
            return queue.pop(0) if len(queue) > 1 else queue[0]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(QuietHandler):
            def _error(self, code: int, status: str, message: str) -> None:
                self.send(code, {"error": {"code": code, "message": message, "status": status}})

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = self.path.split("?")[0]
                model = path.removeprefix(PREFIX).removesuffix(":predict")
                try:
                    body = json.loads(raw)
                    if not isinstance(body, dict):
                        raise ValueError("not an object")
                except ValueError:
                    body = {}
                with fake.lock:
                    fake.requests.append(Request(model, body, {k.lower(): v for k, v in self.headers.items()}))
                if not path.startswith(PREFIX) or not path.endswith(":predict"):
                    self._error(404, "NOT_FOUND", f"The requested URL {path} was not found on this server.")
                    return
                if self.headers.get("x-goog-api-key") != fake.api_key:
                    self._error(403, "PERMISSION_DENIED", "API key not valid. Please pass a valid API key.")
                    return
                if model not in fake.models:
                    self._error(404, "NOT_FOUND", f"Publisher Model `{model}` was not found.")
                    return
                problem = self._refusal(body)
                if problem:
                    self._error(400, "INVALID_ARGUMENT", problem)
                    return
                behaviour = fake._next(model)
                if isinstance(behaviour, Hang):
                    fake.stopping.wait(120)
                    return
                if isinstance(behaviour, Ok) and fake.stopping.wait(behaviour.latency):
                    return
                if isinstance(behaviour, Error):
                    self._error(behaviour.code, behaviour.status, behaviour.message)
                elif isinstance(behaviour, Filtered):
                    self.send(
                        200, {"predictions": [{"raiFilteredReason": "The prompt was blocked by safety filters."}]}
                    )
                else:
                    data = base64.b64encode(image_bytes("PNG")).decode()
                    self.send(200, {"predictions": [{"bytesBase64Encoded": data, "mimeType": "image/png"}]})

            @staticmethod
            def _refusal(body: dict[str, Any]) -> str:
                instances = body.get("instances")
                if not isinstance(instances, list) or len(instances) != 1 or not isinstance(instances[0], dict):
                    return "instances must hold one object"
                prompt = instances[0].get("prompt")
                if not isinstance(prompt, str) or not prompt.strip():
                    return "The prompt is empty."
                parameters = body.get("parameters", {})
                if not isinstance(parameters, dict):
                    return "parameters must be an object"
                count = parameters.get("sampleCount", 4)
                if not isinstance(count, int) or not 1 <= count <= 4:
                    return "sampleCount must be between 1 and 4"
                ratio = parameters.get("aspectRatio", "1:1")
                if ratio not in RATIOS:
                    return f"Unsupported aspect ratio: {ratio}"
                return ""

        return Handler


def arrived(fake: FakeImagen, n: int, timeout: float = 10.0) -> bool:
    """Bounded wait for n requests."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fake.count() >= n:
            return True
        time.sleep(0.01)
    return fake.count() >= n
