// Reconnecting without a storm: exponential backoff with full jitter, the
// server's reconnect hint, and the connection's state machine.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ConnectionMachine, backoffDelay, refreshDelayMs } from "../cutover.js";

function seeded(seed = 7) {
  let x = seed;
  return () => {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    return x / 2 ** 31;
  };
}

test("full jitter: every delay is uniform in [0, min(max, base * 2^attempt))", () => {
  const random = seeded();
  for (let attempt = 0; attempt < 12; attempt++) {
    const cap = Math.min(30_000, 500 * 2 ** attempt);
    const delays = Array.from({ length: 2000 }, () => backoffDelay(attempt, { random }));
    assert.ok(Math.min(...delays) >= 0);
    assert.ok(Math.max(...delays) < cap, `attempt ${attempt}: ${Math.max(...delays)} >= ${cap}`);
    const mean = delays.reduce((a, b) => a + b, 0) / delays.length;
    assert.ok(Math.abs(mean - cap / 2) < cap * 0.05, `attempt ${attempt}: mean ${mean}, cap ${cap}`);
    // spread over the whole range, not bunched at the cap (a storm) or at zero
    assert.ok(delays.filter((d) => d < cap / 4).length > 300);
    assert.ok(delays.filter((d) => d > (3 * cap) / 4).length > 300);
  }
});

test("the cap holds for large attempts and custom bases", () => {
  assert.equal(backoffDelay(50, { random: () => 0.999999 }), 29_999);
  assert.equal(backoffDelay(3, { baseMs: 100, maxMs: 1000, random: () => 0.5 }), 400);
  assert.equal(backoffDelay(10, { baseMs: 100, maxMs: 1000, random: () => 0.5 }), 500);
  assert.equal(backoffDelay(0, { random: () => 0 }), 0);
});

test("a thousand clients dropped together spread their first reconnect over the window", () => {
  const random = seeded(42);
  const machines = Array.from({ length: 1000 }, () => {
    const m = new ConnectionMachine();
    m.start();
    m.synced();
    m.dropped();
    return m.nextDelay(random);
  });
  const buckets = [0, 0, 0, 0, 0];
  for (const delay of machines) buckets[Math.floor(delay / 100)] += 1;
  assert.ok(machines.every((d) => d >= 0 && d < 500));
  for (const count of buckets) assert.ok(count > 150 && count < 250, `uneven: ${buckets}`);
});

test("system.reconnect's delay is used as is for the next attempt, once", () => {
  const m = new ConnectionMachine();
  m.start();
  m.synced();
  m.serverReconnect(7_321);
  m.dropped();
  assert.equal(m.nextDelay(() => 0.5), 7_321);
  assert.equal(m.status, "reconnecting");
  assert.ok(m.nextDelay(() => 0.5) < 500, "then backoff again");
});

test("status: connecting, online, reconnecting, polling after 5 failed reconnects, online again", () => {
  const m = new ConnectionMachine({ fallbackAfter: 5 });
  assert.equal(m.start(), "connecting");
  assert.equal(m.failed(), "connecting");
  assert.equal(m.synced(), "online");
  assert.equal(m.dropped(), "reconnecting");
  for (let i = 1; i < 5; i++) assert.equal(m.failed(), "reconnecting", `failure ${i}`);
  assert.equal(m.failed(), "polling");
  assert.equal(m.failed(), "polling");
  const delays = [1, 2, 3].map(() => m.nextDelay(() => 0.999));
  assert.ok(delays.every((d) => d > 8_000), `backoff keeps growing while polling: ${delays}`);
  assert.equal(m.synced(), "online");
  assert.equal(m.failures, 0);
  assert.equal(m.dropped(), "reconnecting", "a new outage counts its failures from zero");
});

test("a client that never connected falls back to polling too", () => {
  const m = new ConnectionMachine({ fallbackAfter: 3 });
  m.start();
  m.failed();
  m.failed();
  assert.equal(m.failed(), "polling");
});

test("offline pauses everything; back online retries at once", () => {
  const m = new ConnectionMachine();
  m.start();
  m.synced();
  assert.equal(m.networkDown(), "offline");
  assert.equal(m.failed(), "offline", "failures while offline do not change the status");
  assert.equal(m.networkUp(), "reconnecting");
  assert.equal(m.nextDelay(), 0);
});

test("a token is refreshed a fifth of its life before it expires (1 s to 60 s)", () => {
  const now = 1_000_000;
  assert.equal(refreshDelayMs(now / 1000 + 10, now), 8_000);
  assert.equal(refreshDelayMs(now / 1000 + 3600, now), 3_540_000);
  assert.equal(refreshDelayMs(now / 1000 + 3, now), 2_000);
  assert.equal(refreshDelayMs(now / 1000 - 5, now), 0);
});
