// Test doubles for the SDK's unit tests: a clock whose timers advance on demand,
// an in-memory server speaking both paths (GraphQL and WebSocket) closely
// enough to drive a client, and BroadcastChannel instances joined by a hub.

/** Let every pending promise callback run (the SDK's own timers are the clock's). */
export async function flush(rounds = 5) {
  for (let i = 0; i < rounds; i++) await new Promise((resolve) => setImmediate(resolve));
}

export class FakeClock {
  constructor(start = 1_750_000_000_000) {
    this.time = start;
    this.nextId = 1;
    this.timers = new Map();
    this.setTimeout = (fn, ms) => this._add(fn, ms, null);
    this.setInterval = (fn, ms) => this._add(fn, ms, ms);
    this.clearTimeout = (id) => this.timers.delete(id);
    this.clearInterval = (id) => this.timers.delete(id);
    this.now = () => this.time;
  }

  _add(fn, ms, every) {
    const id = this.nextId++;
    this.timers.set(id, { at: this.time + Math.max(0, Number(ms) || 0), fn, every, id });
    return id;
  }

  /** Move time forward by `ms`, firing due timers in order and settling promises between them. */
  async advance(ms) {
    const end = this.time + ms;
    await flush();
    for (;;) {
      let next = null;
      for (const timer of this.timers.values()) {
        if (timer.at <= end && (next === null || timer.at < next.at || (timer.at === next.at && timer.id < next.id))) next = timer;
      }
      if (next === null) break;
      this.time = Math.max(this.time, next.at);
      if (next.every === null) this.timers.delete(next.id);
      else next.at += next.every;
      next.fn();
      await flush();
    }
    this.time = end;
    await flush();
  }

  get pending() {
    return this.timers.size;
  }
}

/** A JWT-shaped token (unsigned: the fake server trusts it) for `sub`, expiring at `exp` (s). */
export function fakeToken(sub, exp, extra = {}) {
  const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString("base64url");
  return `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, exp, aud: "cutover", ...extra })}.signature`;
}

export const ALL_LIVE = {
  notification: { stage: "LIVE", pollIntervalMs: 30000 },
  chat: { stage: "LIVE", pollIntervalMs: 30000 },
  follow: { stage: "LIVE", pollIntervalMs: 30000 },
  event: { stage: "LIVE", pollIntervalMs: 30000 },
  organization: { stage: "OFF", pollIntervalMs: 30000 },
  activity: { stage: "OFF", pollIntervalMs: 30000 },
  presence: { stage: "OFF", pollIntervalMs: 30000 },
};

/**
 * One user's server: a notification badge and one conversation, an event stream
 * with `seq`, tickets, and sockets that follow the contract's session rules
 * (welcome, resume with replay, reset, replies). `down` makes every request and
 * handshake fail as if the host were unreachable.
 */
export class FakeServer {
  constructor(clock, { user = "alice", stages = ALL_LIVE, sampleRate = 0, maxPerMinute = 6 } = {}) {
    this.clock = clock;
    this.user = user;
    this.stages = structuredClone(stages);
    this.sampleRate = sampleRate;
    this.maxPerMinute = maxPerMinute;
    this.epoch = "ep1";
    this.seq = 0;
    this.events = [];
    this.unread = 0;
    this.messages = [];
    this.down = false; // the host is unreachable: HTTP and WebSocket
    this.httpDown = false;
    this.wsDown = false; // the push path alone is down (a proxy that drops upgrades)
    this.sockets = [];
    this.opened = 0;
    this.tickets = new Set();
    this.requests = [];
    this.beacons = [];
    this.refreshes = [];
    this.retainFrom = 1; // the oldest seq still held (resume before it: HISTORY_EXPIRED)
    this.skewUnread = 0; // a wrong badge on the polling path, to make parity fail
    const server = this;
    this.fetch = (url, init) => server._fetch(url, init);
    this.WebSocket = class extends FakeSocket {
      constructor(url) {
        super(server, url);
      }
    };
  }

  get open() {
    return this.sockets.filter((s) => s.readyState === 1);
  }

  // -- the state and its events ------------------------------------------------------

  _append(type, payload) {
    this.seq += 1;
    const envelope = { v: 1, id: `evt_${this.epoch}_${this.seq}`, type, seq: this.seq, sentAt: new Date(this.clock.now()).toISOString(), payload };
    this.events.push(envelope);
    for (const socket of this.open) socket._live(envelope);
    return envelope;
  }

  notify(text = "hello") {
    this.unread += 1;
    return this._append("notification.new", {
      notification: { id: `ntf_${this.seq + 1}`, kind: "TEST", text, data: null, createdAt: new Date(this.clock.now()).toISOString(), readAt: null },
      unreadCount: this.unread,
    });
  }

