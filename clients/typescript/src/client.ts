// The gateway's calls, typed from its OpenAPI document (src/schema.ts) and made with
// openapi-fetch: start (or resume) a video, read its status, regenerate one scene.
import createClient from "openapi-fetch";
import { errorFromAnswer, networkError, StoryShortError } from "./errors.js";
import type { components, paths } from "./schema.js";
import { authorization, Tokens, type TokenSource } from "./tokens.js";
import { watchVideo, type WatchHandlers, type WatchOptions } from "./watch.js";

export type Scene = components["schemas"]["SceneIn"];
export type Started = components["schemas"]["GenerateOut"];
export type Finished = components["schemas"]["GenerateWaitedOut"];
export type VideoStatus = components["schemas"]["VideoStatusOut"];
export type Image = components["schemas"]["ImageOut"];
export type Preview = components["schemas"]["PreviewOut"];
export type FailedScene = components["schemas"]["FailedSceneOut"];
export type Result = components["schemas"]["ResultOut"];

/** The statuses the gateway writes; a video may carry another one the StoryShort app set. */
export type KnownStatus = "draft" | "queued" | "generating_images" | "assets_generated" | "failed" | "processing";

/** What a start answers: `ended: false` (202, the run goes on; follow it with `watch`) or,
 * with `waitSeconds`, `ended: true` and each scene's result when the run ended in time. */
export type StartAnswer = ({ ended: false } & Started) | ({ ended: true } & Finished);

export interface ClientOptions {
  /** The gateway, for example "https://previews.example.com" ("" on the gateway's own origin). */
  baseUrl?: string;
  /** The user's Supabase access token, or a function that returns a fresh one. */
  token?: TokenSource;
  /** A fetch to use instead of the global one. */
  fetch?: typeof globalThis.fetch;
}

export interface StartOptions {
  /** `Prefer: wait=N`: wait up to N seconds (capped by the gateway's PREFER_WAIT_MAX) for the run. */
  waitSeconds?: number;
  signal?: AbortSignal;
}

export interface StoryShortClient {
  /** Start a video (one image per scene); scenes as prompts or `{prompt, index}`. Without
   * scenes, resume the video with the prompts of its latest run. */
  start(videoId: string, scenes?: ReadonlyArray<string | Scene>, options?: StartOptions): Promise<StartAnswer>;
  /** The video's status and progress. */
  status(videoId: string, options?: { signal?: AbortSignal }): Promise<VideoStatus>;
  /** Make one scene (1-based) again, with a new prompt or its own. */
  regenerate(videoId: string, scene: number, options?: { prompt?: string; signal?: AbortSignal }): Promise<Started>;
  /** Follow the video's status and previews until its run ends; answers a stop function. */
  watch(videoId: string, handlers: WatchHandlers, options?: Omit<WatchOptions, "baseUrl" | "token" | "fetch">): () => void;
}

type Answer<T> = { data?: T; error?: unknown; response: Response };

export function createStoryShortClient(options: ClientOptions = {}): StoryShortClient {
  const baseUrl = (options.baseUrl ?? "").replace(/\/+$/, "");
  const tokens = new Tokens(options.token);
  const fetchFn = options.fetch ?? ((input: Request) => globalThis.fetch(input));
  const api = createClient<paths>({ baseUrl, fetch: fetchFn });

  /** One call; on a 401 with a token function, once more with a fresh token (the gateway
   * checks credentials before it reads a body, so nothing was done the first time). */
  async function call<T>(send: (headers: Record<string, string>) => Promise<Answer<T>>): Promise<{ data: T; response: Response }> {
    let expired = false;
    for (;;) {
      let answer: Answer<T>;
      try {
        answer = await send(authorization(await tokens.get(expired)));
      } catch (cause) {
        if (cause instanceof StoryShortError) throw cause;
        if ((cause as { name?: string })?.name === "AbortError") throw cause;
        throw networkError(cause);
      }
      if (answer.response.ok && answer.data !== undefined) return { data: answer.data, response: answer.response };
      if (tokens.refreshes(answer.response.status, expired)) {
        expired = true;
        continue;
      }
      throw errorFromAnswer(answer.response, answer.error);
    }
  }

  return {
    async start(videoId, scenes, startOptions = {}) {
      const body = {
        videoId,
        scenes: (scenes ?? []).map((scene) => (typeof scene === "string" ? { prompt: scene } : scene)),
      };
      const prefer = startOptions.waitSeconds === undefined ? undefined : `wait=${startOptions.waitSeconds}`;
      const { data, response } = await call((headers) =>
        api.POST("/api/generate-preview-images", {
          body,
          headers: prefer === undefined ? headers : { ...headers, Prefer: prefer },
          signal: startOptions.signal,
        }),
      );
      return response.status === 200 ? { ...(data as Finished), ended: true } : { ...(data as Started), ended: false };
    },

    async status(videoId, statusOptions = {}) {
      const { data } = await call((headers) =>
        api.GET("/api/video-status", { params: { query: { videoId } }, headers, signal: statusOptions.signal }),
      );
      return data;
    },

    async regenerate(videoId, scene, regenerateOptions = {}) {
      const body = regenerateOptions.prompt === undefined ? {} : { prompt: regenerateOptions.prompt };
      const { data } = await call((headers) =>
        api.POST("/api/videos/{videoId}/scenes/{scene}/regenerate", {
          params: { path: { videoId, scene } },
          body,
          headers,
          signal: regenerateOptions.signal,
        }),
      );
      return data;
    },

    watch(videoId, handlers, watchOptions = {}) {
      return watchVideo(videoId, { ...watchOptions, ...handlers, baseUrl, token: options.token, fetch: options.fetch });
    },
  };
}
