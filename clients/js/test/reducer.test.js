// The reducer against the golden sequences of contracts/fixtures/reducer/: the
// same files tests/parity/test_reducer_golden.py replays through the parity
// harness's state model.
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { test } from "node:test";

import {
  PARITY_DOMAINS, StreamCursor, allParityKeys, applySnapshot, diffKeys, emptyState, parityKeys, reduce,
  snapshotQuery,
} from "../cutover.js";

const GOLDEN = new URL("../../../contracts/fixtures/reducer/", import.meta.url);
const names = readdirSync(GOLDEN).filter((n) => n.endsWith(".json")).sort();

function load(name) {
  return JSON.parse(readFileSync(new URL(name, GOLDEN), "utf8"));
}

/** What the SDK's extras of a step say, checked against the state. */
function checkSdk(state, sdk, where) {
  if (sdk.notificationIds) assert.deepEqual(state.notifications.items.map((n) => n.id), sdk.notificationIds, where);
  if (sdk.notificationsRead) {
    assert.deepEqual(state.notifications.items.filter((n) => n.readAt).map((n) => n.id).sort(), sdk.notificationsRead, where);
  }
  for (const [conv, ids] of Object.entries(sdk.messages || {})) {
    assert.deepEqual((state.chat.messages[conv] || []).map((m) => m.id), ids, where);
  }
  for (const [conv, users] of Object.entries(sdk.typing || {})) assert.deepEqual(state.chat.typing[conv] || [], users, where);
  for (const [messageId, users] of Object.entries(sdk.readBy || {})) {
    const message = Object.values(state.chat.messages).flat().find((m) => m.id === messageId);
    assert.deepEqual(message.readBy, users, where);
  }
  if (sdk.sent) assert.deepEqual(Object.keys(state.follow.sent).sort(), sdk.sent, where);
  for (const [id, fields] of Object.entries(sdk.events || {})) {
    for (const [field, value] of Object.entries(fields)) assert.equal(state.events[id][field], value, `${where}: ${id}.${field}`);
  }
}

test("there are golden sequences", () => {
  assert.ok(names.length >= 5, names.join());
});

for (const name of names) {
  test(`golden sequence ${name}`, () => {
    const golden = load(name);
    let state = applySnapshot(emptyState(golden.userId), golden.snapshot, { watchEvents: golden.watchEvents });
    assert.deepEqual({ seq: state.seq, keys: allParityKeys(state) }, golden.expect, "after the snapshot");
    const cursor = new StreamCursor(state.epoch, state.seq);
    golden.steps.forEach((step, i) => {
      const envelope = step.envelope;
      const verdict = cursor.classify(envelope);
      assert.notEqual(verdict, "gap", `step ${i}: a golden stream has no gaps`);
      if (verdict === "apply") cursor.advance(envelope.seq);
      if (verdict === "apply" || verdict === "ephemeral") state = reduce(state, envelope);
      const where = `${name} step ${i} (${envelope.type})`;
      assert.deepEqual({ seq: state.seq, keys: allParityKeys(state) }, step.expect, where);
      if (step.expectSdk) checkSdk(state, step.expectSdk, where);
    });
  });
}

test("the snapshot query reads the cursor first and aliases watched events as the harness does", () => {
  const { query, variables } = snapshotQuery({ watchEvents: ["gth_1", "gth_2"], watchPresence: ["bob"] });
  assert.match(query, /^query CutoverState\(\$e0: ID!, \$e1: ID!, \$presenceOf: \[ID!\]!\) \{ realtimeCursor \{ epoch seq \}/);
  assert.match(query, /e1: event\(id: \$e1\) \{ id title/);
  assert.deepEqual(variables, { e0: "gth_1", e1: "gth_2", presenceOf: ["bob"] });
  const poll = snapshotQuery({ domains: ["notification"], config: false });
  assert.equal(poll.query, "query CutoverState { realtimeCursor { epoch seq } unreadNotificationCount notifications(first: 10) { items { id kind text data createdAt readAt } } }");
});

test("a domain the state does not hold has no keys, which is not a count of zero", () => {
  const state = emptyState("alice");
  for (const domain of PARITY_DOMAINS) assert.deepEqual(parityKeys(state, domain), {});
  const held = applySnapshot(state, { realtimeCursor: { epoch: "e", seq: 0 }, unreadNotificationCount: 0 });
  assert.deepEqual(parityKeys(held, "notification"), { "notification.unread": 0 });
  assert.deepEqual(diffKeys({ "notification.unread": 0 }, {}), ["notification.unread"]);
  assert.deepEqual(diffKeys({ a: [1, 2] }, { a: [1, 2] }), []);
});

test("reduce never changes the state it is given", () => {
  const golden = load("chat.json");
  const before = applySnapshot(emptyState("alice"), golden.snapshot);
  const frozen = JSON.stringify(before);
  let state = before;
  for (const step of golden.steps) state = reduce(state, step.envelope);
  assert.equal(JSON.stringify(before), frozen);
  assert.notEqual(state, before);
});

test("presence, typing and notices are reduced from ephemeral events", () => {
  let state = emptyState("alice");
  state = reduce(state, { type: "user.presence.updated", payload: { userId: "bob", status: "AWAY", lastSeenAt: "t" } });
  state = reduce(state, { type: "chat.typing.started", payload: { conversationId: "c1", userId: "bob" } });
  state = reduce(state, { type: "chat.typing.started", payload: { conversationId: "c1", userId: "bob" } });
  state = reduce(state, { type: "system.notice", payload: { id: "n", text: "deploy", severity: "info" } });
  assert.deepEqual(state.presence.bob, { status: "AWAY", lastSeenAt: "t" });
  assert.deepEqual(state.chat.typing.c1, ["bob"]);
  assert.equal(state.notices[0].text, "deploy");
  state = reduce(state, { type: "chat.typing.stopped", payload: { conversationId: "c1", userId: "bob" } });
  assert.deepEqual(state.chat.typing.c1, []);
  assert.equal(state.seq, null, "ephemeral events do not move the stream position");
});

test("messages of the same millisecond keep the server's order; receipts only grow", () => {
  const at = "2026-02-17T09:30:00.000Z";
  const m = (id, extra = {}) => ({ id, conversationId: "c1", senderId: "bob", body: id, createdAt: at, deliveredTo: [], readBy: [], ...extra });
  let state = emptyState("alice");
  state = reduce(state, { type: "chat.message", seq: 1, payload: { message: m("msg_f") } });
  state = reduce(state, { type: "chat.message", seq: 2, payload: { message: m("msg_c") } });
  state = reduce(state, { type: "chat.message", seq: 3, payload: { message: m("msg_a", { createdAt: "2026-02-17T09:29:59.000Z" }) } });
  assert.deepEqual(state.chat.messages.c1.map((x) => x.id), ["msg_a", "msg_f", "msg_c"]);
  state = reduce(state, { type: "chat.read", seq: 4, payload: { conversationId: "c1", userId: "alice", upToMessageId: "msg_c" } });
  assert.deepEqual(state.chat.messages.c1.map((x) => x.readBy), [["alice"], ["alice"], ["alice"]]);
  // a resume replays the older chat.message: the receipt stays
  state = reduce(state, { type: "chat.message", seq: 2, payload: { message: m("msg_c") } });
  assert.deepEqual(state.chat.messages.c1.map((x) => x.id), ["msg_a", "msg_f", "msg_c"]);
  assert.deepEqual(state.chat.messages.c1[2].readBy, ["alice"]);
});
