// The chart over days, with a database (--database-url on a PostgreSQL the test starts): it
// offers 1 h, 24 h and 7 d, draws the prices of the range picked, and says how far each
// price rose or dropped since its opening. A screenshot lands in target/browser/.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";
import { ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, eventually, startServer, stopServer, textOf } from "./helpers.mjs";
import { startPostgres } from "./postgres.mjs";

const ago = (ms) => new Date(Date.now() - ms).toISOString();
const HOUR = 3600e3;

/** Posts one snapshot of event 901's 1X2 and waits until the database has it. */
async function put(base, source, price, capturedAt, event) {
  const snapshot = {
    event_id: 901,
    captured_at: capturedAt,
    markets: [{ market_id: "1x2", name: "1X2", line: null, outcomes: [
      { name: "1", odds: price }, { name: "X", odds: 3.3 }, { name: "2", odds: 3.6 },
    ] }],
  };
  if (event) snapshot.event = event;
  const response = await fetch(`${base}/api/odds?wait=persisted`, {
    method: "POST",
    body: JSON.stringify({ source, snapshots: [snapshot] }),
  });
  assert.equal(response.status, 200, await response.text());
}

test("the chart over days, with a database", async (t) => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const pg = startPostgres();
  let server;
  let browser;
  try {
    server = await startServer("127.0.0.1:0", ["--database-url", pg.url]);
    const base = `http://${server.addr}`;
    const kickoff = new Date(Date.now() + 3 * HOUR).toISOString();
    await put(base, "betpawa", 2.0, ago(72 * HOUR), { name: "Arsenal v Chelsea", kickoff });
    await put(base, "sportybet", 2.1, ago(72 * HOUR));
    await put(base, "betpawa", 2.4, ago(2 * HOUR));
    await put(base, "betpawa", 2.2, ago(HOUR / 6));

    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    const page = await browser.newPage({ viewport: { width: 1200, height: 800 } });
    const pageErrors = [];
    page.on("pageerror", (error) => pageErrors.push(error.message));
    await page.goto(`${base}/`);
    await page.waitForSelector('#status[data-state="live"]');
    await page.click('#rows [data-event="901"] .name');
    await page.waitForSelector("#chart[open] #chart-ranges");

    const line = "#chart figure:first-of-type polyline";
    const drawn = (source) => page.$eval(`${line}[data-source="${source}"]`,
      (el) => el.getAttribute("points").split(" ").length).catch(() => 0);
    const pick = async (range) => {
      await page.click(`#chart-ranges [data-range="${range}"]`);
      await eventually(async () => (await page.getAttribute(`#chart-ranges [data-range="${range}"]`, "aria-pressed")) === "true",
        `${range} picked`);
    };

    await t.test("the last hour: one price, held until now", async () => {
      assert.equal(await page.getAttribute('#chart-ranges [data-range="1 h"]', "aria-pressed"), "true");
      await eventually(async () => (await drawn("betpawa")) === 2, "betpawa's price of the last hour");
      assert.equal(await drawn("sportybet"), 0, "sportybet did not move in the last hour");
      for (const range of ["1 h", "24 h", "7 d"]) {
        assert.ok(await page.isVisible(`#chart-ranges [data-range="${range}"]`), range);
      }
    });

    await t.test("each price's rise or drop since its opening is written out", async () => {
      const since = '#chart figure:first-of-type .since-opening li[data-source="betpawa"]';
      assert.ok(await page.isVisible(since));
      assert.equal(await textOf(page, since), "betpawa 2.00 → 2.20 ▲ 10.0%");
      assert.equal(await page.getAttribute(since, "data-direction"), "up");
      const fits = await page.$eval(since, (el) => el.scrollWidth <= el.clientWidth + 1
        && el.getBoundingClientRect().right <= document.querySelector("#chart").getBoundingClientRect().right);
      assert.ok(fits, "the text fits in the dialog");
    });

    await t.test("24 h and 7 d draw the prices of their range", async () => {
      await pick("24 h");
      await eventually(async () => (await drawn("betpawa")) === 4, "2.40 then 2.20");
      await pick("7 d");
      await eventually(async () => (await drawn("betpawa")) === 6, "2.00, 2.40, 2.20");
      assert.equal(await drawn("sportybet"), 2, "sportybet's one price of three days ago");
      assert.equal(await textOf(page, '#chart figure:first-of-type .since-opening li[data-source="sportybet"]'),
        "sportybet 2.10 → 2.10 = 0.0%");
      await page.screenshot({ path: path.join(ARTIFACTS, "history-7d.png") });
    });

    assert.deepEqual(pageErrors, []);
  } finally {
    await browser?.close();
    if (server) await stopServer(server);
    pg.stop();
  }
});
