// Type declarations of cutover.js, the browser SDK of Cutover.

export const PROTOCOL_VERSION: 1;
export type Domain = "notification" | "chat" | "follow" | "event" | "organization" | "activity" | "presence";
export type ParityDomain = "notification" | "chat" | "follow" | "event";
export type Stage = "OFF" | "SHADOW" | "LIVE" | "RAMPDOWN" | "COMPLETE";
export type Status = "connecting" | "online" | "reconnecting" | "polling" | "offline";
export const DOMAINS: readonly Domain[];
export const PARITY_DOMAINS: readonly ParityDomain[];
export const STAGES: readonly Stage[];
export const STATUSES: readonly Status[];

/** A server frame's envelope (PROTOCOL.md 2.1). */
export interface Envelope<P = any> {
  v: 1;
  id: string;
  type: string;
  seq?: number;
  sentAt: string;
  replyTo?: string | null;
  payload: P;
}

export interface Message {
  id: string;
  conversationId: string;
  senderId: string;
  body: string;
  createdAt: string;
  clientMessageId: string | null;
  deliveredTo: string[];
  readBy: string[];
}

export interface Conversation {
  id: string;
  participantIds: string[];
  lastMessage: Message | null;
  unreadCount: number;
  lastReadMessageId: string | null;
  updatedAt: string;
}

export interface Notification {
  id: string;
  kind: string;
  text: string;
  data: string | null;
  createdAt: string;
  readAt: string | null;
}

export interface FollowRequest {
  id: string;
  fromUserId: string;
  toUserId: string;
  status: "PENDING" | "ACCEPTED" | "REJECTED";
  createdAt: string;
  updatedAt: string;
}

export interface EventEntry {
  id: string;
  title: string;
  hostId: string;
  startsAt: string;
  going: number;
  interested: number;
  checkedIn: number;
  attendeesPreview: string[];
  viewerRsvp: "GOING" | "INTERESTED" | "NOT_GOING" | null;
  viewerSaved: boolean;
  /** RSVP counts as of the state's seq (durable events only): what parity compares. */
  counts: [number, number];
}

export interface PendingMessage {
  clientMessageId: string;
  body: string;
  createdAt: string;
}

/** The state a client holds for its user; `null` means "not held yet". */
export interface State {
  userId: string | null;
  epoch: string | null;
  seq: number | null;
  notifications: { unread: number | null; items: Notification[] };
  chat: {
    totalUnread: number | null;
    conversations: Record<string, Conversation>;
    messages: Record<string, Message[]>;
    typing: Record<string, string[]>;
    /** Messages in the offline queue, per conversation. */
    pending: Record<string, PendingMessage[]>;
  };
  follow: { pending: Record<string, FollowRequest> | null; sent: Record<string, FollowRequest> };
  events: Record<string, EventEntry>;
  presence: Record<string, { status: "ONLINE" | "AWAY" | "OFFLINE"; lastSeenAt: string | null }>;
  feed: any[];
  announcements: any[];
  notices: { id: string; text: string; severity: string }[];
}

export interface DomainStage {
  stage: Stage;
  pollIntervalMs: number | null;
}

export interface PlanStep {
  stage: Stage;
  render: "push" | "poll";
  pollEveryMs: number | null;
  compare: boolean;
}

export interface BeaconSample {
  domain: ParityDomain;
  stage: "SHADOW" | "LIVE" | "RAMPDOWN";
  outcome: "match" | "mismatch" | "unaligned";
  keys: number;
  mismatched?: string[];
  latencyMs?: { push: number[]; poll: number[] };
}

/** The body of `POST /realtime/parity` (README, "Parity beacons"). */
export interface Beacon {
  v: 1;
  userId: string;
  cursor: { epoch: string; seq: number };
  samples: BeaconSample[];
}

export interface ParityResult {
  outcome: "match" | "mismatch" | "unaligned";
  seq: number;
  mismatched: string[];
  push: Record<string, unknown> | null;
  poll: Record<string, unknown>;
}

