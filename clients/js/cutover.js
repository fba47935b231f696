// Cutover browser SDK: one dependency-free ES module (types in cutover.d.ts).
//
// It speaks both paths of the wire contract (docs/PROTOCOL.md): the GraphQL
// polling API and the WebSocket push gateway. A client
//
// - takes a GraphQL snapshot at `realtimeCursor`, then resumes the push stream
//   from that cursor, so nothing falls between snapshot and stream;
// - reduces durable and ephemeral events into a state store (unread counts,
//   conversations, pending follow requests, RSVP counters, presence);
// - reconnects with exponential backoff and full jitter (honouring
//   `system.reconnect`), resumes from the last `seq`, deduplicates on envelope
//   `id`, resumes again on a `seq` gap and refetches its snapshot on
//   `session.reset`;
// - refreshes its token before it expires (`auth.refresh`, same socket) and on
//   `UNAUTHORIZED`; reconnects with a fresh ticket after `TOKEN_EXPIRED` / 4001;
// - chooses a path per domain from the rollout stages (OFF/SHADOW render the
//   poll, LIVE and beyond render push), falls back to polling after 5 failed
//   reconnects, or, in hybrid mode, polls only while disconnected;
// - queues `chat.send` while offline (idempotent by `clientMessageId`);
// - shares one socket between the tabs of a browser (leader election over
//   BroadcastChannel, hand-over when the leader's tab closes);
// - sends parity beacons: at the server's sample rate it compares its
//   push-reduced state with a poll made at the same cursor and reports, per
//   domain, match or mismatch and how soon each path showed each change.
//
// The pure parts (backoff, dedupe, stream cursor, reducer, parity keys, path
// plan, connection state machine, tab election) are exported for tests and for
// apps that want them alone.

export const PROTOCOL_VERSION = 1;
export const DOMAINS = Object.freeze([
  "notification", "chat", "follow", "event", "organization", "activity", "presence",
]);
/** The domains the parity comparison covers (the harness's state model). */
export const PARITY_DOMAINS = Object.freeze(["notification", "chat", "follow", "event"]);
export const STAGES = Object.freeze(["OFF", "SHADOW", "LIVE", "RAMPDOWN", "COMPLETE"]);
export const STATUSES = Object.freeze(["connecting", "online", "reconnecting", "polling", "offline"]);

const SAMPLED_STAGES = new Set(["SHADOW", "LIVE", "RAMPDOWN"]);
const PUSH_RENDERED_STAGES = new Set(["LIVE", "RAMPDOWN", "COMPLETE"]);
const PERMANENT_CODES = new Set([
  "BAD_REQUEST", "FORBIDDEN", "NOT_FOUND", "CONFLICT", "UNKNOWN_ACTION", "UNSUPPORTED_VERSION",
]);
const EVENT_PREFIXES = [
  ["notification.", "notification"], ["chat.", "chat"], ["follow.", "follow"],
  ["event.", "event"], ["organization.", "organization"], ["activity.", "activity"],
  ["user.presence.", "presence"],
];
const MAX_MESSAGES = 200;
const MAX_ITEMS = 20;

// -- errors ------------------------------------------------------------------

/** A refusal by the server (`code` from the contract) or a failure of the client. */
export class CutoverError extends Error {
  constructor(code, message, extra = {}) {
    super(message || code);
    this.name = "CutoverError";
    this.code = code;
    if (extra.status !== undefined) this.status = extra.status;
    if (extra.retryAfterMs !== undefined) this.retryAfterMs = extra.retryAfterMs;
    if (extra.path !== undefined) this.path = extra.path;
  }

  /** Whether trying the same thing again cannot succeed. */
  get permanent() {
    return PERMANENT_CODES.has(this.code);
  }
}

// -- small helpers ---------------------------------------------------------------

/** The rollout domain of an event type (`chat.read` -> `chat`), or null. */
export function domainOf(type) {
  for (const [prefix, domain] of EVENT_PREFIXES) {
    if (typeof type === "string" && type.startsWith(prefix)) return domain;
  }
  return null;
}

function clamp(value, low, high) {
  return Math.min(high, Math.max(low, value));
}

