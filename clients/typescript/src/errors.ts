// The gateway's errors, typed: every error answer is JSON,
// {"error": {"code", "message", "reason"?, "fieldViolations"?}}, with Retry-After where waiting helps.
import type { components } from "./schema.js";

export type FieldViolation = components["schemas"]["FieldViolation"];

/** The codes the gateway answers (gRPC's names, mapped to HTTP as grpc-gateway maps them),
 * plus NETWORK (no answer at all) and UNKNOWN (an answer that is not the gateway's JSON). */
export type ErrorCode =
  | "INVALID_ARGUMENT"
  | "FAILED_PRECONDITION"
  | "UNAUTHENTICATED"
  | "PERMISSION_DENIED"
  | "NOT_FOUND"
  | "ALREADY_EXISTS"
  | "RESOURCE_EXHAUSTED"
  | "UNAVAILABLE"
  | "DEADLINE_EXCEEDED"
  | "INTERNAL"
  | "NETWORK"
  | "UNKNOWN"
  | (string & {});

export class StoryShortError extends Error {
  override readonly name = "StoryShortError";
  /** The HTTP status (0: no answer reached us). */
  readonly status: number;
  readonly code: ErrorCode;
  /** A stable, machine-readable reason (for example PROMPT_EMPTY, USER_LIMIT, TOKEN_EXPIRED). */
  readonly reason: string | undefined;
  /** Seconds to wait before trying again, where the gateway said (Retry-After). */
  readonly retryAfter: number | undefined;
  /** The request fields at fault, for a 400. */
  readonly fieldViolations: FieldViolation[];

  constructor(
    message: string,
    init: {
      status: number;
      code: ErrorCode;
      reason?: string | undefined;
      retryAfter?: number | undefined;
      fieldViolations?: FieldViolation[] | undefined;
      cause?: unknown;
    },
  ) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.status = init.status;
    this.code = init.code;
    this.reason = init.reason;
    this.retryAfter = init.retryAfter;
    this.fieldViolations = init.fieldViolations ?? [];
  }
}

/** Retry-After in seconds (a number of seconds or an HTTP date), or undefined. */
export function retryAfterSeconds(header: string | null): number | undefined {
  if (header === null || header.trim() === "") return undefined;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.max(seconds, 0);
  const date = Date.parse(header);
  return Number.isNaN(date) ? undefined : Math.max((date - Date.now()) / 1000, 0);
}

/** The error a non-2xx answer stands for, from its JSON body (read by the caller). */
export function errorFromAnswer(response: Response, body: unknown): StoryShortError {
  const retryAfter = retryAfterSeconds(response.headers.get("Retry-After"));
  const detail = (body as { error?: Partial<components["schemas"]["ErrorDetail"]> } | undefined)?.error;
  if (detail && typeof detail.code === "string" && typeof detail.message === "string") {
    return new StoryShortError(detail.message, {
      status: response.status,
      code: detail.code,
      reason: detail.reason ?? undefined,
      retryAfter,
      fieldViolations: detail.fieldViolations ?? undefined,
    });
  }
  return new StoryShortError(`the gateway answered ${response.status} ${response.statusText}`.trim(), {
    status: response.status,
    code: "UNKNOWN",
    retryAfter,
  });
}

/** The error for a request that got no answer (refused, dropped, offline). */
export function networkError(cause: unknown): StoryShortError {
  const message = cause instanceof Error ? cause.message : String(cause);
  return new StoryShortError(`no answer from the gateway: ${message}`, { status: 0, code: "NETWORK", cause });
}
