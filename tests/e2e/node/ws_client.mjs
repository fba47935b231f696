// A Node `ws` client, as apps use it (permessage-deflate offered by default):
// connect, read the welcome, exchange pings, then send an unsupported protocol
// version and read to the close. Prints one JSON summary line on stdout.
import WebSocket from "ws";

const [url, token, pings = "20"] = process.argv.slice(2);
const ws = new WebSocket(url, { headers: { Authorization: `Bearer ${token}` } });
const envelopes = [];
const unparsable = [];
let pongs = 0;

ws.on("open", () => {
  for (let i = 0; i < Number(pings); i++) {
    ws.send(JSON.stringify({ v: 1, id: `p${i}`, action: "ping", payload: {} }));
  }
});

ws.on("message", (data) => {
  for (const line of data.toString("utf8").split("\n")) {
    try {
      const envelope = JSON.parse(line);
      envelopes.push(envelope);
      if (envelope.type === "ping.pong" && ++pongs === Number(pings)) {
        ws.send(JSON.stringify({ v: 9, id: "bad-version", action: "ping", payload: {} }));
      }
    } catch {
      unparsable.push(line.slice(0, 200));
    }
  }
});

ws.on("close", (code, reason) => {
  console.log(JSON.stringify({
    code,
    reason: reason.toString(),
    extensions: ws.extensions,
    types: envelopes.map((e) => e.type),
    last: envelopes.at(-1) ?? null,
    unparsable,
  }));
});

ws.on("error", (error) => {
  console.log(JSON.stringify({ error: String(error) }));
  process.exitCode = 1;
});
