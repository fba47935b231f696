// One socket per browser: leader election among tabs over a BroadcastChannel
// (a fake one here), followers mirroring the leader, and the hand-over when the
// leading tab closes or dies.
import assert from "node:assert/strict";
import { test } from "node:test";

import { TabLeader, createClient } from "../cutover.js";
import { ChannelHub, FakeClock, FakeServer, fakeClient } from "./fakes.js";

function tabs(clock, hub, ids) {
  return ids.map((id) => {
    const tab = new TabLeader({ channel: new hub.BroadcastChannel("cutover:alice"), id, timers: clock });
    tab.changes = [];
    tab.onChange = (isLeader, leaderId) => tab.changes.push([isLeader, leaderId]);
    return tab;
  });
}

const leaders = (all) => all.filter((t) => t.isLeader).map((t) => t.id);

test("the first tab leads; tabs opened later follow it", async () => {
  const clock = new FakeClock();
  const hub = new ChannelHub(clock);
  const [a, b, c] = tabs(clock, hub, ["t1", "t2", "t3"]);
  a.start();
  await clock.advance(1000);
  assert.deepEqual(leaders([a]), ["t1"]);
  c.start();
  b.start();
  await clock.advance(1000);
  assert.deepEqual(leaders([a, b, c]), ["t1"]);
  assert.equal(b.leaderId, "t1");
  assert.equal(c.leaderId, "t1");
  await clock.advance(30_000);
  assert.deepEqual(leaders([a, b, c]), ["t1"], "heartbeats keep the followers");
  assert.deepEqual(c.changes, [[false, "t1"]]);
});

test("tabs started together elect exactly one leader, the smallest id", async () => {
  const clock = new FakeClock();
  const hub = new ChannelHub(clock);
  const all = tabs(clock, hub, ["t5", "t3", "t9", "t4"]);
  for (const tab of all) tab.start();
  await clock.advance(5000);
  assert.deepEqual(leaders(all), ["t3"]);
  for (const tab of all) assert.equal(tab.leaderId, "t3");
});

test("a closing leader says bye and a follower takes over at once", async () => {
  const clock = new FakeClock();
  const hub = new ChannelHub(clock);
  const [a, b, c] = tabs(clock, hub, ["t1", "t2", "t3"]);
  a.start();
  await clock.advance(1000);
  b.start();
  c.start();
  await clock.advance(1000);
  a.stop();
  await clock.advance(400);
  assert.deepEqual(leaders([b, c]), ["t2"], "within one election round");
  assert.equal(c.leaderId, "t2");
});

test("a leader that dies without a word is replaced after the heartbeat timeout", async () => {
  const clock = new FakeClock();
  const hub = new ChannelHub(clock);
  const [a, b] = tabs(clock, hub, ["t1", "t2"]);
  a.start();
  await clock.advance(1000);
  b.start();
  await clock.advance(1000);
  a.channel.close(); // the tab crashed: no bye, no more beats
  a.stopped = true;
  await clock.advance(3000);
  assert.equal(b.isLeader, false, "not before the timeout");
  await clock.advance(1000);
  assert.equal(b.isLeader, true);
});

test("two leaders (a partition healed) settle on the smaller id", async () => {
  const clock = new FakeClock();
  const hub = new ChannelHub(clock);
  const [a, b] = tabs(clock, hub, ["t1", "t2"]);
  a.stopped = false;
  b.stopped = false;
  a._lead();
  b._lead();
  await clock.advance(2000);
  assert.deepEqual(leaders([a, b]), ["t1"]);
});

async function twoTabs(options = {}) {
  const clock = new FakeClock();
  const server = new FakeServer(clock);
  const hub = new ChannelHub(clock);
  const open = () => fakeClient(createClient, server, clock, { BroadcastChannel: hub.BroadcastChannel, ...options });
  const first = open();
  await Promise.all([first.start(), clock.advance(1000)]);
  const second = open();
  await Promise.all([second.start(), clock.advance(1000)]);
  await clock.advance(100);
  return { clock, server, first, second };
}

test("two tabs of one user share one socket; the follower mirrors the state and events", async () => {
  const { clock, server, first, second } = await twoTabs();
  assert.equal(first.isLeader, true);
  assert.equal(second.isLeader, false);
  assert.equal(server.opened, 1);
  assert.equal(server.open.length, 1);
  const seen = [];
  second.on("notification.new", (e) => seen.push(e.seq));
  server.notify("to both tabs");
  await clock.advance(50);
  assert.deepEqual(seen, [1]);
  assert.equal(second.state.notifications.unread, 1);
  assert.equal(second.status, "online");
  const message = second.sendMessage("c1", "from the second tab");
  await clock.advance(50);
  assert.equal((await message).body, "from the second tab");
  assert.equal(server.messages.length, 1);
  assert.equal(server.opened, 1, "still one socket");
});

test("closing the leading tab hands the socket over: one socket, resumed, nothing lost", async () => {
  const { clock, server, first, second } = await twoTabs();
  server.notify("before");
  await clock.advance(50);
  first.stop();
  server.notify("during the hand-over");
  await clock.advance(1000);
  assert.equal(second.isLeader, true);
  assert.equal(server.open.length, 1);
  assert.equal(server.opened, 2);
  assert.equal(second.stats.snapshots, 1, "the new leader resumed from the mirrored state: no second snapshot");
  const resume = server.sockets.at(-1).sent.find((f) => f.action === "session.resume");
  assert.deepEqual(resume.payload, { epoch: "ep1", lastSeq: 1 });
  assert.equal(second.state.notifications.unread, 2);
  assert.equal(second.status, "online");
});

test("a follower's queued send survives the leader's tab closing", async () => {
  const { clock, server, first, second } = await twoTabs();
  server.kill();
  server.down = true;
  await clock.advance(10);
  const sent = second.sendMessage("c1", "queued in the leader");
  await clock.advance(50);
  assert.equal(second.state.chat.pending.c1.length, 1);
  first.stop();
  await clock.advance(1000);
  server.down = false;
  await clock.advance(20_000);
  assert.equal((await sent).body, "queued in the leader");
  assert.deepEqual(server.messages.map((m) => m.body), ["queued in the leader"]);
});
