// watchVideo: a video's status and previews as they change, until its run ends.
//
// It reads the gateway's event stream (GET /api/videos/{videoId}/events) with fetch, so the
// access token travels in the Authorization header, never in a URL. It
//   - stops at the stream's `end` (onEnd with the last status);
//   - reconnects with backoff when the connection drops, or when nothing (not even the
//     gateway's heartbeat) has come for `idleTimeoutMs`;
//   - asks the token source for a fresh token when the gateway says the token expired (a 401,
//     or the stream's `end` with reason TOKEN_EXPIRED), and carries on;
//   - polls GET /api/video-status when the gateway refuses streams (503), until the run ends.
// It gives up (onError) only on what waiting cannot change: an unknown video (or someone
// else's: the same 404), a token the source cannot renew, a bad request.
import type { Preview as PreviewOut, VideoStatus } from "./client.js";
import { errorFromAnswer, networkError, retryAfterSeconds, StoryShortError } from "./errors.js";
import { EventParser } from "./sse.js";
import { authorization, Tokens, type TokenSource } from "./tokens.js";

/** A `preview` event: the scene's latest partial image, until its image is in. */
export interface PreviewEvent {
  scene: number;
  url: string;
  /** Which partial image of the scene (0-based). */
  index: number;
}

export interface WatchHandlers {
  /** The status answer, whenever it changes (the first one at once). */
  onStatus?: (status: VideoStatus) => void;
  /** A scene being made has a new preview. */
  onPreview?: (preview: PreviewEvent) => void;
  /** The run ended (done or failed: see the status); nothing more comes. */
  onEnd?: (last: VideoStatus | undefined) => void;
  /** The watch stopped without an end: an unknown video, a token that cannot be renewed, ... */
  onError?: (error: StoryShortError) => void;
  /** The stream dropped (or was refused) and is tried again after `delayMs`. */
  onReconnect?: (info: { attempt: number; delayMs: number; error: StoryShortError }) => void;
  /** Streams are refused (503): from now on the status is polled. */
  onPolling?: (error: StoryShortError) => void;
}

export interface WatchOptions extends WatchHandlers {
  /** The gateway ("" on its own origin). */
  baseUrl?: string;
  /** The user's Supabase access token, or a function that returns a fresh one. */
  token?: TokenSource;
  fetch?: typeof globalThis.fetch;
  /** The first reconnect's delay (default: the stream's `retry:` advice, else 1000 ms); it
   * doubles on each failed attempt in a row, up to `maxReconnectDelayMs` (default 30000). */
  reconnectDelayMs?: number;
  maxReconnectDelayMs?: number;
  /** With nothing at all for this long (the gateway's heartbeat is every 15 s by default),
   * the connection is taken for dead and opened again (default 45000). */
  idleTimeoutMs?: number;
  /** How often to poll once streams are refused (default 2000; a Retry-After wins). */
  pollIntervalMs?: number;
}

type Outcome =
  | { kind: "end" }
  | { kind: "expired" }
  | { kind: "failed"; error: StoryShortError }
  | { kind: "dropped"; error: StoryShortError; progressed: boolean };

/** Whether a status may still change by itself (as the gateway decides when a stream ends). */
export function isRunning(status: VideoStatus): boolean {
  return status.degraded || status.status === "generating_images" || status.status === "queued";
}

/** Follow a video; answers a function that stops following (no handler is called after it). */
export function watchVideo(videoId: string, options: WatchOptions = {}): () => void {
  const watch = new Watch(videoId, options);
  void watch.run();
  return () => watch.stop();
}

class Watch {
  private stopped = false;
  private readonly stopping = new AbortController();
  private readonly tokens: Tokens;
  private readonly base: string;
  private readonly fetchFn: typeof globalThis.fetch;
  private last: VideoStatus | undefined;
  private lastJson = "";
  private readonly shown = new Map<number, string>();
  private serverRetry: number | undefined;

  constructor(
    private readonly videoId: string,
    private readonly options: WatchOptions,
  ) {
    this.tokens = new Tokens(options.token);
    this.base = (options.baseUrl ?? "").replace(/\/+$/, "");
    this.fetchFn = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
  }

  stop(): void {
    this.stopped = true;
    this.stopping.abort();
  }

  async run(): Promise<void> {
    try {
      await this.stream();
    } catch (error) {
      if (!this.stopped) this.fail(error instanceof StoryShortError ? error : networkError(error));
    }
  }

