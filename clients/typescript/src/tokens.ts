// Where the Supabase access token comes from: a string, or a function that returns a fresh
// one (for example `async () => (await supabase.auth.getSession()).data.session?.access_token`).
// It is asked before each request; with `expired: true` after the gateway said the last one
// had expired (call `supabase.auth.refreshSession()` then).

export type TokenSource =
  | string
  | null
  | undefined
  | ((context: { expired: boolean }) => string | null | undefined | Promise<string | null | undefined>);

export class Tokens {
  constructor(private readonly source: TokenSource) {}

  /** Whether asking again can give another token. */
  get refreshable(): boolean {
    return typeof this.source === "function";
  }

  /** Whether a request refused with `status` is worth once more with a fresh token: a 401,
   * a source that can give another token, and not already asked for one since the last
   * token was taken (`expired`), so a token the gateway keeps refusing is asked for once. */
  refreshes(status: number, expired: boolean): boolean {
    return status === 401 && this.refreshable && !expired;
  }

  async get(expired = false): Promise<string | undefined> {
    const token = typeof this.source === "function" ? await this.source({ expired }) : this.source;
    return token ? token : undefined;
  }
}

export function authorization(token: string | undefined): Record<string, string> {
  return token ? { Authorization: `Bearer ${token}` } : {};
}