  message(body, { sender = "bob", clientMessageId = null } = {}) {
    const existing = clientMessageId && this.messages.find((m) => m.clientMessageId === clientMessageId);
    if (existing) return existing;
    const message = {
      id: `msg_${this.messages.length + 1}`, conversationId: "c1", senderId: sender, body,
      createdAt: new Date(this.clock.now() + this.messages.length).toISOString(), clientMessageId,
      deliveredTo: [], readBy: [],
    };
    this.messages.push(message);
    this._append("chat.message", { message });
    this._append("chat.conversation.updated", { conversation: this._conversation(), totalUnread: this._unreadChat() });
    return message;
  }

  _unreadChat() {
    return this.messages.filter((m) => m.senderId !== this.user).length;
  }

  _conversation() {
    return {
      id: "c1", participantIds: [this.user, "bob"], lastMessage: this.messages.at(-1) || null,
      unreadCount: this._unreadChat(), lastReadMessageId: null, updatedAt: new Date(this.clock.now()).toISOString(),
    };
  }

  /** Forget the history (a new epoch): a resume from before gets session.reset. */
  newEpoch() {
    this.epoch = `ep${Number(this.epoch.slice(2)) + 1}`;
    this.seq = 0;
    this.events = [];
    this.retainFrom = 1;
  }

  kill() {
    for (const socket of [...this.sockets]) socket._serverClose(1006, "");
  }

  // -- HTTP --------------------------------------------------------------------------

  async _fetch(url, init) {
    const path = new URL(url).pathname;
    const body = JSON.parse(init.body || "{}");
    const auth = (init.headers || {}).Authorization || "";
    this.requests.push({ path, body, auth });
    if (this.down || this.httpDown) throw new TypeError("Failed to fetch");
    const token = auth.replace(/^Bearer /, "");
    const claims = JSON.parse(Buffer.from(token.split(".")[1] || "", "base64url").toString() || "{}");
    if (!claims.exp || claims.exp * 1000 <= this.clock.now()) {
      return response(401, { error: { code: "TOKEN_EXPIRED", message: "expired" } });
    }
    if (path === "/realtime/tickets") {
      const ticket = `tkt_${this.tickets.size + 1}_${this.clock.now()}`;
      this.tickets.add(ticket);
      return response(201, { ticket, expiresAt: new Date(this.clock.now() + 30000).toISOString() });
    }
    if (path === "/realtime/parity") {
      this.beacons.push(body);
      return response(202, { accepted: body.samples.length });
    }
    if (path === "/graphql") return response(200, { data: this._graphql(body.query, body.variables || {}) });
    return response(404, { error: { code: "NOT_FOUND", message: path } });
  }

  _graphql(query, variables) {
    if (query.includes("sendChatMessage")) {
      return { sendChatMessage: this.message(variables.b, { sender: this.user, clientMessageId: variables.k }) };
    }
    if (query.includes("messages(")) return { messages: this.messages.slice(-variables.n) };
    const data = { realtimeCursor: { epoch: this.epoch, seq: this.seq } };
    if (query.includes("realtimeConfig")) {
      data.me = { id: this.user, name: this.user };
      data.realtimeConfig = {
        websocketUrl: "ws://gateway.test/ws",
        domains: Object.entries(this.stages).map(([domain, d]) => ({ domain, ...d })),
      };
    }
    if (query.includes("unreadNotificationCount")) {
      data.unreadNotificationCount = this.unread + this.skewUnread;
      data.notifications = { items: [] };
    }
    if (query.includes("chatUnreadCount")) {
      data.chatUnreadCount = this._unreadChat();
      data.conversations = [this._conversation()];
    }
    if (query.includes("followRequests")) data.followRequests = [];
    return data;
  }
}

function response(status, body) {
  return {
    status,
    headers: { get: (name) => (name.toLowerCase() === "retry-after" && status === 429 ? "2" : null) },
    json: async () => structuredClone(body),
  };
}

class FakeSocket {
  constructor(server, url) {
    this.server = server;
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.onopen = null;
    this.onmessage = null;
    this.onclose = null;
    this.onerror = null;
    this.ticket = new URL(url).searchParams.get("ticket");
    server.sockets.push(this);
    server.clock.setTimeout(() => this._handshake(), 1);
  }

  _handshake() {
    if (this.readyState !== 0) return;
    const server = this.server;
    if (server.down || server.wsDown || !server.tickets.has(this.ticket)) {
      this._serverClose(1006, "");
      return;
    }
    server.tickets.delete(this.ticket); // single use
    server.opened += 1;
    this.readyState = 1;
    if (this.onopen) this.onopen({});
    this._deliver({
      v: 1, id: `evt_welcome_${server.opened}`, type: "session.welcome",
      payload: {
        connectionId: `conn_${server.opened}`, userId: server.user, epoch: server.epoch, seq: server.seq,
        heartbeatIntervalMs: 30000, idleTimeoutMs: 75000, protocol: { min: 1, max: 1 },
        domains: structuredClone(server.stages), limits: { maxFrameBytes: 65536, actionsPerSecond: 20 },
        parity: { sampleRate: server.sampleRate, maxPerMinute: server.maxPerMinute, endpoint: "/realtime/parity" },
      },
    });
  }

