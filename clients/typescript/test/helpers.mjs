// What the client's tests share: the system (scripts/system.mjs), tokens signed as Supabase
// signs them (HS256 with the project's JWT secret), a TCP proxy that can cut or freeze a
// connection, and waiting on a condition with a bound.
import { createHmac, randomUUID } from "node:crypto";
import { createServer, connect } from "node:net";

export { freePort, startPython, startSystem, waitFor } from "../scripts/system.mjs";

export const JWT_SECRET = "client-tests-jwt-secret-0123456789abcdef";
export const ISSUER = "http://127.0.0.1:9/auth/v1";
export const OPENAI_KEY = "sk-client-tests";

/** The settings of a gateway that serves signed-in users (legacy HS256 secret). */
export const AUTH_ENV = {
  AUTH_REQUIRED: "true",
  SUPABASE_JWT_SECRET: JWT_SECRET,
  AUTH_ISSUER: ISSUER,
  GATEWAY_API_KEY: "client-tests-operator-key",
};

/** Settings for a chain of one GPT image model on the OpenAI fake at `port`. */
export function providerEnv(port) {
  return {
    OPENAI_API_KEY: OPENAI_KEY,
    OPENAI_BASE_URL: `http://127.0.0.1:${port}/v1`,
    IMAGEGEN_CHAIN: "gpt-image-2",
  };
}

const b64url = (value) => Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");

/** A Supabase access token for `user`, expiring `expiresIn` seconds from now (negative: in
 * the past; the gateway allows 30 s of leeway). */
export function mintToken(user, expiresIn = 3600) {
  const now = Math.floor(Date.now() / 1000);
  const header = b64url({ alg: "HS256", typ: "JWT" });
  const payload = b64url({
    sub: user,
    aud: "authenticated",
    iss: ISSUER,
    iat: now,
    exp: now + expiresIn,
    role: "authenticated",
    is_anonymous: false,
  });
  const signature = createHmac("sha256", JWT_SECRET).update(`${header}.${payload}`).digest("base64url");
  return `${header}.${payload}.${signature}`;
}

export const videoId = (word = "video") => `${word}-${randomUUID().slice(0, 8)}`;

export const prompts = (n, word = "scene") =>
  Array.from({ length: n }, (_, i) => `${word} ${i + 1}: a lighthouse in a storm`);

/**
 * Follow a video with the client's `watch` (or watchVideo) and answer a promise of what was
 * seen: { statuses, previews, reconnects, polling, end, error }.
 */
export function follow(watch) {
  const seen = { statuses: [], previews: [], reconnects: [], polling: [], end: undefined, error: undefined };
  let stop;
  const done = new Promise((resolve) => {
    stop = watch({
      onStatus: (status) => seen.statuses.push(status),
      onPreview: (preview) => seen.previews.push(preview),
      onReconnect: (info) => seen.reconnects.push(info),
      onPolling: (error) => seen.polling.push(error),
      onEnd: (last) => {
        seen.end = last;
        resolve(seen);
      },
      onError: (error) => {
        seen.error = error;
        resolve(seen);
      },
    });
  });
  return { seen, done, stop: () => stop() };
}

/** Resolve `promise`, or fail after `ms` with `what`. */
export async function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A TCP proxy on a free loopback port in front of `target` (host:port). It counts the
 * connections it carried and can cut every open one (`drop()`: as a network blip or a
 * restarted load balancer does) or freeze them (`freeze()`: nothing more reaches the client,
 * and the connection stays open, as a half-dead NAT entry does).
 */
export async function startProxy(targetPort) {
  const open = new Set();
  const proxy = {
    connections: 0,
    port: 0,
    drop() {
      for (const pair of open) {
        pair.client.destroy();
        pair.upstream.destroy();
      }
    },
    freeze() {
      for (const pair of open) {
        pair.upstream.unpipe(pair.client);
        pair.upstream.pause();
      }
    },
    stop: () =>
      new Promise((done) => {
        proxy.drop();
        server.close(() => done());
      }),
  };
  const server = createServer((client) => {
    proxy.connections += 1;
    const upstream = connect(targetPort, "127.0.0.1");
    const pair = { client, upstream };
    open.add(pair);
    client.pipe(upstream);
    upstream.pipe(client);
    const close = () => {
      open.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", close);
    upstream.on("error", close);
    client.on("close", close);
    upstream.on("close", close);
  });
  await new Promise((done) => server.listen(0, "127.0.0.1", done));
  proxy.port = server.address().port;
  return proxy;
}