  private async stream(): Promise<void> {
    const url = `${this.base}/api/videos/${encodeURIComponent(this.videoId)}/events`;
    let attempt = 0;
    let expired = false; // the token just given was asked for as a fresh one
    while (!this.stopped) {
      const token = await this.tokens.get(expired);
      const connection = new AbortController();
      const abort = () => connection.abort();
      this.stopping.signal.addEventListener("abort", abort);
      // No answer, or nothing more, for idleTimeoutMs: the connection is taken for dead
      // (a half-open one never says so itself), whether before its headers or after.
      const watchdog = new Watchdog(this.options.idleTimeoutMs ?? 45_000, () => connection.abort());
      let outcome: Outcome;
      try {
        const response = await this.fetchFn(url, {
          headers: { Accept: "text/event-stream", ...authorization(token) },
          signal: connection.signal,
          cache: "no-store",
        });
        if (response.ok && response.body) {
          expired = false; // the token in hand was taken
          outcome = await this.read(response.body, watchdog);
        } else {
          const error = errorFromAnswer(response, await response.json().catch(() => undefined));
          if (this.tokens.refreshes(response.status, expired)) {
            expired = true;
            continue;
          }
          if (response.status === 503) {
            if (this.stopped) return;
            this.options.onPolling?.(error);
            await this.poll();
            return;
          }
          if (response.status === 429 || response.status >= 500) {
            outcome = { kind: "dropped", error, progressed: false };
          } else {
            outcome = { kind: "failed", error };
          }
        }
      } catch (cause) {
        if (this.stopped) return;
        outcome = { kind: "dropped", error: watchdog.error(cause), progressed: false };
      } finally {
        watchdog.clear();
        this.stopping.signal.removeEventListener("abort", abort);
        connection.abort(); // the body, should it still be open
      }
      if (this.stopped) return;
      switch (outcome.kind) {
        case "end":
          this.call(() => this.options.onEnd?.(this.last));
          return;
        case "failed":
          this.fail(outcome.error);
          return;
        case "expired":
          if (!this.tokens.refreshable) {
            this.fail(
              new StoryShortError("the access token expired; sign in again", {
                status: 401,
                code: "UNAUTHENTICATED",
                reason: "TOKEN_EXPIRED",
              }),
            );
            return;
          }
          expired = true;
          attempt = 0;
          continue;
        case "dropped": {
          if (outcome.progressed) attempt = 0;
          attempt += 1;
          const delayMs = this.delay(attempt, outcome.error.retryAfter);
          this.call(() => this.options.onReconnect?.({ attempt, delayMs, error: outcome.error }));
          await this.sleep(delayMs);
        }
      }
    }
  }

