// Signed-in users and the faults a browser meets, against a real gateway with users on
// (Supabase's HS256 tokens) and a model that takes its time (the OpenAI fake, each image
// 1.5 s, a preview on the way): 401s, a token that expires mid-stream and is renewed, a
// dropped connection, a connection that goes silent.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createStoryShortClient, StoryShortError } from "../dist/index.js";
import {
  AUTH_ENV,
  follow,
  mintToken,
  prompts,
  providerEnv,
  startProxy,
  startPython,
  startSystem,
  videoId,
  waitFor,
  within,
} from "./helpers.mjs";

let fake;
let system;

before(async () => {
  fake = await startPython(["-m", "tests.fakes.openai_fake", "--latency", "1.5", "--key", "sk-client-tests"]);
  system = await startSystem({ ...AUTH_ENV, ...providerEnv(fake.port), EVENTS_HEARTBEAT: "0.2" });
});

after(async () => {
  await system?.stop();
  await fake?.stop();
});

const as = (user, options = {}) => createStoryShortClient({ baseUrl: system.url, token: mintToken(user), ...options });

test("without a token every call is a typed 401; with one the run is followed, previews included", async () => {
  const anonymous = createStoryShortClient({ baseUrl: system.url });
  const refused = await anonymous.start(videoId("anon"), prompts(1)).catch((caught) => caught);
  assert.ok(refused instanceof StoryShortError);
  assert.equal(refused.status, 401);
  assert.equal(refused.code, "UNAUTHENTICATED");
  const { seen: anonymousWatch, done: anonymousDone } = follow((handlers) => anonymous.watch("whatever", handlers));
  await within(anonymousDone, 10_000, "an anonymous watch gives up");
  assert.equal(anonymousWatch.error.code, "UNAUTHENTICATED");

  const alice = as("alice");
  const id = videoId("alice");
  await alice.start(id, prompts(2));
  const { seen, done } = follow((handlers) => alice.watch(id, handlers));
  await within(done, 60_000, "alice's watch ends");
  assert.equal(seen.error, undefined, seen.error?.message);
  assert.equal(seen.end.status, "assets_generated");
  assert.ok(seen.end.images.every((image) => !image.placeholder && image.provider === "gpt-image-2"));
  // The model streams a partial image before each final: at least one reached the watch,
  // as a preview object the gateway serves.
  assert.ok(seen.previews.length >= 1, "a preview came before the images");
  assert.ok(seen.previews.every((preview) => preview.scene >= 1 && preview.scene <= 2));
  const previewImage = await fetch(seen.previews[0].url);
  assert.equal(previewImage.status, 200);
});

test("someone else's video is a 404, as one that does not exist", async () => {
  const id = videoId("private");
  await as("alice").start(id, prompts(1), { waitSeconds: 30 });
  const bob = as("bob");
  const error = await bob.status(id).catch((caught) => caught);
  assert.equal(error.status, 404);
  assert.equal(error.code, "NOT_FOUND");
  const { seen, done } = follow((handlers) => bob.watch(id, handlers));
  await within(done, 10_000, "bob's watch gives up");
  assert.equal(seen.error.code, "NOT_FOUND");
  const regenerate = await bob.regenerate(id, 1).catch((caught) => caught);
  assert.equal(regenerate.status, 404);
});

test("an expired token is renewed from the token function, once per 401", async () => {
  const asked = [];
  const client = createStoryShortClient({
    baseUrl: system.url,
    token: async ({ expired }) => {
      asked.push(expired);
      return expired ? mintToken("carol") : mintToken("carol", -3600);
    },
  });
  const id = videoId("carol");
  const started = await client.start(id, prompts(1), { waitSeconds: 30 });
  assert.equal(started.ended, true);
  assert.deepEqual(asked, [false, true], "the stale token, a 401, then a fresh one");

  // A source that cannot renew: the 401 is the caller's to see, after one try again.
  const stale = createStoryShortClient({ baseUrl: system.url, token: () => mintToken("carol", -3600) });
  const error = await stale.status(id).catch((caught) => caught);
  assert.equal(error.code, "UNAUTHENTICATED");
});

