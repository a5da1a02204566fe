// Server-Sent Events read from a fetch body (so the access token goes in a header, never in a
// URL), parsed as the HTML standard says: lines end in \n, \r\n or \r; `event`, `data`
// (lines joined with \n) and `retry` fields; `:` comments; a blank line dispatches.

export interface ServerEvent {
  event: string;
  data: string;
}

export interface Parsed {
  /** Events complete so far. */
  events: ServerEvent[];
  /** The server's `retry:` advice in ms, when one came. */
  retry?: number;
}

export class EventParser {
  private buffer = "";
  private event = "";
  private data: string[] = [];
  private sawCR = false;

  /** Feed decoded text; answer the events it completed. */
  push(text: string): Parsed {
    const parsed: Parsed = { events: [] };
    let chunk = text;
    if (this.sawCR && chunk.startsWith("\n")) chunk = chunk.slice(1); // \r\n split across chunks
    this.sawCR = false;
    this.buffer += chunk;
    for (;;) {
      const end = this.buffer.search(/[\r\n]/);
      if (end < 0) break;
      const line = this.buffer.slice(0, end);
      let next = end + 1;
      if (this.buffer[end] === "\r") {
        if (next === this.buffer.length) this.sawCR = true;
        else if (this.buffer[next] === "\n") next += 1;
      }
      this.buffer = this.buffer.slice(next);
      this.line(line, parsed);
    }
    return parsed;
  }

  private line(line: string, parsed: Parsed): void {
    if (line === "") {
      if (this.data.length > 0) parsed.events.push({ event: this.event || "message", data: this.data.join("\n") });
      this.event = "";
      this.data = [];
      return;
    }
    if (line.startsWith(":")) return; // a comment: the heartbeat
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.event = value;
    else if (field === "data") this.data.push(value);
    else if (field === "retry" && /^\d+$/.test(value)) parsed.retry = Number(value);
  }
}