  /** Read one connection's events until it ends, drops or goes quiet for too long. */
  private async read(body: ReadableStream<Uint8Array>, watchdog: Watchdog): Promise<Outcome> {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    const parser = new EventParser();
    let progressed = false;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        watchdog.arm();
        const parsed = parser.push(decoder.decode(value, { stream: true }));
        if (parsed.retry !== undefined) this.serverRetry = parsed.retry;
        for (const event of parsed.events) {
          if (this.stopped) return { kind: "end" };
          if (event.event === "status") {
            progressed = true;
            this.status(JSON.parse(event.data) as VideoStatus);
          } else if (event.event === "preview") {
            progressed = true;
            this.preview(JSON.parse(event.data) as PreviewEvent);
          } else if (event.event === "end") {
            return this.ended(JSON.parse(event.data) as { reason?: string; message?: string });
          }
        }
      }
    } catch (cause) {
      return { kind: "dropped", error: watchdog.error(cause), progressed };
    }
    return { kind: "dropped", error: networkError("the stream closed before its end"), progressed };
  }

  private ended(data: { reason?: string; message?: string }): Outcome {
    if (!data.reason) return { kind: "end" };
    if (data.reason === "TOKEN_EXPIRED") return { kind: "expired" };
    const message = data.message ?? data.reason;
    if (data.reason === "STATUS_UNAVAILABLE") {
      // Whose video it is cannot be known now: ask again later.
      return { kind: "dropped", error: new StoryShortError(message, { status: 503, code: "UNAVAILABLE", reason: data.reason }), progressed: false };
    }
    const status = data.reason === "NOT_FOUND" ? 404 : 403;
    const code = data.reason === "NOT_FOUND" ? "NOT_FOUND" : data.reason;
    return { kind: "failed", error: new StoryShortError(message, { status, code, reason: data.reason }) };
  }

  /** Streams are refused: read the status every `pollIntervalMs` until the run ends. */
  private async poll(): Promise<void> {
    const url = `${this.base}/api/video-status?videoId=${encodeURIComponent(this.videoId)}`;
    const every = this.options.pollIntervalMs ?? 2_000;
    let expired = false;
    let failures = 0;
    while (!this.stopped) {
      let wait = every;
      try {
        const token = await this.tokens.get(expired);
        const response = await this.fetchFn(url, {
          headers: authorization(token),
          signal: this.stopping.signal,
          cache: "no-store",
        });
        const body: unknown = await response.json().catch(() => undefined);
        if (this.stopped) return;
        if (response.ok) {
          expired = false;
          failures = 0;
          const status = body as VideoStatus;
          for (const preview of status.previews ?? []) {
            this.preview({ scene: preview.scene, url: preview.previewUrl, index: preview.index } satisfies PreviewEvent);
          }
          this.status(status);
          if (!isRunning(status)) {
            this.call(() => this.options.onEnd?.(this.last));
            return;
          }
        } else {
          const error = errorFromAnswer(response, body);
          if (this.tokens.refreshes(response.status, expired)) {
            expired = true;
            continue;
          }
          if (!(response.status === 429 || response.status >= 500)) {
            this.fail(error);
            return;
          }
          failures += 1;
          wait = Math.max(this.delay(failures, error.retryAfter), every);
        }
      } catch {
        if (this.stopped) return;
        failures += 1;
        wait = Math.max(this.delay(failures, undefined), every);
      }
      await this.sleep(wait);
    }
  }

  private status(status: VideoStatus): void {
    const json = JSON.stringify(status);
    this.last = status;
    if (json === this.lastJson) return; // the same answer again (a reconnect's first event)
    this.lastJson = json;
    this.call(() => this.options.onStatus?.(status));
  }

  private preview(preview: PreviewEvent): void {
    if (this.shown.get(preview.scene) === preview.url) return;
    this.shown.set(preview.scene, preview.url);
    this.call(() => this.options.onPreview?.(preview));
  }

  private fail(error: StoryShortError): void {
    if (this.stopped) return;
    this.stopped = true;
    this.call(() => this.options.onError?.(error), true);
  }

  /** A handler; one that throws is reported and the watch goes on. */
  private call(handler: () => void, evenStopped = false): void {
    if (this.stopped && !evenStopped) return;
    try {
      handler();
    } catch (error) {
      console.error("a watchVideo handler threw", error);
    }
  }

  /** The reconnect delay: doubling from the first, capped, with a little jitter; never
   * less than the gateway's Retry-After. */
  private delay(attempt: number, retryAfter: number | undefined): number {
    const first = this.options.reconnectDelayMs ?? this.serverRetry ?? 1_000;
    const most = this.options.maxReconnectDelayMs ?? 30_000;
    const base = Math.min(first * 2 ** (attempt - 1), most);
    const jittered = base * (0.8 + Math.random() * 0.4);
    return Math.max(Math.round(jittered), (retryAfter ?? 0) * 1000);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((done) => {
      if (this.stopped) return done();
      const timer = setTimeout(finish, ms);
      const signal = this.stopping.signal;
      function finish() {
        clearTimeout(timer);
        signal.removeEventListener("abort", finish);
        done();
      }
      signal.addEventListener("abort", finish);
    });
  }
}

/** Calls `expire` once nothing has happened for `ms` (armed at once; `arm` starts it again). */
class Watchdog {
  private timer: ReturnType<typeof setTimeout> | undefined;
  private fired = false;

  constructor(
    private readonly ms: number,
    private readonly expire: () => void,
  ) {
    this.arm();
  }

  arm(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.fired = true;
      this.expire();
    }, this.ms);
  }

  clear(): void {
    clearTimeout(this.timer);
  }

  /** The error a connection ended with: silence, when the watchdog ended it. */
  error(cause: unknown): StoryShortError {
    if (!this.fired) return networkError(cause);
    return new StoryShortError(`nothing came from the gateway for ${this.ms} ms`, { status: 0, code: "NETWORK", cause });
  }
}
