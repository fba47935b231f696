// The client against an in-memory server: snapshot and resume, gaps, resets,
// dedupe, reconnects, token refresh, the offline queue, the polling fallback
// (and hybrid mode) and parity beacons. Time is a fake clock.
import assert from "node:assert/strict";
import { test } from "node:test";

import { createClient } from "../cutover.js";
import { FakeClock, FakeServer, fakeClient } from "./fakes.js";

const FAST_POLLS = {
  notification: { stage: "LIVE", pollIntervalMs: 2000 },
  chat: { stage: "LIVE", pollIntervalMs: 2000 },
  follow: { stage: "SHADOW", pollIntervalMs: 2000 },
  event: { stage: "LIVE", pollIntervalMs: 2000 },
  organization: { stage: "OFF", pollIntervalMs: 2000 },
  activity: { stage: "OFF", pollIntervalMs: 2000 },
  presence: { stage: "OFF", pollIntervalMs: 2000 },
};

async function online(options = {}, serverOptions = {}) {
  const clock = new FakeClock();
  const server = new FakeServer(clock, serverOptions);
  server.notify("before the client");
  const client = fakeClient(createClient, server, clock, options);
  await client.start();
  await clock.advance(50);
  return { clock, server, client };
}

function graphqlRequests(server) {
  return server.requests.filter((r) => r.path === "/graphql").length;
}

test("snapshot at realtimeCursor, then resume from it: events between the two are not lost", async () => {
  const clock = new FakeClock();
  const server = new FakeServer(clock);
  server.notify("one");
  const client = fakeClient(createClient, server, clock);
  await client.start();
  assert.equal(client.state.notifications.unread, 1);
  server.notify("two"); // committed after the snapshot, before the socket
  server.notify("three");
  await clock.advance(50);
  assert.equal(client.status, "online");
  assert.equal(client.state.notifications.unread, 3);
  assert.equal(client.pushState.seq, 3);
  const resume = server.sockets[0].sent.find((f) => f.action === "session.resume");
  assert.deepEqual(resume.payload, { epoch: "ep1", lastSeq: 1 });
  assert.equal(client.stats.resumes, 1);
});

test("live events apply in order; a repeated envelope is dropped", async () => {
  const { clock, server, client } = await online();
  const seen = [];
  client.on("notification.new", (e) => seen.push(e.seq));
  const a = server.notify();
  server.sockets[0]._deliver(a, a);
  await clock.advance(10);
  assert.deepEqual(seen, [2]);
  assert.equal(client.stats.duplicates, 2, "the live copy and the repeat after it");
  assert.equal(client.state.notifications.unread, 2);
});

test("a seq gap on a live connection triggers a resume that fills it", async () => {
  const { clock, server, client } = await online();
  const seen = [];
  client.on("notification.new", (e) => seen.push(e.seq));
  const socket = server.sockets[0];
  socket.holdLive = true;
  server.notify("lost on the way");
  socket.holdLive = false;
  server.notify("arrives");
  await clock.advance(20);
  assert.equal(client.stats.gaps, 1);
  assert.deepEqual(seen, [2, 3]);
  assert.equal(client.state.notifications.unread, 3);
  assert.equal(socket.sent.filter((f) => f.action === "session.resume").length, 2);
  assert.equal(server.opened, 1, "filled on the same socket");
});

test("a resume whose replay misses events asks again from where the client is", async () => {
  const { clock, server, client } = await online();
  server.kill();
  server.notify("x");
  server.notify("y");
  await clock.advance(2);
  const next = () => server.sockets.at(-1);
  await clock.advance(600);
  assert.equal(server.opened, 2);
  assert.equal(client.status, "online");
  assert.equal(client.pushState.seq, 3);
  // replay that drops an event: the client notices toSeq is ahead and resumes again
  const socket = next();
  socket.dropSeqs = [4];
  socket.holdLive = true;
  server.notify("z");
  server.notify("w");
  socket.holdLive = false;
  socket._deliver({ v: 1, id: "evt_x", type: "notification.new", seq: 9, sentAt: new Date(clock.now()).toISOString(), payload: { notification: { id: "n9" }, unreadCount: 9 } });
  await clock.advance(5);
  socket.dropSeqs = [];
  await clock.advance(20);
  assert.ok(client.stats.gaps >= 1);
  assert.equal(client.pushState.seq, 5);
  assert.equal(client.state.notifications.unread, 5);
});

test("session.reset (history gone): a fresh snapshot, then the stream from its cursor", async () => {
  const { clock, server, client } = await online();
  server.kill();
  server.newEpoch();
  server.unread = 7;
  server.notify("in the new epoch");
  await clock.advance(600);
  assert.equal(client.status, "online");
  assert.equal(client.stats.resets, 1);
  assert.equal(client.stats.snapshots, 2);
  assert.equal(client.pushState.epoch, "ep2");
  assert.equal(client.state.notifications.unread, 8);
  server.notify("after the reset");
  await clock.advance(10);
  assert.equal(client.state.notifications.unread, 9);
  assert.equal(client.pushState.seq, 2);
});

