// The built bundle in Debian's Chromium: a page on another origin (as the StoryShort
// frontend is) loads dist/storyshort.browser.js, starts a video as a signed-in user and
// follows it to its end. What only a browser does is exercised: CORS preflights for the
// Authorization header, a streamed fetch body across origins, previews on the way.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { execFileSync } from "node:child_process";
import {
  AUTH_ENV,
  freePort,
  mintToken,
  providerEnv,
  startPython,
  startSystem,
  videoId,
  within,
} from "./helpers.mjs";

const HERE = dirname(fileURLToPath(import.meta.url));
const BUNDLE = join(HERE, "../dist/storyshort.browser.js");

/** Processes started with this profile: Chromium's helpers (zygotes, renderers, the GPU and
 * network processes) outlive the browser by seconds, writing into it as they close. */
function usingProfile(profile) {
  const found = [];
  for (const pid of readdirSync("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, "latin1").includes(profile)) found.push(Number(pid));
    } catch {
      // ended meanwhile
    }
  }
  return found;
}

/** Stop the browser and every process of its profile (its own process group first; any
 * left after 15 s are killed), then remove the profile: nothing writes into it any more. */
async function stopChromium(child, exited, profile) {
  try {
    process.kill(-child.pid, "SIGTERM");
  } catch {
    // the group is gone already
  }
  await exited;
  const deadline = Date.now() + 15_000;
  for (let left = usingProfile(profile); left.length; left = usingProfile(profile)) {
    if (Date.now() > deadline) {
      for (const pid of left) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // ended meanwhile
        }
      }
    }
    await new Promise((wake) => setTimeout(wake, 50));
  }
  rmSync(profile, { recursive: true, force: true });
}

function chromium() {
  for (const name of ["chromium", "chromium-browser"]) {
    try {
      return execFileSync("sh", ["-c", `command -v ${name}`]).toString().trim();
    } catch {
      // not this one
    }
  }
  return undefined;
}

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>StoryShort client</title></head>
<body><p id="state">loading</p>
<script type="module">
import { createStoryShortClient } from "/storyshort.browser.js";
const params = new URLSearchParams(location.hash.slice(1));
const report = (body) => fetch("/result", { method: "POST", body: JSON.stringify(body) });
window.addEventListener("error", (e) => report({ error: { code: "PAGE", message: String(e.message) } }));
try {
  const client = createStoryShortClient({ baseUrl: params.get("gateway"), token: async () => params.get("token") });
  const id = params.get("video");
  const started = await client.start(id, ["a fox in the snow", "a lighthouse at dusk", "a city at night"]);
  const progress = [];
  const previews = [];
  client.watch(id, {
    onStatus: (status) => { progress.push(status.progress); document.getElementById("state").textContent = status.status; },
    onPreview: (preview) => previews.push(preview),
    onEnd: (last) => report({ started, progress, previews, last }),
    onError: (error) => report({ error: { code: error.code, message: error.message } }),
  });
} catch (error) {
  report({ error: { code: error.code ?? "THROWN", message: String(error) } });
}
</script></body></html>`;

let fake;
let system;
let page;
let pagePort;
let resolveResult;
const result = new Promise((resolve) => (resolveResult = resolve));

before(async () => {
  if (!chromium()) return;
  pagePort = await freePort();
  fake = await startPython(["-m", "tests.fakes.openai_fake", "--latency", "1", "--key", "sk-client-tests"]);
  system = await startSystem({
    ...AUTH_ENV,
    ...providerEnv(fake.port),
    CORS_ORIGINS: `http://127.0.0.1:${pagePort}`,
  });
  page = createServer((request, response) => {
    if (request.method === "POST" && request.url === "/result") {
      let body = "";
      request.on("data", (chunk) => (body += chunk));
      request.on("end", () => {
        resolveResult(JSON.parse(body));
        response.end("ok");
      });
      return;
    }
    if (request.url === "/storyshort.browser.js") {
      response.writeHead(200, { "Content-Type": "text/javascript" });
      response.end(readFileSync(BUNDLE));
      return;
    }
    if (request.url === "/" || request.url.startsWith("/?")) {
      response.writeHead(200, { "Content-Type": "text/html" });
      response.end(PAGE);
      return;
    }
    response.writeHead(404);
    response.end();
  });
  await new Promise((done) => page.listen(pagePort, "127.0.0.1", done));
});

after(async () => {
  await new Promise((done) => (page ? page.close(() => done()) : done()));
  await system?.stop();
  await fake?.stop();
});

test("Chromium: the bundle starts a video on another origin and follows it to the end", async (t) => {
  const browser = chromium();
  if (!browser) {
    if (process.env.CI === "true") assert.fail("CI=true and no chromium: .ci/run installs Debian's chromium");
    t.skip("no chromium on this machine (apt-get install chromium); CI installs it");
    return;
  }
  const id = videoId("browser");
  const hash = new URLSearchParams({ gateway: system.url, token: mintToken("browser-user"), video: id });
  const profile = mkdtempSync(join(tmpdir(), "storyshort-chromium-"));
  const child = spawn(
    browser,
    [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      `--user-data-dir=${profile}`,
      `http://127.0.0.1:${pagePort}/#${hash}`,
    ],
    { stdio: "ignore", detached: true }, // its own process group, stopped as one
  );
  const exited = new Promise((done) => child.once("exit", done));
  try {
    const seen = await within(result, 90_000, "the page reports the end");
    assert.equal(seen.error, undefined, JSON.stringify(seen.error));
    assert.equal(seen.started.ended, false);
    assert.equal(seen.started.scenes, 3);
    assert.equal(seen.last.status, "assets_generated");
    assert.equal(seen.last.progress, 100);
    assert.equal(seen.last.images.length, 3);
    assert.ok(seen.last.images.every((image) => !image.placeholder));
    assert.deepEqual(seen.progress, [...seen.progress].sort((a, b) => a - b));
    assert.ok(seen.previews.length >= 1, "a preview reached the page");
  } finally {
    await stopChromium(child, exited, profile);
  }
});
