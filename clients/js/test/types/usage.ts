// Compiled (never run) by tests/clients/test_types.py: the declarations describe
// the SDK as an app uses it, with `strict` on.
import {
  type Beacon,
  type Client,
  type Envelope,
  type Message,
  type State,
  type Status,
  backoffDelay,
  createClient,
  pathPlan,
  reduce,
  emptyState,
} from "../../cutover.js";

const client: Client = createClient({
  graphqlUrl: "https://api.example.com/graphql",
  getToken: async ({ force }) => (force ? "fresh.jwt.token" : "cached.jwt.token"),
  watchEvents: ["gth_1"],
  hybrid: true,
  backoff: { baseMs: 250, maxMs: 10_000 },
});

client.on("status", (status: Status, previous: Status) => console.log(previous, "->", status));
client.on("state", (state: State) => {
  const badge: number | null = state.notifications.unread;
  const total: number | null = state.chat.totalUnread;
  const going: number | undefined = state.events["gth_1"]?.going;
  console.log(badge, total, going);
});
client.on("chat.message", (envelope: Envelope) => console.log(envelope.seq, envelope.payload));
client.on("beacon", (beacon: Beacon, response: unknown) => console.log(beacon.samples[0]?.outcome, response));

async function main(): Promise<void> {
  await client.start();
  const message: Message = await client.sendMessage("cnv_1", "hello");
  const pong = await client.request<{ serverTime: string }>("ping");
  await client.subscribe(`conversation:${message.conversationId}`);
  const data = await client.graphql<{ me: { id: string } }>("{ me { id } }");
  console.log(pong.serverTime, data.me.id, client.plan.chat?.render, client.stats.resumes);
  const next: State = reduce(emptyState("alice"), { type: "notification.read", seq: 1, payload: { unreadCount: 0 } });
  const plan = pathPlan({ chat: { stage: "LIVE", pollIntervalMs: 5000 } }, { status: "polling" });
  console.log(next.seq, plan.chat.pollEveryMs, backoffDelay(3));
  client.stop();
}

void main();