test("a dropped connection resumes with every message once and in order", async () => {
  const { clock, server, client } = await online();
  client.loadMessages("c1");
  await clock.advance(5);
  const delivered = [];
  client.on("chat.message", (e) => delivered.push(e.payload.message.body));
  server.message("m1");
  await clock.advance(5);
  server.kill();
  server.down = true;
  for (const body of ["m2", "m3", "m4"]) server.message(body);
  await clock.advance(3000);
  assert.notEqual(client.status, "online");
  server.down = false;
  await clock.advance(20_000);
  assert.equal(client.status, "online");
  server.message("m5");
  await clock.advance(10);
  assert.deepEqual(delivered, ["m1", "m2", "m3", "m4", "m5"]);
  assert.deepEqual(client.state.chat.messages.c1.map((m) => m.body), ["m1", "m2", "m3", "m4", "m5"]);
  assert.equal(client.state.chat.totalUnread, 5);
});

test("system.reconnect: the client waits the server's delay before reconnecting", async () => {
  const { clock, server, client } = await online();
  const socket = server.sockets[0];
  socket._deliver({ v: 1, id: "evt_rc", type: "system.reconnect", sentAt: "t", payload: { retryAfterMs: 4000, reason: "shutdown" } });
  await clock.advance(5);
  socket._serverClose(1012, "restart");
  await clock.advance(3900);
  assert.equal(server.opened, 1);
  assert.equal(client.status, "reconnecting");
  await clock.advance(200);
  assert.equal(server.opened, 2);
  assert.equal(client.status, "online");
});

test("the token is refreshed before it expires, on the same socket", async () => {
  const { clock, server, client } = await online({ ttlS: 10 });
  await clock.advance(60_000);
  assert.equal(server.opened, 1, "one socket all along");
  assert.equal(server.sockets[0].readyState, 1);
  assert.ok(server.refreshes.length >= 6, `${server.refreshes.length} refreshes`);
  assert.equal(client.stats.refreshes, server.refreshes.length);
  assert.equal(client.status, "online");
  assert.deepEqual(server.refreshes, client.tokens.slice(1, server.refreshes.length + 1));
});

test("a refused refresh replaces the socket with one opened on a fresh token", async () => {
  const { clock, server, client } = await online({ ttlS: 10 });
  server.sockets[0].refuseRefresh = true;
  await clock.advance(8_100);
  assert.equal(server.opened, 2);
  assert.equal(client.status, "online");
  assert.equal(server.sockets[1].readyState, 1);
});

test("TOKEN_EXPIRED and 4001: reconnect at once with a fresh token", async () => {
  const { clock, server, client } = await online();
  const tokens = client.tokens.length;
  const socket = server.sockets[0];
  socket._deliver({ v: 1, id: "evt_te", type: "error", sentAt: "t", payload: { code: "TOKEN_EXPIRED", message: "expired" } });
  await clock.advance(2);
  socket._serverClose(4001, "token expired");
  await clock.advance(10);
  assert.equal(server.opened, 2, "no backoff for an expired token");
  assert.equal(client.tokens.length, tokens + 1);
  assert.equal(client.status, "online");
});

test("UNAUTHORIZED on an action: a fresh token with auth.refresh, then the action again", async () => {
  const { clock, server, client } = await online();
  server.sockets[0].unauthorizedOnce = true;
  const sent = client.sendMessage("c1", "after a refresh");
  await clock.advance(20);
  const message = await sent;
  assert.equal(message.body, "after a refresh");
  assert.equal(server.refreshes.length, 1);
  assert.equal(server.messages.filter((m) => m.body === "after a refresh").length, 1);
  assert.equal(server.opened, 1);
});

test("offline queue: chat.send waits for the connection, then goes once, in order", async () => {
  const { clock, server, client } = await online();
  server.kill();
  server.down = true;
  await clock.advance(5);
  const sends = ["first", "second", "third"].map((body) => client.sendMessage("c1", body));
  await clock.advance(10);
  assert.deepEqual(client.state.chat.pending.c1.map((m) => m.body), ["first", "second", "third"]);
  server.down = false;
  await clock.advance(20_000);
  const messages = await Promise.all(sends);
  assert.deepEqual(messages.map((m) => m.body), ["first", "second", "third"]);
  assert.deepEqual(server.messages.map((m) => m.body), ["first", "second", "third"]);
  assert.deepEqual(client.state.chat.pending.c1 || [], []);
  assert.deepEqual(client.state.chat.messages.c1.map((m) => m.body), ["first", "second", "third"]);
});

