// The live odds board in a real browser (Debian's headless Chromium, driven by playwright-core)
// against the real oddsbus binary on an ephemeral port. Run by `make test`; the screenshots
// land in target/browser/.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import {
  ARTIFACTS, openBrowser, BINARY, CHROMIUM, cell, price, eventually, ingest, jwt, startServer, stats,
  stopServer, textOf,
} from "./helpers.mjs";

test("the live odds board", async (t) => {
  assert.ok(fs.existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: install it with 'apt-get install chromium'`);
  assert.ok(fs.existsSync(BINARY), `no oddsbus binary at ${BINARY}: run 'cargo build' first`);
  fs.mkdirSync(ARTIFACTS, { recursive: true });

  let server = await startServer("127.0.0.1:0");
  const base = `http://${server.addr}`;
  const { browser, page, pageErrors } = await openBrowser();
  // Every console error fails the test, but for refused connections while the server is
  // down on purpose (the restart step).
  const consoleErrors = [];
  let outage = false;
  page.on("console", (message) => {
    if (message.type() === "error") consoleErrors.push({ text: message.text(), outage });
  });
  try {
    await ingest(base, "betpawa", 501, 2.1);
    await ingest(base, "sportybet", 501, 2.25);

    await t.test("the page connects and shows live with its connection id", async () => {
      await page.goto(`${base}/`);
      await page.waitForSelector('#status[data-state="live"]');
      assert.match(await textOf(page, "#connection-id"), /^[0-9a-f-]{36}$/);
      assert.equal(await page.isChecked('input[data-topic="odds_updates"]'), true);
    });

    await t.test("an ingest changes a price and the row shows it, best price highlighted", async () => {
      await eventually(async () => (await textOf(page, price(501, "betpawa", "1"))) === "2.10", "the first price");
      assert.equal(await textOf(page, price(501, "sportybet", "1")), "2.25");
      assert.match(await page.getAttribute(cell(501, "sportybet", "1"), "class"), /\bbest\b/);

      await ingest(base, "betpawa", 501, 2.4);
      await eventually(async () => (await textOf(page, price(501, "betpawa", "1"))) === "2.40", "the new price");
      assert.match(await page.getAttribute(cell(501, "betpawa", "1"), "class"), /\bbest\b/);
      assert.doesNotMatch(await page.getAttribute(cell(501, "sportybet", "1"), "class"), /\bbest\b/);
    });

    await t.test("turning odds_updates off stops changes and the topic count drops", async () => {
      assert.equal((await stats(base)).topics.odds_updates, 1);
      await page.click('input[data-topic="odds_updates"]');
      await eventually(async () => (await stats(base)).topics.odds_updates === 0, "the topic count to drop");
      await eventually(async () => !(await page.isChecked('input[data-topic="odds_updates"]')), "the toggle to show the server's set");

      await ingest(base, "betpawa", 501, 2.55);
      await new Promise((resolve) => setTimeout(resolve, 1000));
      assert.equal(await textOf(page, price(501, "betpawa", "1")), "2.40", "no update while unsubscribed");
    });

    await t.test("turning it back on resumes updates", async () => {
      await page.click('input[data-topic="odds_updates"]');
      await eventually(async () => (await stats(base)).topics.odds_updates === 1, "the topic count to return");
      await ingest(base, "betpawa", 501, 2.7);
      await eventually(async () => (await textOf(page, price(501, "betpawa", "1"))) === "2.70", "the resumed update");
    });

    await t.test("with odds_changes on, the odds come with the push and nothing is refetched", async () => {
      await page.click('input[data-topic="odds_changes"]');
      await eventually(async () => (await stats(base)).topics.odds_changes === 1, "the odds_changes subscription");
      const refetched = await page.evaluate(() => window.board.refetched);
      await ingest(base, "betpawa", 501, 2.85);
      await eventually(async () => (await textOf(page, price(501, "betpawa", "1"))) === "2.85", "the pushed price");
      assert.equal(await page.evaluate(() => window.board.refetched), refetched, "no refetch");
      assert.ok((await page.evaluate(() => window.board.pushed)) >= 1, "the snapshot was pushed");

      // It is a setting: a reloaded page subscribes to it again.
      await page.reload();
      await page.waitForSelector('#status[data-state="live"]');
      await eventually(async () => page.isChecked('input[data-topic="odds_changes"]'), "the kept setting");
      await eventually(async () => (await textOf(page, price(501, "betpawa", "1"))) === "2.85", "the reloaded board");
      await page.click('input[data-topic="odds_changes"]'); // back to refetching for what follows
      await eventually(async () => (await stats(base)).topics.odds_changes === 0, "odds_changes off");
    });

    await t.test("a scrape shows its progress to completion", async () => {
      await page.click("#scrape");
      await page.waitForSelector('#run-status[data-phase="completed"]', { timeout: 30000 });
      for (const platform of ["betpawa", "sportybet", "bet9ja"]) {
        const value = await page.$eval(`.platform[data-platform="${platform}"] progress`, (p) => p.value);
        assert.equal(value, 1, `${platform} bar full`);
      }
      // The scraped events arrive through odds_update and their refetches.
      await eventually(async () => Number(await textOf(page, "#event-count")) >= 200, "the scraped rows", 20000);
      await page.screenshot({ path: path.join(ARTIFACTS, "board.png") });
    });

    await t.test("a dropped connection resumes with since: only the missed events are refetched", async () => {
      const loads = await page.evaluate(() => window.board.fullLoads);
      const before = await textOf(page, "#connection-id");
      await page.evaluate(() => window.board.bus.socket.close()); // as a network drop would
      await page.waitForSelector('#status[data-state="reconnecting"]');
      // A price it does not show yet (an unchanged one publishes nothing), most likely sent
      // while it is away.
      await ingest(base, "betpawa", 501, 2.95);
      // The id is blank while reconnecting: wait for the next connection's.
      await eventually(async () => {
        const id = await textOf(page, "#connection-id");
        return /^[0-9a-f-]{36}$/.test(id) && id !== before;
      }, "a new connection");
      await eventually(async () => (await textOf(page, price(501, "betpawa", "1"))) === "2.95", "the missed change");
      assert.deepEqual(await page.evaluate(() => window.board.recovered), ["alerts", "odds_updates", "scrape_progress"]);
      assert.equal(await page.evaluate(() => window.board.fullLoads), loads, "no whole reload");
    });

    await t.test("the page reconnects by itself when the server restarts", async () => {
      const loads = await page.evaluate(() => window.board.fullLoads);
      const before = await textOf(page, "#connection-id");
      outage = true;
      await stopServer(server);
      await page.waitForSelector('#status[data-state="reconnecting"]');
      server = await startServer(server.addr); // same address: the page dials it again
      await page.waitForSelector('#status[data-state="live"]', { timeout: 20000 });
      outage = false;
      assert.notEqual(await textOf(page, "#connection-id"), before);
      // A fresh server starts empty; the page refetched, and new changes show up.
      await ingest(base, "betpawa", 777, 1.95);
      await eventually(async () => (await textOf(page, price(777, "betpawa", "1"))) === "1.95", "an update after reconnecting");
      await eventually(async () => (await textOf(page, "#event-count")) === "1", "the refetched board");
      // A new broker is a new epoch: the page could not resume, was told so, and reloaded.
      assert.ok((await page.evaluate(() => window.board.fullLoads)) > loads, "a whole reload");
      await page.screenshot({ path: path.join(ARTIFACTS, "board-after-restart.png") });
    });

    assert.deepEqual(pageErrors, [], "no script errors on the page");
    const refused = /ERR_CONNECTION_REFUSED|WebSocket connection to .* failed/;
    const unexpected = consoleErrors.filter((e) => !(e.outage && refused.test(e.text)));
    assert.deepEqual(unexpected, [], "no console errors (a missing favicon was one)");
  } finally {
    await browser.close();
    await stopServer(server);
  }
});

test("the board with access control", async (t) => {
  const secret = "a-browser-test-secret-of-32-bytes";
  const server = await startServer("127.0.0.1:0", ["--auth-secret", secret]);
  const base = `http://${server.addr}`;
  const { browser, page, pageErrors } = await openBrowser();
  // What a proxy's access log would record: no request may carry the token in its address.
  const addresses = [];
  page.on("request", (request) => addresses.push(request.url()));
  page.on("websocket", (socket) => addresses.push(socket.url()));
  const board = jwt({ sub: "board", scrape: true }, secret);
  try {
    await ingest(base, "betpawa", 601, 2.05, jwt({ sub: "scraper", ingest: true }, secret));

    await t.test("a token in the page's address connects it, and leaves the address", async () => {
      await page.goto(`${base}/#token=${board}`);
      await page.waitForSelector('#status[data-state="live"]');
      assert.ok(!page.url().includes("token"), page.url());
      await eventually(async () => (await textOf(page, price(601, "betpawa", "1"))) === "2.05", "the price");
    });

    await t.test("Scrape now starts a run with the token's scrape claim", async () => {
      await page.click("#scrape");
      await page.waitForSelector('#run-status[data-phase="completed"]', { timeout: 30000 });
      assert.ok(addresses.some((address) => address.includes("/api/scrape/stream")));
      assert.ok(addresses.some((address) => address.includes("/api/ws")));
      const leaked = addresses.filter((address) => address.includes(board) || address.includes("token="));
      assert.deepEqual(leaked, [], "no token in any address the page requested");
    });

    await t.test("without a token the page says why, and a typed token connects it", async () => {
      const bare = await browser.newPage();
      await bare.goto(`${base}/`);
      await bare.waitForSelector('#status[data-state="reconnecting"]');
      await eventually(async () => /token/.test(await textOf(bare, "#log")), "the hint");
      await bare.fill("#token", board);
      await bare.click('#token-form button');
      await bare.waitForSelector('#status[data-state="live"]', { timeout: 20000 });
      await bare.close();
    });
    assert.deepEqual(pageErrors, [], "no script errors on the page");
  } finally {
    await browser.close();
    await stopServer(server);
  }
});
