// The demo page: one user's view of both paths through the SDK.
//
// URL parameters: user (alice, bob, carol, dave), ttl (token lifetime in s),
// hybrid=1, fallbackAfter, backoffBase, backoffMax (ms), share=0 (a socket per tab).
import { createClient } from "/client/cutover.js";

const USERS = ["alice", "bob", "carol", "dave"];
const params = new URLSearchParams(location.search);
const me = USERS.includes(params.get("user")) ? params.get("user") : "alice";
const ttlS = Number(params.get("ttl") || 3600);
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

async function demoToken() {
  const response = await fetch("/demo/token", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user: me, ttlS }),
  });
  if (!response.ok) throw new Error(`demo token: HTTP ${response.status}`);
  return (await response.json()).token;
}

/** The events this user can see: the ones they RSVPed to or saved. */
async function watchedEvents() {
  const response = await fetch("/graphql", {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${await demoToken()}` },
    body: JSON.stringify({ query: "{ myUpcomingRsvps { eventId } savedEvents { id } }" }),
  });
  const { data } = await response.json();
  return [...new Set([...data.myUpcomingRsvps.map((r) => r.eventId), ...data.savedEvents.map((e) => e.id)])];
}

const number = (name, fallback) => (params.has(name) ? Number(params.get(name)) : fallback);
const client = createClient({
  graphqlUrl: "/graphql",
  getToken: demoToken,
  watchEvents: await watchedEvents(),
  hybrid: params.get("hybrid") === "1",
  fallbackAfter: number("fallbackAfter", 5),
  backoff: { baseMs: number("backoffBase", 500), maxMs: number("backoffMax", 30_000) },
  fallbackIntervalMs: number("fallbackInterval", 5000),
  shareTabs: params.get("share") !== "0",
});

let openConversation = null;
const log = [];
const seenMessages = new Set();
let typingSent = 0;
let typingStop = null;

// -- rendering -------------------------------------------------------------------

function renderUsers() {
  $("users").replaceChildren(...USERS.map((u) => el("a", { href: `?user=${u}`, class: u === me ? "me" : "" }, u)));
}

function renderStatus() {
  const status = $("status");
  status.textContent = client.status;
  status.className = `pill ${client.status}`;
  const welcome = client.welcome || {};
  $("tab").textContent = `${client.isLeader ? "this tab holds the socket" : "sharing another tab's socket"}` +
    (welcome.connectionId ? ` · ${welcome.connectionId} · seq ${client.pushState.seq}` : "");
  $("block").checked = Boolean(client._pushBlocked);
}

function name(userId) {
  return userId === me ? "you" : userId;
}

function renderChat(state) {
  const total = state.chat.totalUnread;
  $("chat-total").textContent = total ?? "";
  $("chat-total").classList.toggle("zero", !total);
  const conversations = Object.values(state.chat.conversations)
    .sort((a, b) => (a.updatedAt < b.updatedAt ? 1 : -1));
  if (!openConversation && conversations.length) selectConversation(conversations[0].id);
  $("conversations").replaceChildren(...conversations.map((c) => el("li",
    { class: c.id === openConversation ? "open" : "", "data-id": c.id, onclick: () => selectConversation(c.id) },
    el("span", { class: "last" }, `${c.participantIds.filter((p) => p !== me).join(", ")}: ${c.lastMessage ? c.lastMessage.body : ""}`),
    el("span", { class: `badge ${c.unreadCount ? "" : "zero"}`, "data-testid": `unread-${c.id}` }, c.unreadCount),
  )));
  const conv = state.chat.conversations[openConversation];
  if (!conv) return;
  $("peers").replaceChildren("With", ...conv.participantIds.filter((p) => p !== me).map((p) => {
    const presence = state.presence[p] || { status: "OFFLINE" };
    return el("span", { "data-testid": `presence-${p}` }, el("span", { class: `dot ${presence.status}` }), `${p} (${presence.status.toLowerCase()})`);
  }));
  const messages = state.chat.messages[openConversation] || [];
  const list = $("messages");
  const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 20;
  const others = conv.participantIds.filter((p) => p !== me);
  list.replaceChildren(
    ...messages.map((m) => {
      const mine = m.senderId === me;
      const read = mine && others.length && others.every((p) => (m.readBy || []).includes(p));
      const delivered = mine && (m.deliveredTo || []).length > 0;
      return el("li", { class: mine ? "mine" : "", "data-id": m.id, "data-body": m.body },
        el("span", { class: "who" }, name(m.senderId)), m.body,
        mine ? el("span", { class: `receipt ${read ? "read" : ""}`, title: read ? "read" : delivered ? "delivered" : "sent" },
          read ? "✓✓" : delivered ? "✓" : "·") : "");
    }),
    ...(state.chat.pending[openConversation] || []).map((m) =>
      el("li", { class: "mine pending", "data-pending": m.clientMessageId }, el("span", { class: "who" }, "you · queued"), m.body)),
  );
  if (atBottom) list.scrollTop = list.scrollHeight;
  const typing = (state.chat.typing[openConversation] || []).filter((u) => u !== me);
  $("typing").textContent = typing.length ? `${typing.join(", ")} ${typing.length > 1 ? "are" : "is"} typing…` : "";
}

function renderSide(state) {
  const unread = state.notifications.unread;
  $("badge").textContent = unread ?? "";
  $("badge").classList.toggle("zero", !unread);
  $("notifications").replaceChildren(...state.notifications.items.slice(0, 5).map((n) =>
    el("li", { class: n.readAt ? "" : "unread" }, n.text)));
  $("events").replaceChildren(...Object.values(state.events).map((e) => el("div", { class: "event", "data-id": e.id },
    el("strong", {}, e.title), el("div", { class: "muted" }, `hosted by ${name(e.hostId)}`),
    el("div", {},
      el("span", { class: "counter", "data-testid": "rsvp-going" }, e.going), "going ",
      el("span", { class: "counter", "data-testid": "rsvp-interested" }, e.interested), "interested ",
      el("span", { class: "muted" }, `· ${e.checkedIn} checked in`)),
    el("div", { class: "actions" }, ...["GOING", "INTERESTED", "NOT_GOING"].map((status) =>
      el("button", { class: e.viewerRsvp === status ? "on" : "", onclick: () => rsvp(e.id, status) }, status.replace("_", " ").toLowerCase()))),
  )));
  const pending = Object.values(state.follow.pending || {});
  $("follows").replaceChildren(...(pending.length ? pending.map((r) => el("li", {},
    `${r.fromUserId} wants to follow you`,
    el("button", { onclick: () => answerFollow(r.id, true) }, "accept"),
    el("button", { onclick: () => answerFollow(r.id, false) }, "decline"))) : [el("li", { class: "muted" }, "none pending")]));
}

/** Record ids shortened for the table (`cnv_01a22f…e0d9d8`): the keys stay readable. */
function short(text) {
  return String(text).replace(/\b([a-z]{3}_)[0-9a-f]{6,}([0-9a-f]{6})\b/g, "$1…$2");
}

function cell(value) {
  return value === undefined ? "–" : short(JSON.stringify(value));
}

function renderParity() {
  const results = client.parity.results;
  const rows = [];
  let matching = 0;
  let compared = 0;
  for (const [domain, result] of Object.entries(results)) {
    compared += 1;
    if (result.outcome === "match") matching += 1;
    const keys = new Set([...Object.keys(result.push || {}), ...Object.keys(result.poll || {})]);
    for (const key of [...keys].sort()) {
      const push = result.push ? result.push[key] : undefined;
      const poll = result.poll[key];
      const same = JSON.stringify(push) === JSON.stringify(poll);
      rows.push(el("tr", { class: same ? "" : "mismatch", "data-domain": domain },
        el("td", { class: "key", title: key }, short(key)), el("td", {}, cell(push)), el("td", {}, cell(poll)),
        el("td", { class: same ? "ok" : "bad" }, same ? "✓" : "✗")));
    }
  }
  $("parity").tBodies[0].replaceChildren(...rows);
  const last = client.parity.lastBeacon;
  const poll = client.parity.lastPoll;
  $("parity-summary").textContent = compared
    ? `${matching}/${compared} domains match at seq ${Object.values(results)[0].seq}` +
      (poll ? ` · polled ${Math.round((Date.now() - poll.at) / 1000)} s ago` : "") +
      ` · beacons sent ${client.stats.beaconsSent} at sample rate ${client.parity.sampleRate}` +
      (last && last.response && last.response.error ? ` · last refused: ${last.response.error.code}` : "")
    : `waiting for a poll to compare (push at seq ${client.pushState.seq ?? "–"})`;
  $("stages").tBodies[0].replaceChildren(...Object.entries(client.plan).map(([domain, step]) => el("tr", {},
    el("td", {}, domain), el("td", {}, step.stage), el("td", {}, step.render),
    el("td", {}, step.pollEveryMs === null ? "no" : `every ${step.pollEveryMs / 1000} s`))));
  $("log").replaceChildren(...log.slice(-40).reverse().map((line) => el("li", {}, line)));
}

let frame = null;
function render() {
  if (frame !== null) return;
  frame = requestAnimationFrame(() => {
    frame = null;
    renderStatus();
    renderChat(client.state);
    renderSide(client.state);
    renderParity();
  });
}

// -- actions --------------------------------------------------------------------------

function selectConversation(id) {
  if (openConversation === id) return;
  if (openConversation) client.unsubscribe(`conversation:${openConversation}`).catch(() => {});
  openConversation = id;
  client.subscribe(`conversation:${id}`).catch(() => {});
  client.loadMessages(id).then(() => markRead(), () => {});
  const conv = client.state.chat.conversations[id];
  if (conv) client.watchPresenceOf(conv.participantIds.filter((p) => p !== me)).catch(() => {});
  render();
}

let readUpTo = null;

/** The open conversation is read while it is on screen: one chat.read per new last message. */
function markRead() {
  const conv = client.state.chat.conversations[openConversation];
  if (!conv || !conv.unreadCount || document.visibilityState === "hidden" || client.status !== "online") return;
  const last = conv.lastMessage ? conv.lastMessage.id : null;
  if (readUpTo === `${openConversation}:${last}`) return;
  readUpTo = `${openConversation}:${last}`;
  client.request("chat.read", { conversationId: openConversation }).catch(() => {
    readUpTo = null;
  });
}

async function rsvp(eventId, status) {
  await client.graphql("mutation R($e: ID!, $s: RsvpStatus!) { setRsvp(eventId: $e, status: $s) { status } }", { e: eventId, s: status });
}

async function answerFollow(id, accept) {
  await client.graphql("mutation F($id: ID!, $a: Boolean!) { respondFollowRequest(id: $id, accept: $a) { status } }", { id, a: accept });
}

function send(body) {
  if (!openConversation || !body.trim()) return null;
  typingSent = 0;
  client.request("chat.typing", { conversationId: openConversation, state: "stopped" }).catch(() => {});
  return client.sendMessage(openConversation, body);
}

$("compose").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("body");
  send(input.value);
  input.value = "";
});

$("body").addEventListener("input", () => {
  if (!openConversation || client.status !== "online") return;
  const now = Date.now();
  if (now - typingSent > 3000) {
    typingSent = now;
    client.request("chat.typing", { conversationId: openConversation, state: "started" }).catch(() => {});
  }
  clearTimeout(typingStop);
  typingStop = setTimeout(() => {
    typingSent = 0;
    client.request("chat.typing", { conversationId: openConversation, state: "stopped" }).catch(() => {});
  }, 2500);
});

$("read-all").addEventListener("click", () => {
  client.graphql("mutation { markNotificationsRead(all: true) }").catch(() => {});
});
$("cut").addEventListener("click", () => client.dropSocket());
$("block").addEventListener("change", (event) => client.setPushBlocked(event.target.checked));

client.on("state", () => {
  markRead();
  render();
});
client.on("status", (status, previous) => {
  log.push(`status ${previous} → ${status}`);
  if (status === "online") markRead();
  render();
});
client.on("leader", render);
client.on("beacon", render);
client.on("parity", render);
client.on("*", (envelope) => {
  log.push(`${envelope.seq ?? "·"} ${envelope.type}`);
  if (log.length > 200) log.splice(0, log.length - 200);
  if (envelope.type !== "chat.message" || !client.isLeader) return;
  const message = envelope.payload.message;
  if (message.senderId === me || seenMessages.has(message.id)) return;
  seenMessages.add(message.id);
  client.request("chat.delivered", { conversationId: message.conversationId, messageIds: [message.id] }).catch(() => {});
  if (message.conversationId === openConversation) markRead();
});
document.addEventListener("visibilitychange", markRead);

renderUsers();
window.cutover = client;
window.demo = { me, send, selectConversation, get openConversation() { return openConversation; }, log };
await client.start();
render();
