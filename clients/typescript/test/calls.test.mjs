// The calls and watchVideo against a real gateway (`make run`'s four processes on free
// ports, the placeholder chain): start, follow to the end, Prefer: wait, regenerate, bad
// input, an unknown video.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createStoryShortClient, StoryShortError, watchVideo } from "../dist/index.js";
import { follow, prompts, startSystem, videoId, within } from "./helpers.mjs";

let system;
let client;

before(async () => {
  system = await startSystem();
  client = createStoryShortClient({ baseUrl: system.url });
});

after(async () => {
  await system?.stop();
});

test("start answers 202 and watch follows the video to its end", async () => {
  const id = videoId("start");
  const started = await client.start(id, prompts(3));
  assert.equal(started.ended, false);
  assert.equal(started.videoId, id);
  assert.equal(started.scenes, 3);
  assert.equal(started.alreadyRunning, false);

  const { seen, done } = follow((handlers) => client.watch(id, handlers));
  await within(done, 30_000, "the watch ends");
  assert.equal(seen.error, undefined, `no error: ${seen.error?.message}`);
  assert.equal(seen.end.status, "assets_generated");
  assert.equal(seen.end.progress, 100);
  assert.deepEqual(
    seen.end.images.map((image) => image.scene),
    [1, 2, 3],
  );
  assert.ok(seen.end.images.every((image) => image.placeholder && image.url.startsWith(system.url)));
  // Progress never goes back, and the last status seen is the end's.
  const progress = seen.statuses.map((status) => status.progress);
  assert.deepEqual(progress, [...progress].sort((a, b) => a - b));
  assert.deepEqual(seen.statuses.at(-1), seen.end);

  // The status call answers the same video; its images are served.
  const status = await client.status(id);
  assert.equal(status.status, "assets_generated");
  assert.deepEqual(
    status.images.map((image) => image.url),
    seen.end.images.map((image) => image.url),
  );
  const image = await fetch(status.images[0].url);
  assert.equal(image.status, 200);
  assert.match(image.headers.get("content-type"), /^image\//);
});

test("a watch of a video that already ended sends its status and ends", async () => {
  const id = videoId("ended");
  await client.start(id, prompts(1), { waitSeconds: 30 });
  const { seen, done } = follow((handlers) => watchVideo(id, { baseUrl: system.url, ...handlers }));
  await within(done, 30_000, "the watch ends");
  assert.equal(seen.statuses.length, 1);
  assert.equal(seen.end.status, "assets_generated");
});

test("waitSeconds (Prefer: wait) answers each scene's result when the run ends in time", async () => {
  const id = videoId("waited");
  const answer = await client.start(id, [{ prompt: "a fox", index: 0 }, "a lighthouse"], { waitSeconds: 30 });
  assert.equal(answer.ended, true);
  assert.equal(answer.status, "assets_generated");
  assert.equal(answer.progress, 100);
  assert.deepEqual(
    answer.results.map((result) => [result.index, result.scene, result.success]),
    [
      [0, 1, true],
      [1, 2, true],
    ],
  );
  assert.equal(answer.placeholdersUsed, 2);
});

test("resume without scenes reuses the prompts; a second start of a running video joins it", async () => {
  const id = videoId("resume");
  await client.start(id, prompts(2), { waitSeconds: 30 });
  const resumed = await client.start(id, undefined, { waitSeconds: 30 });
  assert.equal(resumed.ended, true);
  assert.equal(resumed.scenes, 2);
  assert.equal(resumed.status, "assets_generated");
});

test("regenerate makes one scene again under a new version", async () => {
  const id = videoId("regen");
  await client.start(id, prompts(2), { waitSeconds: 30 });
  const before = await client.status(id);
  const again = await client.regenerate(id, 2, { prompt: "a lighthouse at dawn" });
  assert.equal(again.videoId, id);
  assert.equal(again.alreadyRunning, false);
  const { seen, done } = follow((handlers) => client.watch(id, handlers));
  await within(done, 30_000, "the regenerate run ends");
  assert.equal(seen.end.status, "assets_generated");
  const urls = (status) => status.images.map((image) => image.url);
  assert.equal(urls(seen.end)[0], urls(before)[0], "scene 1 is kept");
  assert.notEqual(urls(seen.end)[1], urls(before)[1], "scene 2 has a new version");
});

test("bad input is a typed 400 that names the field; nothing is started", async () => {
  const id = videoId("bad");
  const error = await client.start(id, [{ prompt: "" }]).catch((caught) => caught);
  assert.ok(error instanceof StoryShortError, String(error));
  assert.equal(error.status, 400);
  assert.equal(error.code, "INVALID_ARGUMENT");
  assert.ok(error.message.length > 0);
  assert.ok(error.fieldViolations.length > 0, "the field at fault is named");
  const missing = await client.status(id).catch((caught) => caught);
  assert.equal(missing.code, "NOT_FOUND", "a refused start wrote nothing");

  const badScene = await client.regenerate(id, 0).catch((caught) => caught);
  assert.equal(badScene.status, 400);
});

test("an unknown video: status is a typed 404, and a watch reports it and stops", async () => {
  const error = await client.status("nobody-has-this").catch((caught) => caught);
  assert.ok(error instanceof StoryShortError);
  assert.equal(error.status, 404);
  assert.equal(error.code, "NOT_FOUND");
  const { seen, done } = follow((handlers) => client.watch("nobody-has-this", handlers));
  await within(done, 10_000, "the watch gives up");
  assert.equal(seen.end, undefined);
  assert.equal(seen.error.code, "NOT_FOUND");
  assert.equal(seen.reconnects.length, 0, "a 404 is not retried");
});

test("a regenerate of a scene that does not exist is a typed 404", async () => {
  const id = videoId("regen404");
  await client.start(id, prompts(1), { waitSeconds: 30 });
  const error = await client.regenerate(id, 5).catch((caught) => caught);
  assert.equal(error.status, 404);
  assert.equal(error.code, "NOT_FOUND");
});

test("a gateway that is not there is a NETWORK error, not a crash", async () => {
  const nowhere = createStoryShortClient({ baseUrl: "http://127.0.0.1:9" });
  const error = await nowhere.status("x").catch((caught) => caught);
  assert.ok(error instanceof StoryShortError);
  assert.equal(error.code, "NETWORK");
  assert.equal(error.status, 0);
});