test("a token that expires mid-stream: the watch takes a fresh one and follows on to the end", async () => {
  const id = videoId("expiring");
  const asked = [];
  // 2 s left (the gateway allows 30 s of leeway past `exp`); the run takes longer.
  const token = async ({ expired }) => {
    asked.push(expired);
    return mintToken("dave", expired ? 3600 : -28);
  };
  const client = createStoryShortClient({ baseUrl: system.url, token });
  await createStoryShortClient({ baseUrl: system.url, token: mintToken("dave") }).start(id, prompts(6));
  const { seen, done } = follow((handlers) => client.watch(id, handlers));
  await within(done, 60_000, "the watch ends");
  assert.equal(seen.error, undefined, seen.error?.message);
  assert.equal(seen.end.status, "assets_generated");
  assert.equal(seen.end.images.length, 6);
  assert.ok(asked.includes(true), `a fresh token was asked for (asked: ${asked})`);
  assert.equal(asked[0], false);
  const progress = seen.statuses.map((status) => status.progress);
  assert.deepEqual(progress, [...progress].sort((a, b) => a - b), "progress never went back across the reconnect");
});

test("a dropped connection is reconnected, and the watch still sees the end", async () => {
  const proxy = await startProxy(Number(new URL(system.url).port));
  try {
    const eve = createStoryShortClient({ baseUrl: `http://127.0.0.1:${proxy.port}`, token: mintToken("eve") });
    const id = videoId("dropped");
    await eve.start(id, prompts(6));
    const { seen, done } = follow((handlers) => eve.watch(id, handlers, { reconnectDelayMs: 100 }));
    await waitFor(() => seen.statuses.length >= 1, 20_000, "the first status");
    const before = proxy.connections;
    proxy.drop();
    await within(done, 60_000, "the watch ends");
    assert.equal(seen.error, undefined, seen.error?.message);
    assert.equal(seen.end.status, "assets_generated");
    assert.ok(seen.reconnects.length >= 1, "the drop was felt");
    assert.equal(seen.reconnects[0].error.code, "NETWORK");
    assert.ok(proxy.connections > before, "a new connection was opened");
  } finally {
    await proxy.stop();
  }
});

test("a connection that goes silent is taken for dead after idleTimeoutMs and opened again", async () => {
  const proxy = await startProxy(Number(new URL(system.url).port));
  try {
    const frank = createStoryShortClient({ baseUrl: `http://127.0.0.1:${proxy.port}`, token: mintToken("frank") });
    const id = videoId("silent");
    await frank.start(id, prompts(6));
    // The gateway's heartbeat is every 0.2 s here: 1.5 s of nothing is a dead connection.
    const { seen, done } = follow((handlers) =>
      frank.watch(id, handlers, { idleTimeoutMs: 1_500, reconnectDelayMs: 100 }),
    );
    await waitFor(() => seen.statuses.length >= 1, 20_000, "the first status");
    proxy.freeze();
    await within(done, 60_000, "the watch ends");
    assert.equal(seen.error, undefined, seen.error?.message);
    assert.equal(seen.end.status, "assets_generated");
    assert.ok(seen.reconnects.length >= 1, "the silence was felt");
    assert.match(seen.reconnects[0].error.message, /nothing came from the gateway/);
  } finally {
    await proxy.stop();
  }
});

test("stop() ends a watch: no handler is called after it", async () => {
  const grace = as("grace");
  const id = videoId("stopped");
  await grace.start(id, prompts(3));
  const { seen, stop } = follow((handlers) => grace.watch(id, handlers));
  await waitFor(() => seen.statuses.length >= 1, 20_000, "the first status");
  stop();
  const count = seen.statuses.length;
  await grace.start(id, undefined, { waitSeconds: 30 }); // the run ends meanwhile
  assert.equal(seen.statuses.length, count);
  assert.equal(seen.end, undefined);
  assert.equal(seen.error, undefined);
});