export interface Timers {
  setTimeout(fn: () => void, ms: number): any;
  clearTimeout(handle: any): void;
  setInterval(fn: () => void, ms: number): any;
  clearInterval(handle: any): void;
}

export interface ClientOptions {
  /** The app's way to get the user's JWT; `force` asks for a new one (refresh). */
  getToken(options: { force: boolean }): string | Promise<string>;
  /** Default `/graphql` of the page's origin; tickets and beacons go to the same origin. */
  graphqlUrl?: string;
  ticketUrl?: string;
  parityUrl?: string;
  /** The WebSocket URL; default: realtimeConfig's `websocketUrl`, else `/ws` beside graphqlUrl. */
  url?: string;
  /** Events whose RSVP counters the state keeps (and whose `event:<id>` topics it subscribes). */
  watchEvents?: string[];
  /** Users whose presence the state keeps. */
  watchPresence?: string[];
  /** Poll push-rendered domains only while disconnected (default false: LIVE keeps polling). */
  hybrid?: boolean;
  /** Failed reconnects before the polling fallback (default 5). */
  fallbackAfter?: number;
  backoff?: { baseMs?: number; maxMs?: number };
  /** Poll interval of a domain without one (COMPLETE) while falling back (default 10 s). */
  fallbackIntervalMs?: number;
  requestTimeoutMs?: number;
  /** How long a comparison waits for push to reach a poll's cursor (default 3 s). */
  parityWindowMs?: number;
  /** Share one socket between the tabs of a browser (default true when BroadcastChannel exists). */
  shareTabs?: boolean;
  channelName?: string;
  tabHeartbeatMs?: number;
  tabTimeoutMs?: number;
  tabElectionMs?: number;
  /** Send queued chat messages over GraphQL while push is down (default true). */
  sendOverGraphql?: boolean;
  /** Where the offline queue persists (default localStorage; null: memory only). */
  storage?: Pick<Storage, "getItem" | "setItem"> | null;
  // Injected for tests and non-browser hosts:
  WebSocket?: any;
  fetch?: typeof fetch;
  BroadcastChannel?: any;
  timers?: Timers;
  now?: () => number;
  random?: () => number;
  network?: { addEventListener(type: "online" | "offline", fn: () => void): void } | null;
}

export class CutoverError extends Error {
  code: string;
  status?: number;
  retryAfterMs?: number;
  path?: string;
  readonly permanent: boolean;
  constructor(code: string, message?: string, extra?: { status?: number; retryAfterMs?: number; path?: string });
}

type Listener = (...args: any[]) => void;

export class Client {
  constructor(options: ClientOptions);
  readonly state: State;
  readonly pushState: State;
  readonly pollState: State;
  readonly status: Status;
  readonly stages: Record<string, DomainStage>;
  readonly plan: Record<string, PlanStep>;
  readonly welcome: any;
  readonly isLeader: boolean;
  readonly leaderId: string | null;
  readonly tabId: string;
  readonly ready: Promise<void> | null;
  readonly stats: Record<string, number>;
  readonly parity: {
    sampleRate: number;
    maxPerMinute: number;
    lastBeacon: { at: number; beacon: Beacon; response: any } | null;
    results: Partial<Record<ParityDomain, ParityResult>>;
    lastPoll: { epoch: string; seq: number; at: number; domains: string[] } | null;
  };