test("an ambiguous send (the socket died before the ack) is posted once: same clientMessageId", async () => {
  const { clock, server, client } = await online();
  const socket = server.sockets[0];
  const send = client.sendMessage("c1", "exactly once", { clientMessageId: "cm-fixed" });
  await clock.advance(0);
  socket.readyState = 3; // the ack never arrives
  socket.onclose({ code: 1006, reason: "" });
  await clock.advance(20_000);
  assert.equal((await send).clientMessageId, "cm-fixed");
  assert.equal(server.messages.filter((m) => m.clientMessageId === "cm-fixed").length, 1);
});

test("after 5 failed reconnects the client polls and shows the same counts; push comes back", async () => {
  const { clock, server, client } = await online({}, { stages: FAST_POLLS });
  const statuses = [];
  client.on("status", (s) => statuses.push(s));
  server.wsDown = true;
  server.kill();
  await clock.advance(60_000);
  assert.equal(client.status, "polling");
  assert.deepEqual(statuses.slice(0, 2), ["reconnecting", "polling"]);
  assert.equal(client.machine.failures >= 5, true);
  server.notify("while push is down");
  server.message("chat while push is down");
  await clock.advance(2100);
  assert.equal(client.state.notifications.unread, server.unread);
  assert.equal(client.state.chat.totalUnread, 1);
  assert.equal(client.plan.notification.render, "poll");
  const sent = client.sendMessage("c1", "over graphql");
  await clock.advance(10);
  assert.equal((await sent).body, "over graphql");
  server.wsDown = false;
  await clock.advance(40_000);
  assert.equal(client.status, "online");
  assert.equal(client.pushState.seq, server.seq, "the resume caught up");
  assert.equal(client.plan.notification.render, "push");
  assert.equal(client.state.notifications.unread, server.unread);
});

test("hybrid: polls only while disconnected, and stops after the catch-up", async () => {
  const { clock, server, client } = await online({ hybrid: true }, { stages: { ...FAST_POLLS, follow: { stage: "LIVE", pollIntervalMs: 2000 } } });
  const before = graphqlRequests(server);
  await clock.advance(30_000);
  assert.equal(graphqlRequests(server), before, "no polling while push is up");
  server.wsDown = true;
  server.kill();
  await clock.advance(100);
  assert.equal(client.status, "reconnecting");
  server.notify("seen by polling");
  await clock.advance(2100);
  assert.ok(graphqlRequests(server) > before, "polling as soon as push is down");
  assert.equal(client.state.notifications.unread, server.unread);
  server.wsDown = false;
  await clock.advance(40_000);
  assert.equal(client.status, "online");
  assert.equal(client.pushState.seq, server.seq);
  const after = graphqlRequests(server);
  await clock.advance(30_000);
  assert.equal(graphqlRequests(server), after, "polling stopped once push was back");
});

test("parity beacons: a poll compared with push at the same cursor, at the server's rate", async () => {
  const { clock, server, client } = await online({}, { stages: FAST_POLLS, sampleRate: 1, maxPerMinute: 6 });
  await clock.advance(2100);
  assert.equal(server.beacons.length, 1);
  const beacon = server.beacons[0];
  assert.equal(beacon.userId, "alice");
  assert.deepEqual(beacon.cursor, { epoch: "ep1", seq: server.seq });
  const outcomes = Object.fromEntries(beacon.samples.map((s) => [s.domain, s.outcome]));
  assert.deepEqual(outcomes, { notification: "match", chat: "match", follow: "match" });
  assert.equal(beacon.samples.find((s) => s.domain === "follow").stage, "SHADOW");
  await clock.advance(6000);
  assert.equal(server.beacons.length, 1, "at most maxPerMinute");
  server.skewUnread = 1;
  server.notify("compared");
  await clock.advance(6000);
  const last = server.beacons.at(-1);
  const notification = last.samples.find((s) => s.domain === "notification");
  assert.equal(notification.outcome, "mismatch");
  assert.deepEqual(notification.mismatched, ["notification.unread"]);
  assert.ok(notification.latencyMs.push.length >= 1);
  assert.ok(notification.latencyMs.poll.length >= 1);
  assert.ok(notification.latencyMs.poll[0] >= notification.latencyMs.push[0], "polling shows a change later than push");
});

test("no beacons at a sample rate of 0", async () => {
  const { clock, server } = await online({}, { stages: FAST_POLLS, sampleRate: 0 });
  await clock.advance(20_000);
  assert.equal(server.beacons.length, 0);
});

test("stop closes the socket and every timer", async () => {
  const { clock, server, client } = await online({ ttlS: 10 }, { stages: FAST_POLLS });
  client.stop();
  await clock.advance(10);
  assert.equal(client.status, "offline");
  assert.equal(server.sockets[0].closedBy, "client");
  assert.equal(clock.pending, 0, "no timer left behind");
});
