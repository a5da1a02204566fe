// The event-stream parser, fed as a network feeds it: in arbitrary pieces.
import assert from "node:assert/strict";
import { test } from "node:test";
import { EventParser } from "../dist/sse.js";

const STREAM =
  'retry: 2000\r\n\r\n: heartbeat\r\n\r\nevent: status\r\ndata: {"a":1}\r\n\r\n' +
  "event: preview\ndata: line one\ndata: line two\n\nevent: end\rdata: {}\r\r";

function parseInPieces(size) {
  const parser = new EventParser();
  const events = [];
  let retry;
  for (let at = 0; at < STREAM.length; at += size) {
    const parsed = parser.push(STREAM.slice(at, at + size));
    events.push(...parsed.events);
    retry = parsed.retry ?? retry;
  }
  return { events, retry };
}

test("events, multi-line data, comments and retry, whatever the line endings and the pieces", () => {
  for (const size of [1, 2, 3, 5, 7, STREAM.length]) {
    const { events, retry } = parseInPieces(size);
    assert.equal(retry, 2000, `pieces of ${size}`);
    assert.deepEqual(
      events,
      [
        { event: "status", data: '{"a":1}' },
        { event: "preview", data: "line one\nline two" },
        { event: "end", data: "{}" },
      ],
      `pieces of ${size}`,
    );
  }
});

test("a block without data dispatches nothing; a field without a colon is a field with no value", () => {
  const parser = new EventParser();
  assert.deepEqual(parser.push("event: status\n\n").events, []);
  assert.deepEqual(parser.push("data\n\n").events, [{ event: "message", data: "" }]);
});