  _deliver(...envelopes) {
    const text = envelopes.map((e) => JSON.stringify(e)).join("\n");
    this.server.clock.setTimeout(() => {
      if (this.readyState === 1 && this.onmessage) this.onmessage({ data: text });
    }, 1);
  }

  _live(envelope) {
    if (!this.holdLive) this._deliver(envelope);
  }

  _reply(type, payload, replyTo) {
    this._deliver({ v: 1, id: `evt_r${Math.random()}`, type, sentAt: new Date(this.server.clock.now()).toISOString(), replyTo, payload });
  }

  send(text) {
    if (this.readyState !== 1) throw new Error("not open");
    const frame = JSON.parse(text);
    this.sent.push(frame);
    const server = this.server;
    const p = frame.payload || {};
    switch (frame.action) {
      case "session.resume": {
        if (p.epoch !== server.epoch || p.lastSeq > server.seq || p.lastSeq + 1 < server.retainFrom) {
          const reason = p.epoch !== server.epoch ? "EPOCH_CHANGED" : "HISTORY_EXPIRED";
          this._reply("session.reset", { reason, epoch: server.epoch, seq: server.seq }, frame.id);
          return;
        }
        const replay = server.events.filter((e) => e.seq > p.lastSeq && !(this.dropSeqs || []).includes(e.seq));
        if (replay.length) this._deliver(...replay);
        this._reply("session.resumed", { fromSeq: p.lastSeq + 1, toSeq: server.seq }, frame.id);
        return;
      }
      case "ping":
        this._reply("ping.pong", { serverTime: new Date(server.clock.now()).toISOString() }, frame.id);
        return;
      case "auth.refresh":
        server.refreshes.push(p.token);
        if (this.refuseRefresh) {
          this._reply("error", { code: "UNAUTHORIZED", message: "refused" }, frame.id);
          return;
        }
        this._reply("ack", { expiresAt: new Date(server.clock.now() + 60000).toISOString() }, frame.id);
        return;
      case "chat.send": {
        if (this.unauthorizedOnce) {
          this.unauthorizedOnce = false;
          this._reply("error", { code: "UNAUTHORIZED", message: "token revoked" }, frame.id);
          return;
        }
        const message = server.message(p.body, { sender: server.user, clientMessageId: p.clientMessageId });
        this._reply("ack", { message }, frame.id);
        return;
      }
      default:
        this._reply("ack", {}, frame.id);
    }
  }

  close(code = 1000, reason = "") {
    if (this.readyState >= 2) return;
    this.readyState = 3;
    this.closedBy = "client";
    this.closeCode = code;
    this.server.clock.setTimeout(() => this.onclose && this.onclose({ code, reason }), 1);
  }

  _serverClose(code, reason) {
    if (this.readyState >= 2) return;
    this.readyState = 3;
    this.closedBy = "server";
    this.closeCode = code;
    this.server.clock.setTimeout(() => this.onclose && this.onclose({ code, reason }), 1);
  }
}

/** BroadcastChannel instances of one browser: a message reaches every other instance of the name. */
export class ChannelHub {
  constructor(clock) {
    this.clock = clock;
    this.members = new Set();
    const hub = this;
    this.BroadcastChannel = class {
      constructor(name) {
        this.name = name;
        this.onmessage = null;
        this.closed = false;
        hub.members.add(this);
      }

      postMessage(data) {
        if (this.closed) throw new Error("channel closed");
        const copy = structuredClone(data);
        for (const member of hub.members) {
          if (member === this || member.name !== this.name) continue;
          hub.clock.setTimeout(() => !member.closed && member.onmessage && member.onmessage({ data: copy }), 1);
        }
      }

      close() {
        this.closed = true;
        hub.members.delete(this);
      }
    };
  }
}

/** A client wired to the fakes (`createClient` from the module under test). */
export function fakeClient(createClient, server, clock, options = {}) {
  let serial = 0;
  const ttl = options.ttlS ?? 3600;
  const tokens = [];
  const client = createClient({
    graphqlUrl: "http://gateway.test/graphql",
    getToken: async () => {
      serial += 1;
      const token = fakeToken(server.user, Math.floor(clock.now() / 1000) + ttl, { n: serial });
      tokens.push(token);
      return token;
    },
    WebSocket: server.WebSocket,
    fetch: server.fetch,
    BroadcastChannel: null,
    timers: clock,
    now: clock.now,
    storage: null,
    network: null,
    random: options.random || (() => 0.5),
    ...options,
  });
  client.tokens = tokens;
  return client;
}
