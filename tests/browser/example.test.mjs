// The example page of examples/live-page, served by a site of its own on one port, against
// the real oddsbus on another: the client module imported cross-origin, live updates, a
// change refetched cross-origin, and a dropped connection that resumes.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import { once } from "node:events";
import path from "node:path";
import { chromium } from "playwright-core";
import {
  ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, ROOT, eventually, ingest, startServer, stopServer, textOf,
} from "./helpers.mjs";

/** A site of its own for the example page, on 127.0.0.1 and a free port. */
async function site() {
  const page = fs.readFileSync(path.join(ROOT, "examples/live-page/index.html"));
  const server = http.createServer((request, response) => {
    if (request.url.split("?")[0] !== "/") {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(page);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return server;
}

const price = (eventId) => `#rows tr[data-key="${eventId}:betpawa"] td.price`;

test("a page on another site, live through the client module", async (t) => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const pages = await site();
  const origin = `http://127.0.0.1:${pages.address().port}`;
  const server = await startServer("127.0.0.1:0", ["--allowed-origins", origin]);
  const base = `http://${server.addr}`;
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(error.message));
  page.on("console", (message) => {
    if (message.type() === "error") errors.push(message.text());
  });
  const requests = [];
  page.on("request", (request) => requests.push(request.url()));
  try {
    await ingest(base, "betpawa", 901, 2.1);

    await t.test("it imports the module from the broker and goes live", async () => {
      await page.goto(`${origin}/?broker=${base}`);
      await page.waitForSelector('#status[data-state="live"]');
      await eventually(async () => (await textOf(page, price(901))) === "2.10", "the first load");
      assert.ok(requests.includes(`${base}/oddsbus-client.js`), "imported from the broker");
    });

    await t.test("a change is pushed and refetched from the broker", async () => {
      const reads = requests.filter((url) => url.startsWith(`${base}/api/events/odds`)).length;
      await ingest(base, "betpawa", 901, 2.25);
      await eventually(async () => (await textOf(page, price(901))) === "2.25", "the change");
      const after = requests.filter((url) => url.startsWith(`${base}/api/events/odds`));
      assert.ok(after.length > reads, "refetched cross-origin");
      assert.ok(after.at(-1).includes("ids=901"), after.at(-1));
    });

    await t.test("a dropped connection comes back and catches up", async () => {
      await page.evaluate(() => window.bus.socket.close()); // as a network drop would
      await page.waitForSelector('#status[data-state="reconnecting"]');
      await ingest(base, "betpawa", 902, 1.95); // most likely while it is away
      await page.waitForSelector('#status[data-state="live"]');
      await eventually(async () => (await textOf(page, price(902))) === "1.95", "the missed event");
      assert.ok(await page.isVisible(price(902)));
      await page.screenshot({ path: path.join(ARTIFACTS, "example-page.png") });
    });

    assert.deepEqual(errors, [], "no script or CORS errors on the page");
  } finally {
    await browser.close();
    await stopServer(server);
    pages.close();
  }
});
