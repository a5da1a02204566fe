// @storyshort/preview-images: a typed client for the StoryShort preview-images gateway.
export {
  createStoryShortClient,
  type ClientOptions,
  type FailedScene,
  type Finished,
  type Image,
  type KnownStatus,
  type Preview,
  type Result,
  type Scene,
  type StartAnswer,
  type StartOptions,
  type Started,
  type StoryShortClient,
  type VideoStatus,
} from "./client.js";
export { StoryShortError, type ErrorCode, type FieldViolation } from "./errors.js";
export type { components, paths } from "./schema.js";
export type { TokenSource } from "./tokens.js";
export { isRunning, watchVideo, type PreviewEvent, type WatchHandlers, type WatchOptions } from "./watch.js";