function sameValue(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

function randomId(random = Math.random) {
  let text = "";
  for (let i = 0; i < 12; i++) text += Math.floor(random() * 36).toString(36);
  return text;
}

/** The claims of a JWT (not verified: the server does that), or null. */
export function decodeToken(token) {
  try {
    let part = String(token).split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    while (part.length % 4) part += "=";
    const binary = atob(part);
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

/** When to refresh a token that expires at `expSeconds`: a fifth of its remaining
 * life before (between 1 s and 60 s before), never in the past. */
export function refreshDelayMs(expSeconds, nowMs) {
  const remaining = expSeconds * 1000 - nowMs;
  const margin = clamp(remaining * 0.2, 1000, 60_000);
  return Math.max(0, remaining - margin);
}

// -- backoff -----------------------------------------------------------------

/** Exponential backoff with full jitter: a uniform delay in [0, min(max, base * 2^attempt)). */
export function backoffDelay(attempt, { baseMs = 500, maxMs = 30_000, random = Math.random } = {}) {
  const cap = Math.min(maxMs, baseMs * 2 ** Math.min(Math.max(0, attempt), 30));
  return Math.floor(random() * cap);
}

// -- dedupe and the stream position ------------------------------------------------

/** Remembers the last `size` envelope ids; `seen(id)` is true for a repeat. */
export class Deduper {
  constructor(size = 4096) {
    this.size = size;
    this.ids = new Set();
    this.order = [];
  }

  seen(id) {
    if (id === undefined || id === null) return false;
    if (this.ids.has(id)) return true;
    this.ids.add(id);
    this.order.push(id);
    if (this.order.length > this.size) this.ids.delete(this.order.shift());
    return false;
  }
}

/**
 * Where the client is in its user's stream, and what to do with each envelope:
 * `apply` (the next seq), `duplicate` (seq already applied), `early` (ahead of a
 * resume in flight: the replay brings it), `gap` (a seq is missing: resume) or
 * `ephemeral` (no seq).
 */
export class StreamCursor {
  constructor(epoch = null, seq = null) {
    this.epoch = epoch;
    this.seq = seq;
    this.resuming = null; // the id of the `session.resume` awaiting its reply
  }

  classify(envelope) {
    const seq = envelope.seq;
    if (typeof seq !== "number") return "ephemeral";
    if (this.seq === null) return "early";
    if (seq <= this.seq) return "duplicate";
    if (seq === this.seq + 1) return "apply";
    return this.resuming !== null ? "early" : "gap";
  }

  advance(seq) {
    this.seq = seq;
  }
}

// -- the state store -----------------------------------------------------------------

/** The state of a user before any snapshot: `null` means "not held yet". */
export function emptyState(userId = null) {
  return {
    userId,
    epoch: null,
    seq: null,
    notifications: { unread: null, items: [] },
    chat: { totalUnread: null, conversations: {}, messages: {}, typing: {}, pending: {} },
    follow: { pending: null, sent: {} },
    events: {},
    presence: {},
    feed: [],
    announcements: [],
    notices: [],
  };
}

const CONVERSATION_FIELDS =
  "id participantIds unreadCount lastReadMessageId updatedAt " +
  "lastMessage { id conversationId senderId body createdAt clientMessageId deliveredTo readBy }";
const EVENT_FIELDS =
  "id title hostId startsAt rsvpCounts { going interested } attendeesPreview checkedInCount " +
  "viewerRsvp viewerSaved";

/**
 * The GraphQL request of a snapshot (or of a poll of some domains): the cursor
 * first, then every state field of those domains. Watched events are aliased
 * `e0`, `e1`, ... (the parity harness reads the same shape).
 */
export function snapshotQuery({
  domains = DOMAINS, watchEvents = [], watchPresence = [], conversations = 100, config = true,
} = {}) {
  const want = new Set(domains);
  const fields = ["realtimeCursor { epoch seq }"];
  const params = [];
  const variables = {};
  if (config) {
    fields.push("me { id name }");
    fields.push("realtimeConfig { websocketUrl domains { domain stage pollIntervalMs } }");
  }
  if (want.has("notification")) {
    fields.push("unreadNotificationCount");
    fields.push("notifications(first: 10) { items { id kind text data createdAt readAt } }");
  }
  if (want.has("chat")) {
    fields.push("chatUnreadCount");
    fields.push(`conversations(first: ${conversations}) { ${CONVERSATION_FIELDS} }`);
  }
  if (want.has("follow")) {
    fields.push("followRequests { id fromUserId toUserId status createdAt updatedAt }");
  }
  if (want.has("event")) {
    watchEvents.forEach((eventId, i) => {
      params.push(`$e${i}: ID!`);
      variables[`e${i}`] = eventId;
      fields.push(`e${i}: event(id: $e${i}) { ${EVENT_FIELDS} }`);
    });
  }
  if (want.has("presence") && watchPresence.length) {
    params.push("$presenceOf: [ID!]!");
    variables.presenceOf = [...watchPresence];
    fields.push("presence(userIds: $presenceOf) { userId status lastSeenAt }");
  }
  const head = params.length ? `query CutoverState(${params.join(", ")})` : "query CutoverState";
  return { query: `${head} { ${fields.join(" ")} }`, variables };
}

function eventEntry(event, previous = {}) {
  const counts = [Number(event.rsvpCounts.going), Number(event.rsvpCounts.interested)];
  return {
    ...previous,
    id: event.id,
    title: event.title ?? previous.title,
    hostId: event.hostId ?? previous.hostId,
    startsAt: event.startsAt ?? previous.startsAt,
    going: counts[0],
    interested: counts[1],
    checkedIn: event.checkedInCount ?? previous.checkedIn ?? 0,
    attendeesPreview: event.attendeesPreview ?? previous.attendeesPreview ?? [],
    viewerRsvp: event.viewerRsvp ?? previous.viewerRsvp ?? null,
    viewerSaved: event.viewerSaved ?? previous.viewerSaved ?? false,
    counts, // the RSVP counts as of the state's seq (durable events only): what parity compares
  };
}

/**
 * The state after a GraphQL snapshot (`data` of `snapshotQuery`): every domain
 * the data holds is replaced, the others are kept; `epoch`/`seq` become the
 * snapshot's cursor.
 */
export function applySnapshot(state, data, { watchEvents = [] } = {}) {
  const next = { ...state };
  if (data.realtimeCursor) {
    next.epoch = String(data.realtimeCursor.epoch);
    next.seq = Number(data.realtimeCursor.seq);
  }
  if (data.me && data.me.id) next.userId = data.me.id;
  if ("unreadNotificationCount" in data) {
    const items = data.notifications ? data.notifications.items : state.notifications.items;
    next.notifications = { unread: Number(data.unreadNotificationCount), items: [...items] };
  }
  if ("chatUnreadCount" in data) {
    const conversations = {};
    for (const conv of data.conversations || []) conversations[conv.id] = { ...conv };
    next.chat = { ...state.chat, totalUnread: Number(data.chatUnreadCount), conversations };
  }
  if ("followRequests" in data) {
    const pending = {};
    for (const request of data.followRequests || []) pending[request.id] = { ...request };
    next.follow = { ...state.follow, pending };
  }
  const aliased = watchEvents.map((_, i) => `e${i}`).filter((alias) => alias in data);
  if (aliased.length) {
    next.events = { ...state.events };
    watchEvents.forEach((eventId, i) => {
      if (!(`e${i}` in data)) return;
      const event = data[`e${i}`];
      if (event) next.events[eventId] = eventEntry(event, state.events[eventId]);
      else delete next.events[eventId];
    });
  }
  if (Array.isArray(data.presence)) {
    next.presence = { ...state.presence };
    for (const p of data.presence) next.presence[p.userId] = { status: p.status, lastSeenAt: p.lastSeenAt };
  }
  return next;
}

function union(a, b) {
  return [...new Set([...(a || []), ...(b || [])])];
}

/**
 * A conversation's messages with one added or updated. Messages stay in the order
 * they arrived in (the stream's commit order, or the order of a `messages` poll)
 * sorted by `createdAt` only: two messages of the same millisecond keep the
 * server's order. Receipts only grow, so a replayed event never takes one back.
 */
function withMessage(list, message) {
  const current = list || [];
  const at = current.findIndex((m) => m.id === message.id);
  if (at >= 0) {
    const out = current.slice();
    const old = current[at];
    out[at] = { ...old, ...message, deliveredTo: union(old.deliveredTo, message.deliveredTo), readBy: union(old.readBy, message.readBy) };
    return out;
  }
  let i = current.length;
  while (i > 0 && current[i - 1].createdAt > message.createdAt) i -= 1;
  const out = [...current.slice(0, i), message, ...current.slice(i)];
  return out.length > MAX_MESSAGES ? out.slice(out.length - MAX_MESSAGES) : out;
}

/** Messages merged into a conversation's list (by id, in time order). */
export function mergeMessages(list, messages) {
  let out = list || [];
  for (const message of messages) out = withMessage(out, message);
  return out;
}

function patchMessages(state, conversationId, patch) {
  const list = state.chat.messages[conversationId];
  if (!list) return state;
  return {
    ...state,
    chat: { ...state.chat, messages: { ...state.chat.messages, [conversationId]: list.map(patch) } },
  };
}

function addUnique(list, value) {
  return list.includes(value) ? list : [...list, value];
}

/**
 * The state after one envelope. Durable payloads carry absolute values, so the
 * reduction is the same whether an event is seen live or replayed; the caller
 * decides which envelopes to apply (dedupe, seq order). `state.seq` follows the
 * durable events applied.
 */
export function reduce(state, envelope) {
  const type = envelope.type;
  const p = envelope.payload || {};
  let next = state;
  switch (type) {
    case "notification.new": {
      if (state.notifications.unread === null) break;
      const items = [p.notification, ...state.notifications.items.filter((n) => n.id !== p.notification.id)];
      next = { ...state, notifications: { unread: Number(p.unreadCount), items: items.slice(0, MAX_ITEMS) } };
      break;
    }
    case "notification.read": {
      if (state.notifications.unread === null) break;
      const ids = new Set(p.ids || []);
      const items = state.notifications.items.map((n) =>
        (p.all || ids.has(n.id)) && !n.readAt ? { ...n, readAt: envelope.sentAt || true } : n);
      next = { ...state, notifications: { unread: Number(p.unreadCount), items } };
      break;
    }
    case "chat.message": {
      const message = p.message;
      const convId = message.conversationId;
      const chat = { ...state.chat, messages: { ...state.chat.messages } };
      chat.messages[convId] = withMessage(chat.messages[convId], message);
      const conv = state.chat.conversations[convId];
      if (conv) chat.conversations = { ...chat.conversations, [convId]: { ...conv, lastMessage: message } };
      const typing = chat.typing[convId];
      if (typing && typing.includes(message.senderId)) {
        chat.typing = { ...chat.typing, [convId]: typing.filter((u) => u !== message.senderId) };
      }
      const pending = chat.pending[convId];
      if (pending && message.clientMessageId) {
        chat.pending = { ...chat.pending, [convId]: pending.filter((m) => m.clientMessageId !== message.clientMessageId) };
      }
      next = { ...state, chat };
      break;
    }
    case "chat.conversation.updated": {
      if (state.chat.totalUnread === null) break;
      const conv = p.conversation;
      next = {
        ...state,
        chat: {
          ...state.chat,
          totalUnread: Number(p.totalUnread),
          conversations: { ...state.chat.conversations, [conv.id]: { ...conv } },
        },
      };
      break;
    }
    case "chat.read": {
      // Receipts only: the reader's own counts arrive in chat.conversation.updated.
      const list = state.chat.messages[p.conversationId];
      if (!list) break;
      const upTo = list.findIndex((m) => m.id === p.upToMessageId);
      const last = upTo < 0 ? list.length - 1 : upTo;
      next = patchMessages(state, p.conversationId, (m, i) =>
        i <= last && m.senderId !== p.userId ? { ...m, readBy: addUnique(m.readBy || [], p.userId) } : m);
      break;
    }
    case "chat.message.delivered":
      next = patchMessages(state, p.conversationId, (m) =>
        m.id === p.messageId ? { ...m, deliveredTo: addUnique(m.deliveredTo || [], p.userId) } : m);
      break;
    case "chat.typing.started":
    case "chat.typing.stopped": {
      const current = state.chat.typing[p.conversationId] || [];
      const users = type === "chat.typing.started"
        ? addUnique(current, p.userId)
        : current.filter((u) => u !== p.userId);
      next = { ...state, chat: { ...state.chat, typing: { ...state.chat.typing, [p.conversationId]: users } } };
      break;
    }
    case "follow.request.created":
    case "follow.request.updated": {
      const request = p.request;
      const follow = { ...state.follow };
      if (request.fromUserId === state.userId) follow.sent = { ...follow.sent, [request.id]: request };
      if (follow.pending !== null && request.toUserId === state.userId) {
        follow.pending = { ...follow.pending };
        if (request.status === "PENDING") follow.pending[request.id] = request;
        else delete follow.pending[request.id];
      }
      next = { ...state, follow };
      break;
    }
    case "event.rsvp.updated": {
      const eventId = p.rsvp.eventId;
      const entry = state.events[eventId];
      if (!entry) break;
      const counts = [Number(p.counts.going), Number(p.counts.interested)];
      const updated = {
        ...entry, counts, going: counts[0], interested: counts[1],
        attendeesPreview: p.attendeesPreview || entry.attendeesPreview,
      };
      if (p.rsvp.userId === state.userId) updated.viewerRsvp = p.rsvp.status;
      next = { ...state, events: { ...state.events, [eventId]: updated } };
      break;
    }
    case "event.counters.updated": {
      // Ephemeral and latest-value: what the page shows, not what parity compares.
      const entry = state.events[p.eventId];
      if (!entry) break;
      next = {
        ...state,
        events: {
          ...state.events,
          [p.eventId]: { ...entry, going: Number(p.going), interested: Number(p.interested), checkedIn: Number(p.checkedIn) },
        },
      };
      break;
    }
    case "event.saved.updated": {
      const entry = state.events[p.eventId];
      if (!entry) break;
      next = { ...state, events: { ...state.events, [p.eventId]: { ...entry, viewerSaved: Boolean(p.saved) } } };
      break;
    }
    case "user.presence.updated":
      next = { ...state, presence: { ...state.presence, [p.userId]: { status: p.status, lastSeenAt: p.lastSeenAt } } };
      break;
    case "activity.feed.item":
      next = { ...state, feed: [p.item, ...state.feed.filter((i) => i.id !== p.item.id)].slice(0, MAX_ITEMS) };
      break;
    case "organization.announcement":
      next = {
        ...state,
        announcements: [p.announcement, ...state.announcements.filter((a) => a.id !== p.announcement.id)].slice(0, MAX_ITEMS),
      };
      break;
    case "system.notice":
      next = { ...state, notices: [p, ...state.notices].slice(0, 5) };
      break;
    default:
      break; // stream.skipped, replies, unknown types: nothing to reduce
  }
  if (typeof envelope.seq === "number") next = next === state ? { ...state, seq: envelope.seq } : { ...next, seq: envelope.seq };
  return next;
}

/**
 * One domain of a state as flat keys and scalar values: the comparison unit of
 * the parity harness (parity/model.py `flatten`) and of the beacons.
 */
export function parityKeys(state, domain) {
  const out = {};
  if (domain === "notification") {
    if (state.notifications.unread !== null) out["notification.unread"] = state.notifications.unread;
  } else if (domain === "chat") {
    if (state.chat.totalUnread !== null) out["chat.total"] = state.chat.totalUnread;
    for (const id of Object.keys(state.chat.conversations).sort()) {
      const conv = state.chat.conversations[id];
      out[`chat.conv:${id}.unread`] = Number(conv.unreadCount);
      out[`chat.conv:${id}.lastMessage`] = conv.lastMessage ? conv.lastMessage.id : null;
      out[`chat.conv:${id}.lastRead`] = conv.lastReadMessageId ?? null;
    }
  } else if (domain === "follow") {
    if (state.follow.pending !== null) out["follow.pending"] = Object.keys(state.follow.pending).sort();
  } else if (domain === "event") {
    for (const id of Object.keys(state.events).sort()) {
      const entry = state.events[id];
      if (entry.counts) out[`event:${id}.counts`] = [...entry.counts];
    }
  }
  return out;
}

/** Every parity domain's keys in one object. */
export function allParityKeys(state) {
  const out = {};
  for (const domain of PARITY_DOMAINS) Object.assign(out, parityKeys(state, domain));
  return out;
}

/** The keys whose values differ between two flat views (either side missing counts). */
export function diffKeys(left, right) {
  const keys = new Set([...Object.keys(left), ...Object.keys(right)]);
  return [...keys].filter((k) => !(k in left) || !(k in right) || !sameValue(left[k], right[k])).sort();
}

// -- which path each domain takes --------------------------------------------------

/** The welcome's `domains` object or realtimeConfig's list, as `{domain: {stage, pollIntervalMs}}`. */
export function normalizeStages(domains) {
  const out = {};
  if (Array.isArray(domains)) {
    for (const d of domains) out[d.domain] = { stage: d.stage, pollIntervalMs: d.pollIntervalMs ?? null };
  } else if (domains && typeof domains === "object") {
    for (const [name, d] of Object.entries(domains)) out[name] = { stage: d.stage, pollIntervalMs: d.pollIntervalMs ?? null };
  }
  return out;
}

/**
 * Per domain: which path renders it, how often to poll it (null: not at all) and
 * whether the poll is compared with push (parity).
 *
 * - OFF and SHADOW render the poll and poll at the stage's interval (SHADOW's
 *   polls are compared with push while it is up);
 * - LIVE and beyond render push; polling goes on at the stage's interval and is
 *   compared, except in hybrid mode, which does not poll while push is up;
 * - when push is down (status `polling`, or any disconnection in hybrid mode)
 *   they render the poll, at the stage's interval or `fallbackIntervalMs`.
 */
export function pathPlan(stages, { status, hybrid = false, fallbackIntervalMs = 10_000 } = {}) {
  const plan = {};
  const pushUp = status === "online";
  const fallback = !pushUp && status !== "offline" && (hybrid ? status !== "connecting" : status === "polling");
  for (const [domain, { stage, pollIntervalMs }] of Object.entries(stages)) {
    if (!PUSH_RENDERED_STAGES.has(stage)) {
      plan[domain] = {
        stage, render: "poll", pollEveryMs: status === "offline" ? null : (pollIntervalMs ?? fallbackIntervalMs),
        compare: pushUp && stage === "SHADOW",
      };
    } else if (fallback) {
      plan[domain] = { stage, render: "poll", pollEveryMs: pollIntervalMs ?? fallbackIntervalMs, compare: false };
    } else {
      const every = hybrid || status === "offline" ? null : pollIntervalMs ?? null;
      plan[domain] = { stage, render: "push", pollEveryMs: every, compare: pushUp && every !== null && SAMPLED_STAGES.has(stage) };
    }
  }
  return plan;
}

/**
 * The connection's status as a state machine (no timers, no sockets):
 * `connecting` until the first session is up, `online` while it is, then
 * `reconnecting`; `polling` after `fallbackAfter` failed attempts in a row;
 * `offline` while the network is down or the client is stopped.
 */
export class ConnectionMachine {
  constructor({ fallbackAfter = 5, backoff = {} } = {}) {
    this.fallbackAfter = fallbackAfter;
    this.backoff = backoff;
    this.status = "offline";
    this.failures = 0; // failed attempts since the last session was up
    this.attempt = 0; // backoff exponent
    this.everOnline = false;
    this.serverDelayMs = null; // a `system.reconnect` hint for the next attempt
  }

  start() {
    this.failures = 0;
    this.attempt = 0;
    return this._set(this.everOnline ? "reconnecting" : "connecting");
  }

  /** The session is up (welcome received and the resume replied). */
  synced() {
    this.everOnline = true;
    this.failures = 0;
    this.attempt = 0;
    this.serverDelayMs = null;
    return this._set("online");
  }

  /** An attempt failed (no ticket, refused or broken handshake, closed before sync). */
  failed() {
    this.failures += 1;
    this.attempt += 1;
    if (this.status === "offline") return this.status;
    if (this.failures >= this.fallbackAfter) return this._set("polling");
    return this._set(this.everOnline ? "reconnecting" : "connecting");
  }

  /** A live session ended: the first attempt waits a jittered delay (clients cut
   * off together do not come back together). */
  dropped() {
    this.attempt = Math.max(this.attempt, 1);
    if (this.status === "offline") return this.status;
    return this._set(this.status === "polling" ? "polling" : "reconnecting");
  }

  /** The server asked for a reconnect after `retryAfterMs` (graceful shutdown). */
  serverReconnect(retryAfterMs) {
    this.serverDelayMs = Math.max(0, Number(retryAfterMs) || 0);
  }

  networkDown() {
    return this._set("offline");
  }

  networkUp() {
    this.failures = 0;
    this.attempt = 0;
    return this._set(this.everOnline ? "reconnecting" : "connecting");
  }

  stop() {
    return this._set("offline");
  }

  /** How long to wait before the next attempt. */
  nextDelay(random = Math.random) {
    if (this.serverDelayMs !== null) {
      const delay = this.serverDelayMs;
      this.serverDelayMs = null;
      return delay;
    }
    if (this.attempt === 0) return 0;
    return backoffDelay(this.attempt - 1, { ...this.backoff, random });
  }

  _set(status) {
    this.status = status;
    return status;
  }
}

// -- tabs: one socket per browser ------------------------------------------------------

/**
 * Leader election among the tabs of one user over a BroadcastChannel-like
 * channel (`postMessage`, `onmessage`; a tab never receives its own messages).
 *
 * A starting tab says `hello`; a leader answers at once and beats every
 * `heartbeatMs`. A tab that hears no leader within `electionMs` claims; among
 * tabs claiming together the smallest id wins. Followers that miss the beats
 * for `timeoutMs`, or hear the leader's `bye` (its tab closing), claim again:
 * that is the hand-over.
 */
export class TabLeader {
  constructor({
    channel, id, timers, heartbeatMs = 1000, timeoutMs = 3500, electionMs = 300,
    onChange = () => {}, onMessage = () => {},
  }) {
    this.channel = channel;
    this.id = id;
    this.timers = timers;
    this.heartbeatMs = heartbeatMs;
    this.timeoutMs = timeoutMs;
    this.electionMs = electionMs;
    this.onChange = onChange;
    this.onMessage = onMessage;
    this.leaderId = null;
    this.claiming = false;
    this.stopped = true;
    this._timer = null;
    this._beat = null;
    channel.onmessage = (event) => this._receive(event.data);
  }

  get isLeader() {
    return this.leaderId === this.id;
  }

  start() {
    this.stopped = false;
    this._post({ t: "hello" });
    this._after(this.electionMs, () => {
      if (this.leaderId === null) this._claim();
    });
  }

  stop() {
    if (this.stopped) return;
    this.stopped = true;
    if (this.isLeader) this._post({ t: "bye" });
    this._clear();
    if (this._beat !== null) this.timers.clearInterval(this._beat);
    this._beat = null;
    this.channel.onmessage = null;
    if (typeof this.channel.close === "function") this.channel.close();
  }

  /** A message for the other tabs (anything but the election's own). */
  post(message) {
    this.channel.postMessage({ k: "app", from: this.id, m: message });
  }

  _post(message) {
    if (!this.stopped || message.t === "bye") this.channel.postMessage({ k: "election", from: this.id, ...message });
  }

  _receive(data) {
    if (this.stopped || !data || typeof data !== "object") return;
    if (data.k === "app") {
      this.onMessage(data.m, data.from);
      return;
    }
    if (data.k !== "election") return;
    const from = data.from;
    switch (data.t) {
      case "hello":
        if (this.isLeader) this._post({ t: "leader" });
        break;
      case "claim":
        if (this.isLeader) this._post({ t: "leader" });
        else if (this.claiming && from < this.id) this._yield();
        break;
      case "leader":
        if (this.isLeader && from !== this.id) {
          if (from < this.id) this._follow(from); // two leaders: the smaller id stays
          else this._post({ t: "leader" });
        } else if (!this.isLeader) {
          this._follow(from);
        }
        break;
      case "bye":
        if (from === this.leaderId) {
          this._setLeader(null);
          this._claim();
        }
        break;
      default:
        break;
    }
  }

  _claim() {
    if (this.stopped || this.isLeader) return;
    this.claiming = true;
    this._post({ t: "claim" });
    this._after(this.electionMs, () => {
      if (this.claiming) this._lead();
    });
  }

  _yield() {
    this.claiming = false;
    this._after(this.timeoutMs, () => this._claim());
  }

  _follow(leaderId) {
    this.claiming = false;
    if (this._beat !== null) {
      this.timers.clearInterval(this._beat);
      this._beat = null;
    }
    this._setLeader(leaderId);
    this._after(this.timeoutMs, () => {
      this._setLeader(null);
      this._claim();
    });
  }

  _lead() {
    this.claiming = false;
    this._clear();
    this._setLeader(this.id);
    this._post({ t: "leader" });
    this._beat = this.timers.setInterval(() => this._post({ t: "leader" }), this.heartbeatMs);
  }

  _setLeader(leaderId) {
    const was = this.isLeader;
    const before = this.leaderId;
    this.leaderId = leaderId;
    if (before !== leaderId || was !== this.isLeader) this.onChange(this.isLeader, leaderId);
  }

  _after(ms, fn) {
    this._clear();
    this._timer = this.timers.setTimeout(() => {
      this._timer = null;
      fn();
    }, ms);
  }

  _clear() {
    if (this._timer !== null) this.timers.clearTimeout(this._timer);
    this._timer = null;
  }
}

// -- the offline queue of chat.send ----------------------------------------------------

/** `chat.send` actions not acknowledged yet, in order; persisted when a storage is given. */
export class OutboundQueue {
  constructor({ storage = null, key = "cutover:outbox" } = {}) {
    this.storage = storage;
    this.key = key;
    this.items = [];
    if (storage) {
      try {
        const saved = JSON.parse(storage.getItem(key) || "[]");
        if (Array.isArray(saved)) this.items = saved;
      } catch {
        this.items = [];
      }
    }
  }

  add(item) {
    if (!this.items.some((i) => i.clientMessageId === item.clientMessageId)) this.items.push(item);
    this._save();
  }

  remove(clientMessageId) {
    this.items = this.items.filter((i) => i.clientMessageId !== clientMessageId);
    this._save();
  }

  replace(items) {
    this.items = [...items];
    this._save();
  }

  get length() {
    return this.items.length;
  }

  _save() {
    if (!this.storage) return;
    try {
      this.storage.setItem(this.key, JSON.stringify(this.items));
    } catch {
      // storage full or denied: the queue still lives in memory
    }
  }
}

function pendingByConversation(items) {
  const out = {};
  for (const item of items) {
    (out[item.conversationId] ||= []).push({ clientMessageId: item.clientMessageId, body: item.body, createdAt: item.createdAt });
  }
  return out;
}

// -- the client ----------------------------------------------------------------------

function defaultTimers() {
  return {
    setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
    clearTimeout: (t) => globalThis.clearTimeout(t),
    setInterval: (fn, ms) => globalThis.setInterval(fn, ms),
    clearInterval: (t) => globalThis.clearInterval(t),
  };
}

function absoluteUrl(url) {
  const base = globalThis.location ? globalThis.location.href : undefined;
  return new URL(url, base).toString();
}

function websocketUrlFrom(httpUrl) {
  const url = new URL("/ws", httpUrl);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.toString();
}

const SEND_MUTATION =
  "mutation CutoverSend($c: ID!, $b: String!, $k: String) { sendChatMessage(conversationId: $c, body: $b, clientMessageId: $k) " +
  "{ id conversationId senderId body createdAt clientMessageId deliveredTo readBy } }";
const MESSAGES_QUERY =
  "query CutoverMessages($c: ID!, $n: Int) { messages(conversationId: $c, last: $n) " +
  "{ id conversationId senderId body createdAt clientMessageId deliveredTo readBy } }";

/**
 * A client of both paths for one user. Create it with `createClient(options)`,
 * then `await client.start()`. In a tab that follows another (one socket per
 * browser), every method that needs the socket is carried out by the leading
 * tab and the state is mirrored from it.
 */
export class Client {
  constructor(options = {}) {
    if (typeof options.getToken !== "function") throw new TypeError("createClient needs getToken()");
    this.options = options;
    this.graphqlUrl = absoluteUrl(options.graphqlUrl || "/graphql");
    this.ticketUrl = absoluteUrl(options.ticketUrl || new URL("/realtime/tickets", this.graphqlUrl).toString());
    this.parityUrl = absoluteUrl(options.parityUrl || new URL("/realtime/parity", this.graphqlUrl).toString());
    this.url = options.url || null;
    this.WebSocket = options.WebSocket || globalThis.WebSocket;
    this.fetch = options.fetch || ((...args) => globalThis.fetch(...args));
    this.BroadcastChannel = options.BroadcastChannel === undefined ? globalThis.BroadcastChannel : options.BroadcastChannel;
    this.timers = options.timers || defaultTimers();
    this.now = options.now || (() => Date.now());
    this.random = options.random || Math.random;
    this.watchEvents = [...(options.watchEvents || [])];
    this.watchPresence = [...(options.watchPresence || [])];
    this.hybrid = Boolean(options.hybrid);
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
    this.fallbackIntervalMs = options.fallbackIntervalMs ?? 10_000;
    this.parityWindowMs = options.parityWindowMs ?? 3000;
    this.machine = new ConnectionMachine({ fallbackAfter: options.fallbackAfter ?? 5, backoff: options.backoff || {} });
    this.tabId = `${this.now().toString(36).padStart(9, "0")}-${randomId(this.random)}`;

    this.pushState = emptyState();
    this.pollState = emptyState();
    this.state = emptyState();
    this.status = "offline";
    this.stages = {};
    this.plan = {};
    this.welcome = null;
    this.isLeader = true;
    this.leaderId = null;
    this.ready = null;
    this.stats = {
      connects: 0, reconnects: 0, resumes: 0, resets: 0, snapshots: 0, duplicates: 0, gaps: 0,
      applied: 0, refreshes: 0, polls: 0, pollErrors: 0, beaconsSent: 0, beaconsRefused: 0, queued: 0,
    };
    this.parity = { sampleRate: 0, maxPerMinute: 0, lastBeacon: null, results: {}, lastPoll: null };

    this._listeners = new Map();
    this._dedupe = new Deduper();
    this._cursor = new StreamCursor();
    this._ws = null;
    this._socketGen = 0;
    this._synced = false;
    this._pending = new Map(); // request id -> {resolve, reject, timer, action}
    this._nextId = 1;
    this._topics = new Map(); // topic -> Set of the tabs that want it
    for (const id of this.watchEvents) this._topics.set(`event:${id}`, new Set(["options"]));
    for (const id of this.watchPresence) this._topics.set(`presence:${id}`, new Set(["options"]));
    this._token = null;
    this._tokenClaims = null;
    this._tokenRefreshAt = 0;
    this._tokenPromise = null;
    this._sessionToken = null; // the token the socket's session runs on
    this._handing = null;
    this._timers = { refresh: null, reconnect: null, poll: null, flush: null };
    this._heartbeat = null;
    this._lastFrameAt = 0;
    this._configUrl = null;
    this._lastPolled = {};
    this._pollSeq = {};
    this._loading = new Set();
    this._history = []; // [{epoch, seq, keys}] of the push state, for comparisons at a cursor
    this._committed = new Map(); // seq -> {domain, atMs}: when each change was committed (client clock)
    this._latency = {}; // domain -> {push: [ms], poll: [ms]}
    this._waitingCompare = [];
    this._clockOffsetMs = 0;
    this._bestRtt = Infinity;
    this._beaconHoldUntil = 0;
    this._queue = new OutboundQueue();
    this._sendWaiters = new Map(); // clientMessageId -> [{resolve, reject}]
    this._flushing = false;
    this._stopped = true;
    this._pushBlocked = false;
    this._visibleTabs = new Set();
    this._presence = null;
    this._leader = null;
    this._forwarded = new Map(); // rid -> {resolve, reject, message, timer}
    this._syncScheduled = false;
    this._emitScheduled = false;
    this._resolveReady = null;
  }

  // -- public API -----------------------------------------------------------------

  /** Listen to an envelope type, or `*` (every envelope), `status`, `state`, `beacon`,
   * `parity`, `leader`, `error`. Returns a function that stops listening. */
  on(type, fn) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    const set = this._listeners.get(type);
    if (set) set.delete(fn);
  }

  /** Start: elect a leader among tabs, take the snapshot, connect. Resolves once a state is held. */
  async start() {
    if (!this._stopped) return this.ready;
    this._stopped = false;
    this.ready = new Promise((resolve) => {
      this._resolveReady = resolve;
    });
    const token = await this._getToken();
    const claims = decodeToken(token) || {};
    const subject = claims.tenant ? `${claims.tenant}/${claims.sub}` : claims.sub || "anonymous";
    this.pushState = emptyState(subject);
    this.pollState = emptyState(subject);
    this.state = emptyState(subject);
    const storage = this.options.storage === undefined ? globalThis.localStorage ?? null : this.options.storage;
    this._queue = new OutboundQueue({ storage, key: `cutover:outbox:${subject}` });
    this._installNetworkListeners();
    const share = this.options.shareTabs !== false && typeof this.BroadcastChannel === "function";
    if (share) {
      this.isLeader = false;
      this._leader = new TabLeader({
        channel: new this.BroadcastChannel(this.options.channelName || `cutover:${subject}`),
        id: this.tabId,
        timers: this.timers,
        heartbeatMs: this.options.tabHeartbeatMs ?? 1000,
        timeoutMs: this.options.tabTimeoutMs ?? 3500,
        electionMs: this.options.tabElectionMs ?? 300,
        onChange: (isLeader, leaderId) => this._onLeaderChange(isLeader, leaderId),
        onMessage: (message, from) => this._onTabMessage(message, from),
      });
      this._leader.start();
    } else {
      this._becomeLeader();
    }
    return this.ready;
  }

  /** Stop everything: the socket (1000), timers, polling; a leading tab hands over. */
  stop() {
    if (this._stopped) return;
    this._stopped = true;
    this._closeSocket(1000, "client stopped");
    this._clearTimers();
    if (this._leader) this._leader.stop();
    this._leader = null;
    this._setStatus(this.machine.stop());
  }

  /** Send an action; resolves with the reply's payload, rejects with a CutoverError. */
  request(action, payload = {}, { timeoutMs = this.requestTimeoutMs } = {}) {
    return this._call("request", [action, payload, timeoutMs], timeoutMs + 5000);
  }

  /** Subscribe to a topic (`conversation:<id>`, `presence:<user>`, `event:<id>`); kept across reconnects. */
  subscribe(topic) {
    return this._call("subscribe", [topic]);
  }

  unsubscribe(topic) {
    return this._call("unsubscribe", [topic]);
  }

  /** Watch users' presence: subscribe to `presence:<id>` and include them in snapshots and polls. */
  watchPresenceOf(userIds) {
    return this._call("watchPresence", [userIds]);
  }

  /**
   * Send a chat message through the offline queue: at once when the socket is
   * up, over GraphQL while push is down and polling, or when the connection is
   * back; always with the same `clientMessageId`, so it is posted once.
   */
  sendMessage(conversationId, body, { clientMessageId } = {}) {
    const item = {
      conversationId,
      body,
      clientMessageId: clientMessageId || `cm-${this.tabId}-${this._nextId++}`,
      createdAt: new Date(this.now()).toISOString(),
    };
    return this._call("send", [item], 24 * 3600_000);
  }

  /** Load the last messages of a conversation into the state. */
  loadMessages(conversationId, last = 50) {
    return this._call("loadMessages", [conversationId, last]);
  }

  /** Close the socket as a network cut would: the client reconnects and resumes. */
  dropSocket() {
    return this._call("drop", []);
  }

  /** Keep push down (every attempt fails) to show the fallback; `false` lets it come back. */
  setPushBlocked(blocked) {
    return this._call("block", [Boolean(blocked)]);
  }

  /** A GraphQL request with the client's token; resolves with `data`. */
  async graphql(query, variables = {}) {
    const { body } = await this._http(this.graphqlUrl, { query, variables });
    if (body.errors && body.errors.length) {
      const first = body.errors[0];
      throw new CutoverError((first.extensions && first.extensions.code) || "GRAPHQL", first.message);
    }
    return body.data;
  }

  // -- calls: carried out by the leading tab -------------------------------------------

  _call(method, args, timeoutMs = this.requestTimeoutMs + 5000) {
    if (this.isLeader) return this._leaderCall(method, args, this.tabId);
    const rid = `${this.tabId}:${this._nextId++}`;
    return new Promise((resolve, reject) => {
      const entry = { resolve, reject, message: { t: "call", rid, method, args }, timer: null };
      entry.timer = this.timers.setTimeout(() => {
        this._forwarded.delete(rid);
        reject(new CutoverError("TIMEOUT", `no answer from the leading tab to ${method}`));
      }, timeoutMs);
      this._forwarded.set(rid, entry);
      if (this._leader && this.leaderId !== null) this._leader.post(entry.message);
    });
  }

  _leaderCall(method, args, tab) {
    try {
      switch (method) {
        case "request":
          return this._requestWithRefresh(args[0], args[1], args[2] ?? this.requestTimeoutMs);
        case "subscribe":
          return this._subscribeFor(args[0], tab);
        case "unsubscribe":
          return this._unsubscribeFor(args[0], tab);
        case "watchPresence":
          return this._watchPresence(args[0], tab);
        case "send":
          return this._enqueue(args[0]);
        case "loadMessages":
          return this._loadMessages(args[0], args[1]);
        case "drop":
          if (this._ws) this._socketLost(this._socketGen, 4100, "dropped by the client");
          return Promise.resolve(null);
        case "block":
          this._pushBlocked = args[0];
          if (args[0] && this._ws) this._socketLost(this._socketGen, 4100, "push blocked by the client");
          if (!args[0] && !this._ws && !this._stopped) this._scheduleReconnect(0);
          return Promise.resolve(null);
        default:
          return Promise.reject(new CutoverError("BAD_REQUEST", `unknown call ${method}`));
      }
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** After a hand-over, calls this tab sent to the old leader go to the new one (or
   * run here if this tab leads now); chat.send is idempotent by clientMessageId. */
  _resendForwarded() {
    for (const [rid, entry] of this._forwarded) {
      if (this.isLeader) {
        this._forwarded.delete(rid);
        this.timers.clearTimeout(entry.timer);
        this._leaderCall(entry.message.method, entry.message.args, this.tabId).then(entry.resolve, entry.reject);
      } else if (this._leader && this.leaderId !== null) {
        this._leader.post(entry.message);
      }
    }
  }

  // -- events ---------------------------------------------------------------------

  _emit(type, ...args) {
    const set = this._listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (error) {
        if (type !== "error") this._emit("error", error);
      }
    }
  }

  _emitEnvelope(envelope) {
    this._emit(envelope.type, envelope);
    this._emit("*", envelope);
  }

  _setStatus(status) {
    if (status === this.status) return;
    const previous = this.status;
    this.status = status;
    this._emit("status", status, previous);
    if (this.isLeader && !this._stopped) {
      this._replan();
      this._scheduleSync();
      if (status === "polling" || status === "reconnecting") this._flushQueue();
    }
  }

  _changed() {
    this.state = this._compose();
    if (this._emitScheduled) return;
    this._emitScheduled = true;
    queueMicrotask(() => {
      this._emitScheduled = false;
      this._emit("state", this.state);
      if (this.isLeader) this._scheduleSync();
    });
  }

  /** The rendered state: each domain from the path its plan renders. */
  _compose() {
    const push = this.pushState;
    const poll = this.pollState;
    const state = { ...push, chat: { ...push.chat, pending: pendingByConversation(this._queue.items) } };
    const render = (domain) => (this.plan[domain] ? this.plan[domain].render : "push");
    if (render("notification") === "poll" && poll.notifications.unread !== null) state.notifications = poll.notifications;
    if (render("chat") === "poll" && poll.chat.totalUnread !== null) {
      state.chat = { ...state.chat, totalUnread: poll.chat.totalUnread, conversations: poll.chat.conversations };
    }
    if (render("follow") === "poll" && poll.follow.pending !== null) state.follow = { ...push.follow, pending: poll.follow.pending };
    if (render("event") === "poll" && Object.keys(poll.events).length) state.events = { ...push.events, ...poll.events };
    if (render("presence") === "poll" && Object.keys(poll.presence).length) state.presence = { ...push.presence, ...poll.presence };
    return state;
  }

  // -- tokens ---------------------------------------------------------------------

  async _getToken({ force = false } = {}) {
    if (this._token && !force && this.now() < this._tokenRefreshAt) return this._token;
    if (!this._tokenPromise) {
      this._tokenPromise = (async () => {
        try {
          const token = await this.options.getToken({ force });
          this._adoptToken(token);
          return token;
        } finally {
          this._tokenPromise = null;
        }
      })();
    }
    return this._tokenPromise;
  }

  /** A new token from the app: used from now on, refreshed a fifth of its life before
   * it expires, and handed to the open socket (`auth.refresh`) so the session keeps up. */
  _adoptToken(token) {
    this._token = token;
    this._tokenClaims = decodeToken(token);
    const exp = this._tokenClaims && this._tokenClaims.exp;
    this._tokenRefreshAt = exp ? this.now() + refreshDelayMs(exp, this.now()) : Infinity;
    this._scheduleRefresh();
    if (this._synced && this._ws && token !== this._sessionToken) this._handing = this._handSocket(token);
  }

  _scheduleRefresh() {
    this._clearTimer("refresh");
    if (this._stopped || !this.isLeader || this._tokenRefreshAt === Infinity) return;
    this._timers.refresh = this.timers.setTimeout(() => {
      this._timers.refresh = null;
      this._getToken({ force: true }).catch((error) => this._emit("error", error));
    }, Math.max(0, this._tokenRefreshAt - this.now()));
  }

  /** `auth.refresh` on the open socket; the socket is replaced only when the server refuses it. */
  async _handSocket(token) {
    const gen = this._socketGen;
    try {
      await this._rawRequest("auth.refresh", { token }, this.requestTimeoutMs);
      if (gen !== this._socketGen) return;
      this._sessionToken = token;
      this.stats.refreshes += 1;
      this._scheduleSync();
    } catch (error) {
      if ((error.code === "UNAUTHORIZED" || error.code === "TOKEN_EXPIRED") && gen === this._socketGen) {
        this._socketLost(gen, 4001, "refresh refused");
      }
    }
  }

  /** After an UNAUTHORIZED reply: a fresh token, handed to the socket, before trying again. */
  async _refreshSession() {
    await this._getToken({ force: true });
    if (this._handing) await this._handing;
  }

  // -- HTTP ------------------------------------------------------------------------

  async _http(url, payload, { retryUnauthorized = true, keepalive = false } = {}) {
    const token = await this._getToken();
    let response;
    try {
      response = await this.fetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
        body: JSON.stringify(payload ?? {}),
        keepalive,
      });
    } catch (error) {
      throw new CutoverError("NETWORK", `${url}: ${error && error.message ? error.message : error}`);
    }
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (response.status === 401 && retryUnauthorized) {
      await this._getToken({ force: true });
      return this._http(url, payload, { retryUnauthorized: false, keepalive });
    }
    if (response.status >= 400 || body === null) {
      const error = (body && body.error) || {};
      const gql = body && Array.isArray(body.errors) && body.errors[0];
      const retry = response.headers && typeof response.headers.get === "function" ? response.headers.get("retry-after") : null;
      throw new CutoverError(
        error.code || (gql && gql.extensions && gql.extensions.code) || `HTTP_${response.status}`,
        error.message || (gql && gql.message) || `HTTP ${response.status}`,
        { status: response.status, retryAfterMs: retry ? Number(retry) * 1000 : undefined, path: error.path },
      );
    }
    return { status: response.status, body };
  }

  // -- leading and following --------------------------------------------------------

  _onLeaderChange(isLeader, leaderId) {
    this.leaderId = leaderId;
    const was = this.isLeader;
    this.isLeader = isLeader;
    if (isLeader && !was) this._becomeLeader();
    else if (!isLeader && was) this._becomeFollower();
    if (!isLeader && leaderId !== null) {
      this._leader.post({ t: "sync?" });
      this._leader.post({ t: "visible", visible: !globalThis.document || globalThis.document.visibilityState !== "hidden" });
      this._resendForwarded();
    }
    this._emit("leader", isLeader, leaderId);
  }

  _becomeLeader() {
    this.isLeader = true;
    if (this._leader) this.leaderId = this._leader.id;
    this._queue.replace(this._queue.items); // keep what the last leader left queued
    this._scheduleRefresh();
    this._setStatus(this.machine.start());
    this._resendForwarded();
    this._run().catch((error) => this._emit("error", error));
  }

  _becomeFollower() {
    this._closeSocket(1000, "another tab leads");
    this._clearTimers();
  }

  async _run() {
    // A tab that took over from a leader already holds the mirrored state and
    // resumes from its cursor; otherwise the state starts from a snapshot.
    if (this.pushState.seq === null) {
      while (!this._stopped && this.isLeader) {
        try {
          await this._snapshot();
          break;
        } catch (error) {
          this._emit("error", error);
          this._setStatus(this.machine.failed());
          await this._sleep(this.machine.nextDelay(this.random));
        }
      }
    } else {
      this._cursor.epoch = this.pushState.epoch;
      this._cursor.seq = this.pushState.seq;
      this._record();
      if (this._resolveReady) this._resolveReady();
    }
    if (this._stopped || !this.isLeader) return;
    this._replan();
    this._connect();
  }

  _sleep(ms) {
    return new Promise((resolve) => this.timers.setTimeout(resolve, ms));
  }

  _onTabMessage(message, from) {
    if (!message || typeof message !== "object") return;
    if (this.isLeader) {
      this._leaderHears(message, from);
      return;
    }
    switch (message.t) {
      case "sync":
        this.pushState = message.pushState;
        this.pollState = message.pollState;
        this.stages = message.stages;
        this.plan = message.plan;
        this.welcome = message.welcome;
        this.parity = message.parity;
        this.stats = message.stats;
        this._queue.items = message.queue;
        if (this.status !== message.status) {
          const previous = this.status;
          this.status = message.status;
          this._emit("status", this.status, previous);
        }
        this._changed();
        if (this._resolveReady) this._resolveReady();
        break;
      case "envelope":
        this._emitEnvelope(message.envelope);
        break;
      case "beacon":
        this._emit("beacon", message.beacon, message.response);
        break;
      case "reply": {
        if (message.to !== this.tabId) break;
        const entry = this._forwarded.get(message.rid);
        if (!entry) break;
        this._forwarded.delete(message.rid);
        this.timers.clearTimeout(entry.timer);
        if (message.ok) entry.resolve(message.payload);
        else entry.reject(new CutoverError(message.error.code, message.error.message, message.error));
        break;
      }
      default:
        break;
    }
  }

  _leaderHears(message, from) {
    switch (message.t) {
      case "sync?":
        this._syncNow();
        break;
      case "call":
        Promise.resolve(this._leaderCall(message.method, message.args, from)).then(
          (payload) => this._leader && this._leader.post({ t: "reply", to: from, rid: message.rid, ok: true, payload: payload ?? null }),
          (error) => this._leader && this._leader.post({
            t: "reply", to: from, rid: message.rid, ok: false,
            error: { code: error.code || "INTERNAL", message: error.message, retryAfterMs: error.retryAfterMs },
          }),
        );
        break;
      case "visible":
        if (message.visible) this._visibleTabs.add(from);
        else this._visibleTabs.delete(from);
        this._updatePresence();
        break;
      default:
        break;
    }
  }

  _scheduleSync() {
    if (!this._leader || !this.isLeader || this._syncScheduled) return;
    this._syncScheduled = true;
    queueMicrotask(() => {
      this._syncScheduled = false;
      this._syncNow();
    });
  }

  _syncNow() {
    if (!this._leader || !this.isLeader || this._stopped) return;
    this._leader.post({
      t: "sync",
      pushState: this.pushState,
      pollState: this.pollState,
      stages: this.stages,
      plan: this.plan,
      welcome: this.welcome,
      parity: this.parity,
      stats: this.stats,
      status: this.status,
      queue: this._queue.items,
    });
  }

  // -- the socket ----------------------------------------------------------------------

  _websocketUrl() {
    let url = this.url || this._configUrl || websocketUrlFrom(this.graphqlUrl);
    if (globalThis.location && globalThis.location.protocol === "https:" && url.startsWith("ws:")) {
      url = `wss:${url.slice(3)}`;
    }
    return url;
  }

  async _connect() {
    if (this._stopped || !this.isLeader || this._ws) return;
    const gen = ++this._socketGen;
    this.stats.connects += 1;
    if (this._pushBlocked) {
      this._attemptFailed(gen);
      return;
    }
    let ticket;
    try {
      this._sessionToken = await this._getToken();
      ticket = (await this._http(this.ticketUrl, {})).body.ticket;
    } catch (error) {
      this._emit("error", error);
      this._attemptFailed(gen);
      return;
    }
    if (gen !== this._socketGen || this._stopped || !this.isLeader) return;
    const url = new URL(this._websocketUrl());
    url.searchParams.set("ticket", ticket);
    let ws;
    try {
      ws = new this.WebSocket(url.toString());
    } catch (error) {
      this._emit("error", error);
      this._attemptFailed(gen);
      return;
    }
    this._ws = ws;
    this._synced = false;
    this._lastFrameAt = this.now();
    ws.onmessage = (event) => {
      if (gen === this._socketGen) this._onFrame(event.data);
    };
    ws.onclose = (event) => {
      if (gen === this._socketGen) this._socketLost(gen, event.code, event.reason);
    };
    ws.onerror = () => {};
  }

  _attemptFailed(gen) {
    if (gen !== this._socketGen) return;
    this._ws = null;
    this._setStatus(this.machine.failed());
    this._scheduleReconnect();
  }

  _socketLost(gen, code, reason) {
    if (gen !== this._socketGen) return;
    const ws = this._ws;
    this._socketGen += 1; // whatever this socket still delivers is ignored
    this._ws = null;
    if (ws) {
      ws.onmessage = null;
      ws.onclose = null;
      try {
        if (ws.readyState === 0 || ws.readyState === 1) ws.close(1000, String(reason || "").slice(0, 100));
      } catch {
        // already closing
      }
    }
    this._stopHeartbeat();
    const wasSynced = this._synced;
    this._synced = false;
    this._presence = null;
    this._cursor.resuming = null;
    for (const [id, waiter] of this._pending) {
      this.timers.clearTimeout(waiter.timer);
      waiter.reject(new CutoverError("DISCONNECTED", `the connection closed (${code}) before ${waiter.action} was answered`));
      this._pending.delete(id);
    }
    if (this._stopped || !this.isLeader) return;
    if (code === 4001) {
      // The session's token expired or was revoked: a fresh token, a new ticket, at once.
      this._token = null;
      this._tokenRefreshAt = 0;
      this.machine.serverReconnect(0);
    }
    if (wasSynced) {
      this.stats.reconnects += 1;
      this._setStatus(this.machine.dropped());
    } else if (code !== 4001) {
      this._setStatus(this.machine.failed());
    }
    this._scheduleReconnect();
  }

  _scheduleReconnect(delay = null) {
    this._clearTimer("reconnect");
    if (this._stopped || !this.isLeader || this.status === "offline") return;
    const ms = delay ?? this.machine.nextDelay(this.random);
    this._timers.reconnect = this.timers.setTimeout(() => {
      this._timers.reconnect = null;
      this._connect();
    }, ms);
  }

  _closeSocket(code, reason) {
    const ws = this._ws;
    this._socketGen += 1;
    this._ws = null;
    this._synced = false;
    this._stopHeartbeat();
    if (ws) {
      ws.onmessage = null;
      ws.onclose = null;
      try {
        ws.close(code, reason);
      } catch {
        // already closed
      }
    }
  }

  _send(action, payload, id) {
    const frame = { v: PROTOCOL_VERSION, id, action, payload };
    this._ws.send(JSON.stringify(frame));
  }

  _rawRequest(action, payload, timeoutMs) {
    if (!this._ws || this._ws.readyState !== 1) {
      return Promise.reject(new CutoverError("DISCONNECTED", `not connected: ${action} not sent`));
    }
    const id = `c-${this._nextId++}`;
    return new Promise((resolve, reject) => {
      const timer = this.timers.setTimeout(() => {
        this._pending.delete(id);
        reject(new CutoverError("TIMEOUT", `${action}: no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      this._pending.set(id, { resolve, reject, timer, action });
      try {
        this._send(action, payload, id);
      } catch (error) {
        this.timers.clearTimeout(timer);
        this._pending.delete(id);
        reject(new CutoverError("DISCONNECTED", String(error)));
      }
    });
  }

  async _requestWithRefresh(action, payload, timeoutMs) {
    if (!this._synced) await this._whenSynced(timeoutMs);
    try {
      return await this._rawRequest(action, payload, timeoutMs);
    } catch (error) {
      if (error.code === "UNAUTHORIZED" && action !== "auth.refresh") {
        await this._refreshSession();
        return this._rawRequest(action, payload, timeoutMs);
      }
      if (error.code === "RATE_LIMITED" && error.retryAfterMs !== undefined && error.retryAfterMs < timeoutMs) {
        await this._sleep(error.retryAfterMs);
        return this._rawRequest(action, payload, timeoutMs);
      }
      throw error;
    }
  }

  _whenSynced(timeoutMs) {
    if (this._synced) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = this.timers.setTimeout(() => {
        off();
        reject(new CutoverError("DISCONNECTED", "not connected"));
      }, timeoutMs);
      const off = this.on("status", (status) => {
        if (status === "online") {
          off();
          this.timers.clearTimeout(timer);
          resolve();
        }
      });
    });
  }

  _onFrame(data) {
    this._lastFrameAt = this.now();
    const gen = this._socketGen;
    const text = typeof data === "string" ? data : new TextDecoder().decode(data);
    for (const line of text.split("\n")) {
      if (!line) continue;
      let envelope;
      try {
        envelope = JSON.parse(line);
      } catch {
        this._emit("error", new CutoverError("BAD_FRAME", `unparsable envelope: ${line.slice(0, 80)}`));
        continue;
      }
      this._onEnvelope(envelope);
      if (gen !== this._socketGen) return; // the envelope ended this socket
    }
  }

  _onEnvelope(envelope) {
    const { type } = envelope;
    const replyTo = envelope.replyTo;
    if (replyTo && this._pending.has(replyTo)) {
      const waiter = this._pending.get(replyTo);
      this._pending.delete(replyTo);
      this.timers.clearTimeout(waiter.timer);
      const p = envelope.payload || {};
      if (type === "error") {
        waiter.reject(new CutoverError(p.code || "INTERNAL", p.message, { retryAfterMs: p.retryAfterMs, path: p.path }));
      } else {
        waiter.resolve(p);
      }
      this._emitEnvelope(envelope);
      return;
    }
    switch (type) {
      case "session.welcome":
        this._onWelcome(envelope.payload);
        this._emitEnvelope(envelope);
        return;
      case "session.resumed":
        this._onResumed(envelope);
        this._emitEnvelope(envelope);
        return;
      case "session.reset":
        this._emitEnvelope(envelope);
        this._onReset(envelope);
        return;
      case "system.reconnect":
        this.machine.serverReconnect(envelope.payload.retryAfterMs);
        this._emitEnvelope(envelope);
        return;
      case "error":
        if ((envelope.payload || {}).code === "TOKEN_EXPIRED") this._tokenRefreshAt = 0;
        this._emitEnvelope(envelope);
        return;
      default:
        break;
    }
    const verdict = this._cursor.classify(envelope);
    switch (verdict) {
      case "ephemeral":
        if (this._dedupe.seen(envelope.id)) {
          this.stats.duplicates += 1;
          return;
        }
        this.pushState = reduce(this.pushState, envelope);
        this._changed();
        this._emitEnvelope(envelope);
        this._forwardEnvelope(envelope);
        return;
      case "duplicate":
        this.stats.duplicates += 1;
        return;
      case "early":
        return; // the resume in flight replays it
      case "gap":
        this.stats.gaps += 1;
        this._resume();
        return;
      default:
        this._applyDurable(envelope);
    }
  }

  /** A durable event at the next seq. Its `seq` identifies it within the epoch,
   * so seq order is the dedupe; its id is remembered for the ephemeral path. */
  _applyDurable(envelope) {
    this._dedupe.seen(envelope.id);
    this._cursor.advance(envelope.seq);
    this.pushState = reduce(this.pushState, envelope);
    this.stats.applied += 1;
    const domain = domainOf(envelope.type);
    if (domain && envelope.sentAt) {
      const committed = Date.parse(envelope.sentAt) - this._clockOffsetMs;
      if (!Number.isNaN(committed)) {
        this._committed.set(envelope.seq, { domain, atMs: committed });
        if (this._committed.size > 1024) this._committed.delete(this._committed.keys().next().value);
        if (this._cursor.resuming === null) this._sampleLatency(domain, "push", this.now() - committed);
      }
    }
    this._record();
    this._changed();
    this._emitEnvelope(envelope);
    this._forwardEnvelope(envelope);
    this._checkWaitingCompare(false);
  }

  _forwardEnvelope(envelope) {
    if (this._leader && this.isLeader) this._leader.post({ t: "envelope", envelope });
  }

  _onWelcome(payload) {
    this.welcome = payload;
    this.stages = normalizeStages(payload.domains);
    const parity = payload.parity || {};
    this.parity.sampleRate = Number(parity.sampleRate) || 0;
    this.parity.maxPerMinute = Number(parity.maxPerMinute) || 0;
    if (parity.endpoint) this.parityUrl = new URL(parity.endpoint, this.graphqlUrl).toString();
    this._replan();
    if (this.pushState.epoch === null) {
      // no snapshot yet: take it now, then resume from its cursor
      this._cursor.seq = null;
      const gen = this._socketGen;
      this._snapshot().then(
        () => gen === this._socketGen && this._resume(),
        (error) => this._emit("error", error),
      );
      return;
    }
    this._resume();
  }

  _resume() {
    if (!this._ws || this._ws.readyState !== 1) return;
    const id = `resume-${this._nextId++}`;
    this._cursor.epoch = this.pushState.epoch;
    this._cursor.seq = this.pushState.seq;
    this._cursor.resuming = id;
    this._send("session.resume", { epoch: this.pushState.epoch, lastSeq: this.pushState.seq }, id);
  }

  _onResumed(envelope) {
    if (envelope.replyTo !== this._cursor.resuming) return;
    this._cursor.resuming = null;
    if (this._cursor.seq < Number(envelope.payload.toSeq)) {
      // the replay announced events that never arrived: ask again from where we are
      this.stats.gaps += 1;
      this._resume();
      return;
    }
    this.stats.resumes += 1;
    this._sessionUp();
  }

  async _onReset(envelope) {
    if (envelope.replyTo && envelope.replyTo !== this._cursor.resuming) return;
    this.stats.resets += 1;
    // Hold every durable event until the new snapshot: its cursor decides what applies.
    this._cursor.seq = null;
    this._cursor.resuming = "reset";
    const gen = this._socketGen;
    try {
      await this._snapshot();
    } catch (error) {
      this._emit("error", error);
      if (gen === this._socketGen) this._socketLost(gen, 4100, "snapshot after reset failed");
      return;
    }
    if (gen === this._socketGen) this._resume();
  }

  _sessionUp() {
    const first = !this._synced;
    this._synced = true;
    if (first) {
      this._startHeartbeat();
      for (const topic of this._topics.keys()) {
        this._rawRequest("subscribe", { topic }, this.requestTimeoutMs).catch((error) => {
          if (error.code !== "DISCONNECTED") this._emit("error", error);
        });
      }
    }
    this._setStatus(this.machine.synced());
    if (first) {
      if (this._token && this._token !== this._sessionToken) this._handing = this._handSocket(this._token);
      this._updatePresence();
      this._flushQueue();
    }
  }

  // -- heartbeat and clock ---------------------------------------------------------------

  _startHeartbeat() {
    this._stopHeartbeat();
    const interval = Number(this.welcome && this.welcome.heartbeatIntervalMs) || 30_000;
    const beat = () => {
      if (!this._ws || this._ws.readyState !== 1) return;
      if (this.now() - this._lastFrameAt > 2 * interval + 5000) {
        this._socketLost(this._socketGen, 4100, "no frame from the server");
        return;
      }
      const sentAt = this.now();
      this._rawRequest("ping", {}, interval).then((pong) => this._clock(sentAt, pong.serverTime), () => {});
    };
    this._heartbeat = this.timers.setInterval(beat, interval);
    beat();
  }

  _stopHeartbeat() {
    if (this._heartbeat !== null) this.timers.clearInterval(this._heartbeat);
    this._heartbeat = null;
  }

  /** The server clock's offset from the fastest ping: commit times become client times. */
  _clock(sentAt, serverTime) {
    const server = Date.parse(serverTime);
    if (Number.isNaN(server)) return;
    const rtt = this.now() - sentAt;
    if (rtt > this._bestRtt) return;
    this._bestRtt = rtt;
    this._clockOffsetMs = server - (sentAt + rtt / 2);
  }

  // -- snapshot and polls -----------------------------------------------------------------

  async _snapshot() {
    const { query, variables } = snapshotQuery({
      domains: DOMAINS, watchEvents: this.watchEvents, watchPresence: this.watchPresence,
    });
    const data = await this.graphql(query, variables);
    this.stats.snapshots += 1;
    this._fromConfig(data);
    const base = emptyState(this.pushState.userId);
    base.chat = { ...base.chat, messages: this.pushState.chat.messages };
    this.pushState = applySnapshot(base, data, { watchEvents: this.watchEvents });
    this.pollState = applySnapshot(this.pollState, data, { watchEvents: this.watchEvents });
    this._cursor.epoch = this.pushState.epoch;
    this._cursor.seq = this.pushState.seq;
    this._history = [];
    this._record();
    this._changed();
    if (this._resolveReady) this._resolveReady();
  }

  _fromConfig(data) {
    if (!data.realtimeConfig) return;
    this._configUrl = data.realtimeConfig.websocketUrl || null;
    const stages = normalizeStages(data.realtimeConfig.domains);
    if (!sameValue(stages, this.stages)) {
      this.stages = stages;
      this._replan();
    }
  }

  _replan() {
    if (!this.isLeader) return;
    const plan = pathPlan(this.stages, { status: this.status, hybrid: this.hybrid, fallbackIntervalMs: this.fallbackIntervalMs });
    if (!sameValue(plan, this.plan)) {
      for (const [domain, step] of Object.entries(plan)) {
        // push just went down for a domain it renders: poll it now, not an interval from now
        if (step.render === "poll" && this.plan[domain] && this.plan[domain].render === "push") this._lastPolled[domain] = -Infinity;
      }
      this.plan = plan;
      this._changed();
    }
    this._schedulePolls();
  }

  _schedulePolls() {
    this._clearTimer("poll");
    if (this._stopped || !this.isLeader) return;
    const now = this.now();
    let next = Infinity;
    for (const [domain, step] of Object.entries(this.plan)) {
      if (step.pollEveryMs === null || !this._pollable(domain)) continue;
      if (this._lastPolled[domain] === undefined) this._lastPolled[domain] = now;
      next = Math.min(next, this._lastPolled[domain] + step.pollEveryMs);
    }
    if (next === Infinity) return;
    this._timers.poll = this.timers.setTimeout(() => {
      this._timers.poll = null;
      this._pollDue().catch((error) => this._emit("error", error));
    }, Math.max(0, next - now));
  }

  _pollable(domain) {
    if (domain === "event") return this.watchEvents.length > 0;
    if (domain === "presence") return this.watchPresence.length > 0;
    return domain === "notification" || domain === "chat" || domain === "follow";
  }

  async _pollDue() {
    const now = this.now();
    const due = Object.entries(this.plan)
      .filter(([d, step]) => step.pollEveryMs !== null && this._pollable(d) && this._lastPolled[d] + step.pollEveryMs <= now + 50)
      .map(([d]) => d);
    for (const d of due) this._lastPolled[d] = now;
    if (due.length) {
      try {
        const { query, variables } = snapshotQuery({ domains: due, watchEvents: this.watchEvents, watchPresence: this.watchPresence });
        const data = await this.graphql(query, variables);
        this.stats.polls += 1;
        if (!this._stopped && this.isLeader) this._onPoll(due, data);
      } catch (error) {
        this.stats.pollErrors += 1;
        this._emit("error", error);
      }
    }
    this._schedulePolls();
  }

  _onPoll(domains, data) {
    const at = this.now();
    this.pollState = applySnapshot(this.pollState, data, { watchEvents: this.watchEvents });
    this._fromConfig(data);
    const epoch = String(data.realtimeCursor.epoch);
    const seq = Number(data.realtimeCursor.seq);
    this.parity.lastPoll = { epoch, seq, at, domains };
    for (const domain of domains) {
      const since = this._pollSeq[domain];
      this._pollSeq[domain] = seq;
      if (since === undefined) continue;
      for (const [s, change] of this._committed) {
        if (s > since && s <= seq && change.domain === domain) this._sampleLatency(domain, "poll", at - change.atMs);
      }
    }
    if (this.status !== "online") this._refreshOpenConversations();
    this._changed();
    const compared = domains.filter((d) => this.plan[d] && this.plan[d].compare && PARITY_DOMAINS.includes(d));
    if (compared.length && this.status === "online" && this.parity.sampleRate > 0 && this.random() < this.parity.sampleRate) {
      const keys = {};
      for (const d of compared) keys[d] = parityKeys(this.pollState, d);
      this._compareAt(epoch, seq, keys, at);
    }
  }

  /** While push is down, conversations with messages loaded get the new ones polled. */
  _refreshOpenConversations() {
    for (const [id, conv] of Object.entries(this.pollState.chat.conversations)) {
      const list = this.pushState.chat.messages[id];
      const lastId = conv.lastMessage ? conv.lastMessage.id : null;
      if (!list || !lastId || list.some((m) => m.id === lastId)) continue;
      this._loadMessages(id, 50).catch((error) => this._emit("error", error));
    }
  }

  async _loadMessages(conversationId, last) {
    if (this._loading.has(conversationId)) return this.pushState.chat.messages[conversationId] || [];
    this._loading.add(conversationId);
    try {
      const data = await this.graphql(MESSAGES_QUERY, { c: conversationId, n: last });
      this._mergeMessages(conversationId, data.messages);
      return this.pushState.chat.messages[conversationId];
    } finally {
      this._loading.delete(conversationId);
    }
  }

  _mergeMessages(conversationId, messages) {
    const chat = this.pushState.chat;
    this.pushState = {
      ...this.pushState,
      chat: { ...chat, messages: { ...chat.messages, [conversationId]: mergeMessages(chat.messages[conversationId], messages) } },
    };
    this._changed();
  }

  // -- parity ---------------------------------------------------------------------------

  _record() {
    const keys = {};
    for (const d of PARITY_DOMAINS) keys[d] = parityKeys(this.pushState, d);
    this._history.push({ epoch: this.pushState.epoch, seq: this.pushState.seq, keys });
    if (this._history.length > 256) this._history.shift();
  }

  /** The push state's keys at exactly `seq` (null: not held any more, or not yet). */
  _pushKeysAt(epoch, seq) {
    const last = this._history[this._history.length - 1];
    if (!last || last.epoch !== epoch || last.seq < seq) return null;
    let found = null;
    for (const entry of this._history) {
      if (entry.epoch === epoch && entry.seq <= seq) found = entry;
    }
    return found ? found.keys : null;
  }

  _compareAt(epoch, seq, pollKeys, at) {
    if (this.pushState.epoch === epoch && this.pushState.seq < seq) {
      // the poll is ahead of push: compare when push reaches its cursor, or give up
      this._waitingCompare.push({ epoch, seq, pollKeys, deadline: at + this.parityWindowMs });
      this.timers.setTimeout(() => this._checkWaitingCompare(true), this.parityWindowMs);
      return;
    }
    this._finishCompare(epoch, seq, pollKeys, this._pushKeysAt(epoch, seq));
  }

  _checkWaitingCompare(timedOut) {
    if (!this._waitingCompare.length) return;
    const now = this.now();
    const still = [];
    for (const waiting of this._waitingCompare) {
      if (this.pushState.epoch === waiting.epoch && this.pushState.seq >= waiting.seq) {
        this._finishCompare(waiting.epoch, waiting.seq, waiting.pollKeys, this._pushKeysAt(waiting.epoch, waiting.seq));
      } else if (timedOut && now >= waiting.deadline) {
        this._finishCompare(waiting.epoch, waiting.seq, waiting.pollKeys, null);
      } else {
        still.push(waiting);
      }
    }
    this._waitingCompare = still;
  }

  _finishCompare(epoch, seq, pollKeys, pushKeys) {
    const samples = [];
    for (const [domain, keys] of Object.entries(pollKeys)) {
      const stage = (this.stages[domain] || {}).stage;
      if (!SAMPLED_STAGES.has(stage)) continue;
      let outcome = "unaligned";
      let mismatched = [];
      if (pushKeys) {
        mismatched = diffKeys(pushKeys[domain] || {}, keys);
        outcome = mismatched.length ? "mismatch" : "match";
      }
      const sample = { domain, stage, outcome, keys: Object.keys(keys).length };
      if (mismatched.length) sample.mismatched = mismatched.slice(0, 5);
      samples.push(sample);
      this.parity.results[domain] = {
        outcome, seq, mismatched, push: pushKeys ? pushKeys[domain] : null, poll: keys,
      };
    }
    if (!samples.length) return;
    this._emit("parity", { epoch, seq, samples });
    if (!this._beaconDue()) return;
    for (const sample of samples) {
      const latency = this._latency[sample.domain];
      if (latency && (latency.push.length || latency.poll.length)) {
        sample.latencyMs = { push: latency.push.splice(0), poll: latency.poll.splice(0) };
      }
    }
    this._sendBeacon({ v: 1, userId: this.pushState.userId, cursor: { epoch, seq }, samples });
  }

  /** Whether a beacon may go now: the server's rate, and its Retry-After. */
  _beaconDue() {
    const now = this.now();
    const minGap = this.parity.maxPerMinute > 0 ? 60_000 / this.parity.maxPerMinute : 0;
    const last = this.parity.lastBeacon;
    return now >= this._beaconHoldUntil && !(last && now - last.at < minGap);
  }

  _sampleLatency(domain, path, ms) {
    const entry = (this._latency[domain] ||= { push: [], poll: [] });
    entry[path].push(Math.max(0, Math.round(Number.isFinite(ms) ? ms : 0)));
    if (entry[path].length > 10) entry[path].shift();
  }

  async _sendBeacon(beacon) {
    const now = this.now();
    this.parity.lastBeacon = { at: now, beacon, response: null };
    let response;
    try {
      response = (await this._http(this.parityUrl, beacon, { keepalive: true })).body;
      this.stats.beaconsSent += 1;
    } catch (error) {
      this.stats.beaconsRefused += 1;
      response = { error: { code: error.code, message: error.message } };
      if (error.retryAfterMs) this._beaconHoldUntil = this.now() + error.retryAfterMs;
    }
    this.parity.lastBeacon = { at: now, beacon, response };
    this._emit("beacon", beacon, response);
    if (this._leader && this.isLeader) this._leader.post({ t: "beacon", beacon, response });
    this._scheduleSync();
  }

  // -- subscriptions and presence -------------------------------------------------------------

  async _subscribeFor(topic, tab) {
    const owners = this._topics.get(topic) || new Set();
    const first = owners.size === 0;
    owners.add(tab);
    this._topics.set(topic, owners);
    if (first && this._synced) return this._rawRequest("subscribe", { topic }, this.requestTimeoutMs);
    return { topic };
  }

  async _unsubscribeFor(topic, tab) {
    const owners = this._topics.get(topic);
    if (!owners) return { topic };
    owners.delete(tab);
    if (owners.size) return { topic };
    this._topics.delete(topic);
    if (this._synced) return this._rawRequest("unsubscribe", { topic }, this.requestTimeoutMs);
    return { topic };
  }

  async _watchPresence(userIds, tab) {
    const added = userIds.filter((id) => !this.watchPresence.includes(id));
    this.watchPresence.push(...added);
    await Promise.allSettled(userIds.map((id) => this._subscribeFor(`presence:${id}`, tab)));
    if (added.length) {
      const data = await this.graphql(
        "query CutoverPresence($u: [ID!]!) { presence(userIds: $u) { userId status lastSeenAt } }", { u: added },
      );
      this.pushState = applySnapshot(this.pushState, data);
      this._changed();
    }
    return null;
  }

  _installNetworkListeners() {
    const target = this.options.network === undefined ? globalThis : this.options.network;
    if (this._networkInstalled || !target || typeof target.addEventListener !== "function") return;
    this._networkInstalled = true;
    target.addEventListener("offline", () => {
      if (this._stopped || !this.isLeader) return;
      this._closeSocket(1000, "network offline");
      this._setStatus(this.machine.networkDown());
    });
    target.addEventListener("online", () => {
      if (this._stopped || !this.isLeader) return;
      this._setStatus(this.machine.networkUp());
      this._scheduleReconnect(0);
    });
    const doc = globalThis.document;
    if (doc && typeof doc.addEventListener === "function") {
      if (doc.visibilityState !== "hidden") this._visibleTabs.add(this.tabId);
      doc.addEventListener("visibilitychange", () => {
        const visible = doc.visibilityState !== "hidden";
        if (this.isLeader) {
          if (visible) this._visibleTabs.add(this.tabId);
          else this._visibleTabs.delete(this.tabId);
          this._updatePresence();
        } else if (this._leader) {
          this._leader.post({ t: "visible", visible });
        }
      });
      globalThis.addEventListener?.("pagehide", () => this.stop());
    }
  }

  /** ONLINE while one of the user's tabs is visible, AWAY when all are hidden. */
  _updatePresence() {
    if (!this._synced || !globalThis.document) return;
    const status = this._visibleTabs.size ? "ONLINE" : "AWAY";
    if (status === this._presence) return;
    this._presence = status;
    this._rawRequest("presence.set", { status }, this.requestTimeoutMs).catch(() => {});
  }

  // -- the outbound queue -------------------------------------------------------------------

  _enqueue(item) {
    this._queue.add(item);
    this.stats.queued += 1;
    this._changed();
    const done = new Promise((resolve, reject) => {
      const waiters = this._sendWaiters.get(item.clientMessageId) || [];
      waiters.push({ resolve, reject });
      this._sendWaiters.set(item.clientMessageId, waiters);
    });
    this._flushQueue();
    return done;
  }

  _settleSend(clientMessageId, ok, value) {
    const waiters = this._sendWaiters.get(clientMessageId) || [];
    this._sendWaiters.delete(clientMessageId);
    for (const waiter of waiters) (ok ? waiter.resolve : waiter.reject)(value);
  }

  async _flushQueue() {
    if (this._flushing || !this.isLeader || this._stopped || !this._queue.length) return;
    const viaSocket = this._synced;
    const pollingNow = this.status === "polling" || (this.hybrid && this.status === "reconnecting");
    const viaGraphql = !viaSocket && pollingNow && this.options.sendOverGraphql !== false;
    if (!viaSocket && !viaGraphql) return;
    this._flushing = true;
    try {
      while (this._queue.length) {
        const item = this._queue.items[0];
        let message;
        try {
          if (viaSocket) {
            const payload = { conversationId: item.conversationId, body: item.body, clientMessageId: item.clientMessageId };
            message = (await this._requestWithRefresh("chat.send", payload, this.requestTimeoutMs)).message;
          } else {
            const vars = { c: item.conversationId, b: item.body, k: item.clientMessageId };
            message = (await this.graphql(SEND_MUTATION, vars)).sendChatMessage;
          }
        } catch (error) {
          if (error.permanent) {
            this._queue.remove(item.clientMessageId);
            this._changed();
            this._settleSend(item.clientMessageId, false, error);
            continue;
          }
          break; // disconnected, timed out, no network: it stays queued for the next flush
        }
        this._queue.remove(item.clientMessageId);
        this._mergeMessages(message.conversationId, [message]);
        this._settleSend(item.clientMessageId, true, message);
      }
    } finally {
      this._flushing = false;
      this._scheduleSync();
    }
    if (this._queue.length && !this._synced && this._timers.flush === null) {
      this._timers.flush = this.timers.setTimeout(() => {
        this._timers.flush = null;
        this._flushQueue();
      }, this.fallbackIntervalMs);
    }
  }

  _clearTimer(name) {
    if (this._timers[name] !== null) this.timers.clearTimeout(this._timers[name]);
    this._timers[name] = null;
  }

  _clearTimers() {
    for (const name of Object.keys(this._timers)) this._clearTimer(name);
    this._stopHeartbeat();
  }
}

/** A client of both paths for one user (see `Client`). */
export function createClient(options) {
  return new Client(options);
}
