// Which path renders each domain, and how often it is polled, from the stages.
import assert from "node:assert/strict";
import { test } from "node:test";

import { normalizeStages, pathPlan } from "../cutover.js";

const stages = normalizeStages([
  { domain: "notification", stage: "OFF", pollIntervalMs: 30000 },
  { domain: "follow", stage: "SHADOW", pollIntervalMs: 15000 },
  { domain: "chat", stage: "LIVE", pollIntervalMs: 5000 },
  { domain: "event", stage: "RAMPDOWN", pollIntervalMs: 300000 },
  { domain: "organization", stage: "COMPLETE", pollIntervalMs: null },
]);

test("online: OFF and SHADOW render the poll at their interval; LIVE and beyond render push", () => {
  const plan = pathPlan(stages, { status: "online" });
  assert.deepEqual(plan.notification, { stage: "OFF", render: "poll", pollEveryMs: 30000, compare: false });
  assert.deepEqual(plan.follow, { stage: "SHADOW", render: "poll", pollEveryMs: 15000, compare: true });
  assert.deepEqual(plan.chat, { stage: "LIVE", render: "push", pollEveryMs: 5000, compare: true });
  assert.deepEqual(plan.event, { stage: "RAMPDOWN", render: "push", pollEveryMs: 300000, compare: true });
  assert.deepEqual(plan.organization, { stage: "COMPLETE", render: "push", pollEveryMs: null, compare: false });
});

test("reconnecting (fewer than 5 failures): push still renders, nothing is compared", () => {
  const plan = pathPlan(stages, { status: "reconnecting" });
  assert.equal(plan.chat.render, "push");
  assert.equal(plan.chat.compare, false);
  assert.equal(plan.follow.render, "poll");
  assert.equal(plan.follow.compare, false);
});

test("polling fallback: every domain renders the poll; COMPLETE polls at the fallback interval", () => {
  const plan = pathPlan(stages, { status: "polling", fallbackIntervalMs: 7000 });
  for (const step of Object.values(plan)) {
    assert.equal(step.render, "poll");
    assert.equal(step.compare, false);
  }
  assert.equal(plan.chat.pollEveryMs, 5000);
  assert.equal(plan.organization.pollEveryMs, 7000);
});

test("hybrid: no polling of push-rendered domains while push is up, polling as soon as it is down", () => {
  const up = pathPlan(stages, { status: "online", hybrid: true });
  assert.equal(up.chat.pollEveryMs, null);
  assert.equal(up.event.pollEveryMs, null);
  assert.equal(up.follow.pollEveryMs, 15000, "SHADOW keeps polling: polling is what it renders");
  const down = pathPlan(stages, { status: "reconnecting", hybrid: true });
  assert.equal(down.chat.render, "poll");
  assert.equal(down.chat.pollEveryMs, 5000);
  const back = pathPlan(stages, { status: "online", hybrid: true });
  assert.deepEqual(back, up);
});

test("offline: nothing is polled", () => {
  const plan = pathPlan(stages, { status: "offline" });
  for (const step of Object.values(plan)) assert.equal(step.pollEveryMs, null);
});

test("the welcome's object and realtimeConfig's list give the same stages", () => {
  const fromWelcome = normalizeStages({ chat: { stage: "LIVE", pollIntervalMs: 5000 } });
  assert.deepEqual(fromWelcome, { chat: { stage: "LIVE", pollIntervalMs: 5000 } });
});
