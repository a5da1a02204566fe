// When the gateway refuses streams (503: it follows as many as EVENTS_MAX_FOLLOWERS allows),
// watchVideo polls GET /api/video-status instead, previews and all, until the run ends.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createStoryShortClient } from "../dist/index.js";
import { follow, prompts, providerEnv, startPython, startSystem, videoId, waitFor, within } from "./helpers.mjs";

let fake;
let system;

before(async () => {
  fake = await startPython(["-m", "tests.fakes.openai_fake", "--latency", "1.5", "--key", "sk-client-tests"]);
  system = await startSystem({ ...providerEnv(fake.port), EVENTS_MAX_FOLLOWERS: "1" });
});

after(async () => {
  await system?.stop();
  await fake?.stop();
});

test("streams refused with 503: the watch polls the status to the end", async () => {
  const client = createStoryShortClient({ baseUrl: system.url });
  const id = videoId("polled");
  await client.start(id, prompts(6));
  // The one stream this gateway allows.
  const first = follow((handlers) => client.watch(id, handlers));
  await waitFor(() => first.seen.statuses.length >= 1, 20_000, "the first watch streams");
  const second = follow((handlers) => client.watch(id, handlers, { pollIntervalMs: 200 }));
  const [streamed, polled] = await within(Promise.all([first.done, second.done]), 60_000, "both watches end");
  assert.equal(streamed.polling.length, 0, "the first watch streamed");
  assert.equal(polled.polling.length, 1, "the second was refused a stream");
  assert.equal(polled.polling[0].status, 503);
  assert.equal(polled.polling[0].code, "UNAVAILABLE");
  assert.equal(polled.error, undefined, polled.error?.message);
  assert.equal(polled.end.status, "assets_generated");
  assert.deepEqual(polled.end.images, streamed.end.images, "both saw the same end");
  assert.ok(polled.statuses.length >= 2, "progress was polled on the way");
  const progress = polled.statuses.map((status) => status.progress);
  assert.deepEqual(progress, [...progress].sort((a, b) => a - b));
});
