"""The StoryShort frontend, served from its own origin, in Debian's Chromium: with
CORS_ORIGINS it posts a video with the bearer token and follows its progress over the
event stream; a page from an origin not listed is blocked by the browser."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from tests.browser import chromium
from tests.e2e.helpers import MODEL, provider_env
from tests.fakes.http import LoopbackServer, QuietHandler
from tests.fakes.openai_fake import FakeOpenAI, Ok
from tools.processes import System

pytestmark = pytest.mark.slow
TOKEN = "frontend-token-0123456789"

# What the frontend does: POST with the token (a preflighted request: JSON body and an
# Authorization header), read an exposed header, then follow the video's events.
FRONTEND = """<!doctype html><meta charset="utf-8"><title>StoryShort</title><script>
window.progress = [];
async function start() {
  const params = new URLSearchParams(location.search);
  const gateway = params.get("gateway"), video = params.get("video");
  try {
    const answer = await fetch(gateway + "/api/generate-preview-images", {
      method: "POST",
      headers: {
        "Authorization": "Bearer " + params.get("token"), "Content-Type": "application/json", "Prefer": "wait=0",
      },
      body: JSON.stringify({videoId: video, scenes: [{prompt: "a fox"}, {prompt: "a hen"}, {prompt: "a barn"}]}),
    });
    const applied = answer.headers.get("Preference-Applied");
    window.posted = {status: answer.status, applied: applied, body: await answer.json()};
  } catch (e) { window.blocked = String(e); return; }
  const stream = new EventSource(gateway + "/api/videos/" + video + "/events");
  stream.addEventListener("status", e => window.progress.push(JSON.parse(e.data).progress));
  stream.addEventListener("end", () => { stream.close(); window.ended = true; });
}
start();
</script>"""


class Frontend(LoopbackServer):
    def __init__(self) -> None:
        class Handler(QuietHandler):
            def do_GET(self) -> None:
                body = FRONTEND.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        handler: type[BaseHTTPRequestHandler] = Handler
        super().__init__(handler, "frontend")

    @property
    def origin(self) -> str:
        return f"http://localhost:{self.port}"


@pytest.fixture
def frontend() -> Iterator[Frontend]:
    with Frontend() as server:
        yield server


def test_the_frontend_on_its_own_origin_posts_and_follows_a_video(
    make_system: Callable[..., System], fake_openai: FakeOpenAI, frontend: Frontend
) -> None:
    fake_openai.script(MODEL, Ok(latency=0.3))
    system = make_system(
        provider_env(fake_openai.base_url, GATEWAY_API_KEY=TOKEN, CORS_ORIGINS=f"{frontend.origin},https://app.example")
    )
    system.start_all()
    with chromium() as page:
        page.open(f"{frontend.origin}/?gateway={system.gateway_url}&video=cors-1&token={TOKEN}", 1024)
        assert page.wait_for("window.ended === true", timeout=60), page.evaluate(
            "JSON.stringify({posted: window.posted, blocked: window.blocked, progress: window.progress})"
        )
        posted = page.evaluate("window.posted")
        progress = page.evaluate("window.progress")
    assert posted["status"] == 202 and posted["body"]["videoId"] == "cors-1"
    assert posted["applied"] == "wait=0", "an exposed header the page can read"
    assert progress == sorted(progress) and progress[-1] == 100
    assert fake_openai.count(MODEL) == 3


def test_a_page_from_an_origin_not_listed_is_blocked(
    make_system: Callable[..., System], fake_openai: FakeOpenAI, frontend: Frontend
) -> None:
    system = make_system(provider_env(fake_openai.base_url, GATEWAY_API_KEY=TOKEN, CORS_ORIGINS="https://app.example"))
    system.start_all()
    with chromium() as page:
        page.open(f"{frontend.origin}/?gateway={system.gateway_url}&video=cors-2&token={TOKEN}", 1024)
        blocked = page.wait_for("window.blocked", timeout=30)
    assert blocked and "Failed to fetch" in blocked
    assert fake_openai.count(MODEL) == 0, "the preflight failed: the POST was never sent"
