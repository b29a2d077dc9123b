// What the browser tests share: the real oddsbus binary on an ephemeral port, Debian's
// headless Chromium, and small waiting and reading helpers.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import crypto from "node:crypto";
import { once } from "node:events";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const BINARY = process.env.ODDSBUS_BIN ?? path.join(ROOT, "target/debug/oddsbus");
export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
export const ARTIFACTS = path.join(ROOT, "target/browser");
// Without the background-networking flags Chromium keeps dialling out, which this
// environment refuses; --no-sandbox because CI runs as root.
export const CHROMIUM_ARGS = [
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

/** Headless Chromium and a desktop-sized page; `pageErrors` collects the page's script errors. */
export async function openBrowser() {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const pageErrors = [];
  page.on("pageerror", (error) => pageErrors.push(error.message));
  return { browser, page, pageErrors };
}

/** Starts oddsbus on `listen` (200 simulated events, no periodic scrape) and resolves once
 * it logs the address it bound. */
export async function startServer(listen, extra = []) {
  return spawnServer(BINARY, [
    "--listen", listen, "--scrape-interval", "0", "--sim-events", "200", "--sim-latency-ms", "20", ...extra,
  ]);
}

/** Starts `binary` with `args` and JSON logs; resolves once it logs the address it bound. */
export async function spawnServer(binary, args) {
  const child = spawn(binary, ["--log-format", "json", "--log", "info", ...args], { stdio: ["ignore", "pipe", "inherit"] });
  const lines = readline.createInterface({ input: child.stdout });
  const addr = await new Promise((resolve, reject) => {
    lines.on("line", (line) => {
      try {
        const log = JSON.parse(line);
        if (log.event === "server.listening") resolve(log.addr);
      } catch { /* not a log line */ }
    });
    child.once("exit", (code) => reject(new Error(`oddsbus exited early with ${code}`)));
  });
  return { child, addr };
}

export async function stopServer(server) {
  if (server.child.exitCode !== null) return;
  server.child.kill("SIGTERM");
  const [code] = await once(server.child, "exit");
  assert.equal(code, 0, "oddsbus exits 0 on SIGTERM");
}

/** An HS256 JSON Web Token for `claims`, valid for ten minutes. */
export function jwt(claims, secret) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const exp = Math.floor(Date.now() / 1000) + 600;
  const input = `${part({ alg: "HS256", typ: "JWT" })}.${part({ exp, ...claims })}`;
  return `${input}.${crypto.createHmac("sha256", secret).update(input).digest("base64url")}`;
}

export async function ingest(base, source, eventId, price, token) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(`${base}/api/odds`, {
    method: "POST",
    headers,
    body: JSON.stringify({
      source,
      snapshots: [{
        event_id: eventId,
        markets: [{ market_id: "1x2", name: "1X2", outcomes: [
          { name: "1", odds: price }, { name: "X", odds: 3.2 }, { name: "2", odds: 3.5 },
        ] }],
      }],
    }),
  });
  assert.equal(response.status, 200, await response.text());
}

export async function stats(base) {
  return (await fetch(`${base}/api/ws/stats`)).json();
}

/** Polls `check` until it holds (or fails after `ms`). */
export async function eventually(check, what, ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

export const cell = (id, source, outcome) =>
  `#rows [data-event="${id}"] [data-source="${source}"][data-outcome="${outcome}"]`;
/** A price as the cell shows it, without its change since opening. */
export const price = (id, source, outcome) => `${cell(id, source, outcome)} .price`;

export async function textOf(page, selector) {
  const element = await page.$(selector);
  return element ? (await element.textContent()).trim() : null;
}

