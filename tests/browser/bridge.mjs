// Headless Chromium (Debian's /usr/bin/chromium) driven by playwright-core for the
// Python browser tests: one JSON request per stdin line, one JSON answer per
// stdout line ({id, ok, result} or {id, ok: false, error}).
//
// Each page records, through the DevTools protocol, the WebSockets it opens
// (URL, handshake status and Sec-WebSocket-Extensions, close) and its console.
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ARGS });
const contexts = new Map();
const pages = new Map();
let serial = 0;

async function openPage({ context, url }) {
  const ctx = contexts.get(context);
  const page = await ctx.newPage();
  const id = `p${++serial}`;
  const record = { page, sockets: new Map(), console: [], errors: [] };
  pages.set(id, record);
  page.on("console", (m) => record.console.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => record.errors.push(String(e && e.stack ? e.stack : e)));
  const cdp = await ctx.newCDPSession(page);
  await cdp.send("Network.enable");
  cdp.on("Network.webSocketCreated", ({ requestId, url: wsUrl }) => {
    record.sockets.set(requestId, { url: wsUrl, createdAt: Date.now(), status: null, extensions: null, closedAt: null, frames: 0 });
  });
  cdp.on("Network.webSocketHandshakeResponseReceived", ({ requestId, response }) => {
    const socket = record.sockets.get(requestId);
    if (!socket) return;
    socket.status = response.status;
    const headers = Object.fromEntries(Object.entries(response.headers || {}).map(([k, v]) => [k.toLowerCase(), v]));
    socket.extensions = headers["sec-websocket-extensions"] || "";
  });
  cdp.on("Network.webSocketFrameReceived", ({ requestId }) => {
    const socket = record.sockets.get(requestId);
    if (socket) socket.frames += 1;
  });
  cdp.on("Network.webSocketClosed", ({ requestId }) => {
    const socket = record.sockets.get(requestId);
    if (socket) socket.closedAt = Date.now();
  });
  if (url) await page.goto(url);
  return { page: id };
}

const ops = {
  async context() {
    const id = `c${++serial}`;
    contexts.set(id, await browser.newContext({ viewport: { width: 1440, height: 900 } }));
    return { context: id };
  },
  page: openPage,
  async eval({ page, expr }) {
    return pages.get(page).page.evaluate(expr);
  },
  async wait({ page, expr, timeoutMs = 10_000, polling = 20 }) {
    const handle = await pages.get(page).page.waitForFunction(expr, null, { timeout: timeoutMs, polling });
    return handle.jsonValue();
  },
  async fill({ page, selector, text }) {
    await pages.get(page).page.fill(selector, text);
    return null;
  },
  async click({ page, selector }) {
    await pages.get(page).page.click(selector);
    return null;
  },
  async module({ page, code }) {
    await pages.get(page).page.addScriptTag({ content: code, type: "module" });
    return null;
  },
  async screenshot({ page, path, fullPage = false }) {
    await pages.get(page).page.screenshot({ path, fullPage });
    return path;
  },
  async sockets({ page }) {
    return [...pages.get(page).sockets.values()];
  },
  async logs({ page }) {
    const record = pages.get(page);
    return { console: record.console, errors: record.errors };
  },
  async close({ page }) {
    const record = pages.get(page);
    pages.delete(page);
    await record.page.close({ runBeforeUnload: true });
    return null;
  },
  async quit() {
    await browser.close();
    setImmediate(() => process.exit(0));
    return null;
  },
};

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const request = JSON.parse(line);
  ops[request.op](request).then(
    (result) => process.stdout.write(`${JSON.stringify({ id: request.id, ok: true, result: result ?? null })}\n`),
    (error) => process.stdout.write(`${JSON.stringify({ id: request.id, ok: false, error: String(error && error.message ? error.message : error) })}\n`),
  );
}
await browser.close();