  start(): Promise<void>;
  stop(): void;
  on(type: "status", fn: (status: Status, previous: Status) => void): () => void;
  on(type: "state", fn: (state: State) => void): () => void;
  on(type: "leader", fn: (isLeader: boolean, leaderId: string | null) => void): () => void;
  on(type: "beacon", fn: (beacon: Beacon, response: any) => void): () => void;
  on(type: "parity", fn: (comparison: { epoch: string; seq: number; samples: BeaconSample[] }) => void): () => void;
  on(type: "error", fn: (error: Error) => void): () => void;
  on(type: string, fn: (envelope: Envelope) => void): () => void;
  off(type: string, fn: Listener): void;
  request<T = any>(action: string, payload?: object, options?: { timeoutMs?: number }): Promise<T>;
  subscribe(topic: string): Promise<unknown>;
  unsubscribe(topic: string): Promise<unknown>;
  watchPresenceOf(userIds: string[]): Promise<unknown>;
  sendMessage(conversationId: string, body: string, options?: { clientMessageId?: string }): Promise<Message>;
  loadMessages(conversationId: string, last?: number): Promise<Message[]>;
  graphql<T = any>(query: string, variables?: object): Promise<T>;
  dropSocket(): Promise<unknown>;
  setPushBlocked(blocked: boolean): Promise<unknown>;
}

export function createClient(options: ClientOptions): Client;

// The pure parts.
export function backoffDelay(attempt: number, options?: { baseMs?: number; maxMs?: number; random?: () => number }): number;
export function refreshDelayMs(expSeconds: number, nowMs: number): number;
export function decodeToken(token: string): Record<string, any> | null;
export function domainOf(type: string): Domain | null;
export function emptyState(userId?: string | null): State;
export function snapshotQuery(options?: {
  domains?: readonly string[];
  watchEvents?: string[];
  watchPresence?: string[];
  conversations?: number;
  config?: boolean;
}): { query: string; variables: Record<string, unknown> };
export function applySnapshot(state: State, data: any, options?: { watchEvents?: string[] }): State;
export function reduce(state: State, envelope: Envelope | { type: string; payload: any; seq?: number }): State;
export function mergeMessages(list: Message[] | undefined, messages: Message[]): Message[];
export function parityKeys(state: State, domain: ParityDomain): Record<string, unknown>;
export function allParityKeys(state: State): Record<string, unknown>;
export function diffKeys(left: Record<string, unknown>, right: Record<string, unknown>): string[];
export function normalizeStages(domains: any): Record<string, DomainStage>;
export function pathPlan(
  stages: Record<string, DomainStage>,
  options: { status: Status; hybrid?: boolean; fallbackIntervalMs?: number },
): Record<string, PlanStep>;

export class Deduper {
  constructor(size?: number);
  seen(id: string | null | undefined): boolean;
}

export class StreamCursor {
  constructor(epoch?: string | null, seq?: number | null);
  epoch: string | null;
  seq: number | null;
  resuming: string | null;
  classify(envelope: { seq?: number }): "apply" | "duplicate" | "early" | "gap" | "ephemeral";
  advance(seq: number): void;
}

export class ConnectionMachine {
  constructor(options?: { fallbackAfter?: number; backoff?: { baseMs?: number; maxMs?: number } });
  status: Status;
  failures: number;
  start(): Status;
  synced(): Status;
  failed(): Status;
  dropped(): Status;
  serverReconnect(retryAfterMs: number): void;
  networkDown(): Status;
  networkUp(): Status;
  stop(): Status;
  nextDelay(random?: () => number): number;
}

export class TabLeader {
  constructor(options: {
    channel: { postMessage(data: any): void; onmessage: ((event: { data: any }) => void) | null; close?(): void };
    id: string;
    timers: Timers;
    heartbeatMs?: number;
    timeoutMs?: number;
    electionMs?: number;
    onChange?: (isLeader: boolean, leaderId: string | null) => void;
    onMessage?: (message: any, from: string) => void;
  });
  readonly isLeader: boolean;
  leaderId: string | null;
  start(): void;
  stop(): void;
  post(message: any): void;
}

export class OutboundQueue {
  constructor(options?: { storage?: Pick<Storage, "getItem" | "setItem"> | null; key?: string });
  items: { conversationId: string; body: string; clientMessageId: string; createdAt: string }[];
  readonly length: number;
  add(item: { conversationId: string; body: string; clientMessageId: string; createdAt: string }): void;
  remove(clientMessageId: string): void;
  replace(items: OutboundQueue["items"]): void;
}
