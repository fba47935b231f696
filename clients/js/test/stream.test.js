// Dedupe on envelope ids and the stream position's verdicts.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Deduper, StreamCursor, domainOf } from "../cutover.js";

test("the deduper remembers a bounded window of ids", () => {
  const d = new Deduper(3);
  assert.equal(d.seen("a"), false);
  assert.equal(d.seen("a"), true);
  d.seen("b");
  d.seen("c");
  d.seen("d");
  assert.equal(d.seen("a"), false, "the oldest id left the window");
  assert.equal(d.seen(undefined), false);
  assert.equal(d.ids.size, 3);
});

test("the next seq applies, an old one is a duplicate, a jump is a gap", () => {
  const c = new StreamCursor("ep", 10);
  assert.equal(c.classify({ seq: 11 }), "apply");
  assert.equal(c.classify({ seq: 10 }), "duplicate");
  assert.equal(c.classify({ seq: 3 }), "duplicate");
  assert.equal(c.classify({ seq: 13 }), "gap");
  assert.equal(c.classify({ type: "chat.typing.started" }), "ephemeral");
});

test("while a resume is in flight a jump is early (the replay brings it), not a gap", () => {
  const c = new StreamCursor("ep", 10);
  c.resuming = "resume-1";
  assert.equal(c.classify({ seq: 14 }), "early");
  assert.equal(c.classify({ seq: 11 }), "apply");
  c.resuming = null;
  assert.equal(c.classify({ seq: 14 }), "gap");
});

test("without a position (a snapshot in flight) every durable event waits", () => {
  const c = new StreamCursor();
  assert.equal(c.classify({ seq: 1 }), "early");
});

test("event types map to the rollout's domains", () => {
  assert.equal(domainOf("chat.conversation.updated"), "chat");
  assert.equal(domainOf("user.presence.updated"), "presence");
  assert.equal(domainOf("event.rsvp.updated"), "event");
  assert.equal(domainOf("session.welcome"), null);
  assert.equal(domainOf("sms.message.received"), null);
});
