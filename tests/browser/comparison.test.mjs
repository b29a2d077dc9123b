// The board as an odds-comparison page, in Debian's headless Chromium against the real
// oddsbus: what each match is, the market tabs, search, the best prices and margins, where
// betpawa is beaten, how prices moved (markers, a chart, the biggest moves), the keyboard and
// a phone's width. Screenshots (desktop, phone, chart) land in target/browser/.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { ARTIFACTS, openBrowser, cell, price, eventually, startServer, stopServer, textOf } from "./helpers.mjs";

const SOON = new Date(Date.now() + 3 * 3600 * 1000).toISOString();
const LATER = new Date(Date.now() + 26 * 3600 * 1000).toISOString();

const market = (id, line, outcomes) => ({ market_id: id, name: id, line, outcomes: outcomes.map(([name, odds]) => ({ name, odds })) });

/** One source's snapshot of an event: 1X2, over/under 2.5 and both teams to score. */
async function put(base, source, eventId, event, [home, draw, away], [over, under] = [1.9, 1.95]) {
  const snapshot = {
    event_id: eventId,
    markets: [
      market("1x2", null, [["1", home], ["X", draw], ["2", away]]),
      market("over_under", 2.5, [["Over", over], ["Under", under]]),
      market("btts", null, [["Yes", 1.8], ["No", 2.0]]),
    ],
  };
  if (event) snapshot.event = event;
  const response = await fetch(`${base}/api/odds`, {
    method: "POST",
    body: JSON.stringify({ source, snapshots: [snapshot] }),
  });
  assert.equal(response.status, 200, await response.text());
}

const row = (id) => `#rows [data-event="${id}"]`;
/** Whether a person sees the row: rendered at all, not merely marked. */
const hidden = (page, id) => page.$eval(row(id), (el) => !el.checkVisibility());
const visibleRows = (page) => page.$$eval("#rows .row", (rows) => rows.filter((r) => r.checkVisibility()).length);

test("the board as an odds-comparison page", async (t) => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const server = await startServer("127.0.0.1:0");
  const base = `http://${server.addr}`;
  const { browser, page, pageErrors } = await openBrowser();
  const arsenal = { name: "Arsenal v Chelsea", competition: "England: Premier League", kickoff: SOON };
  const inter = { name: "Inter v Milan", competition: "Italy: Serie A", kickoff: LATER };
  try {
    await put(base, "betpawa", 901, arsenal, [2.0, 3.4, 3.8]);
    await put(base, "sportybet", 901, null, [2.1, 3.3, 3.7], [1.85, 2.0]);
    await put(base, "betpawa", 902, inter, [2.5, 3.1, 2.9]);
    await put(base, "sportybet", 902, null, [2.4, 3.0, 2.8]);
    await page.goto(`${base}/`);
    await page.waitForSelector('#status[data-state="live"]');

    await t.test("rows say which match: teams, competition, kickoff, grouped by competition", async () => {
      await eventually(async () => (await textOf(page, `${row(901)} .name`)) === "Arsenal v Chelsea", "the name");
      const group = (id) => page.getAttribute(row(id), "data-group");
      await eventually(async () => (await group(901)) === "England: Premier League", "the Premier League's header");
      assert.equal(await group(902), "Italy: Serie A");
      assert.match(await textOf(page, `${row(901)} .when`), /^\d\d:\d\d$|^\w{3} \d\d:\d\d$/);
    });

    await t.test("each bookmaker's margin is computed from its prices", async () => {
      // 1/2.0 + 1/3.4 + 1/3.8 - 1 = 5.73%; sportybet 1/2.1 + 1/3.3 + 1/3.7 - 1 = 4.92%.
      assert.equal(await textOf(page, `${row(901)} .margin[data-source="betpawa"]`), "5.7%");
      assert.equal(await textOf(page, `${row(901)} .margin[data-source="sportybet"]`), "4.9%");
      assert.match(await page.getAttribute(cell(901, "sportybet", "1"), "class"), /\bbest\b/);
      assert.match(await page.getAttribute(cell(902, "betpawa", "1"), "class"), /\bbest\b/);
    });

    await t.test("the market tabs switch every row to that market", async () => {
      await page.click('#markets [data-market="over_under"]');
      assert.equal(await textOf(page, price(901, "betpawa", "Over")), "1.90");
      assert.equal(await textOf(page, price(901, "sportybet", "Under")), "2.00");
      assert.equal(await page.$(cell(901, "betpawa", "1")), null, "no 1X2 cells");
      await page.click('#markets [data-market="btts"]');
      assert.equal(await textOf(page, price(902, "betpawa", "Yes")), "1.80");
      await page.click('#markets [data-market="1x2"]');
      assert.equal(await textOf(page, price(901, "betpawa", "1")), "2.00");
    });

    await t.test("search filters by team or competition", async () => {
      assert.equal(await visibleRows(page), 2);
      await page.fill("#search", "milan");
      await eventually(async () => (await hidden(page, 901)) && !(await hidden(page, 902)), "only Inter v Milan");
      assert.equal(await visibleRows(page), 1);
      await page.fill("#search", "premier league");
      await eventually(async () => !(await hidden(page, 901)) && (await hidden(page, 902)), "only the Premier League");
      await page.fill("#search", "");
      await eventually(async () => !(await hidden(page, 901)) && !(await hidden(page, 902)), "both again");
    });

    await t.test("the summary and the filter show where betpawa is beaten", async () => {
      await eventually(async () => /beats betpawa/.test(await textOf(page, '#summary [data-source="sportybet"]') ?? ""), "the summary");
      await page.check("#beaten");
      await eventually(async () => !(await hidden(page, 901)) && (await hidden(page, 902)), "only where sportybet pays more");
      assert.equal(await visibleRows(page), 1);
      await page.uncheck("#beaten");
      await eventually(async () => !(await hidden(page, 902)), "every row again");
    });

    await t.test("a moved price shows its direction until the next change", async () => {
      await put(base, "betpawa", 901, null, [2.2, 3.4, 3.8]);
      await eventually(async () => (await textOf(page, price(901, "betpawa", "1"))) === "2.20", "the higher price");
      assert.match(await page.getAttribute(cell(901, "betpawa", "1"), "class"), /\bup\b/);
      await put(base, "betpawa", 901, null, [1.95, 3.4, 3.8]);
      await eventually(async () => (await textOf(page, price(901, "betpawa", "1"))) === "1.95", "the lower price");
      const classes = await page.getAttribute(cell(901, "betpawa", "1"), "class");
      assert.match(classes, /\bdown\b/);
      assert.doesNotMatch(classes, /\bup\b/);
      await page.screenshot({ path: path.join(ARTIFACTS, "comparison-desktop.png") });
    });

    await t.test("clicking an event opens the chart of its prices; the moves panel lists them", async () => {
      await page.click(`${row(901)} .name`);
      await page.waitForSelector("#chart[open] polyline[data-source='betpawa']");
      // 2.00, 2.20, 1.95: three prices, each held until the next (two points per step).
      const points = await page.$eval("#chart figure:first-of-type polyline[data-source='betpawa']",
        (line) => line.getAttribute("points").split(" ").length);
      assert.equal(points, 6);
      // Without a database: no ranges, and the opening is the first price this node saw.
      assert.equal(await page.$("#chart-ranges"), null);
      assert.equal(await textOf(page, '#chart figure:first-of-type .since-opening li[data-source="betpawa"]'),
        "betpawa 2.00 → 1.95 ▼ 2.5%");
      assert.ok(await page.$("#chart figure:first-of-type polyline[data-source='sportybet']"));
      await page.screenshot({ path: path.join(ARTIFACTS, "comparison-chart.png") });
      await page.keyboard.press("Escape");
      await eventually(async () => !(await page.$("#chart[open]")), "the chart closed");
      // The panel refreshes every 10 s.
      await eventually(async () => Boolean(await page.$('#move-list li[data-event="901"]')),
        "event 901 among the biggest moves", 15000);
      assert.match(await textOf(page, '#move-list li[data-event="901"]'), /^Arsenal v Chelsea · betpawa 1x2 1: /);
    });

    await t.test("the keyboard moves between rows and opens a chart", async () => {
      await page.focus(row(901));
      await page.keyboard.press("ArrowDown");
      assert.equal(await page.evaluate(() => document.activeElement.dataset.event), "902");
      await page.keyboard.press("Enter");
      await page.waitForSelector("#chart[open]");
      assert.equal(await textOf(page, "#chart-title"), "Inter v Milan");
      await page.keyboard.press("Escape");
    });

    await t.test("the moves panel names a match the table has not shown yet", async () => {
      // Not following odds_updates, the board hears nothing of a new match...
      await page.click('input[data-topic="odds_updates"]');
      await eventually(async () => !(await page.isChecked('input[data-topic="odds_updates"]')), "odds_updates off");
      const roma = { name: "Roma v Lazio", competition: "Italy: Serie A", kickoff: LATER };
      await put(base, "betpawa", 903, roma, [2.0, 3.2, 3.6]);
      // The price history keeps the latest of each queued snapshot: let it take the first.
      await eventually(async () => (await (await fetch(`${base}/api/events/903/history`)).json())
        .history?.some((series) => series.points?.length), "the first price recorded");
      await put(base, "betpawa", 903, null, [2.6, 3.2, 3.6]);
      // ...until its move is listed: the panel reads it, and names it as the table does.
      let listed = "";
      await eventually(async () => {
        listed = await page.$eval("#move-list", (list) => list.textContent).catch(() => "");
        return /^Roma v Lazio · betpawa 1x2 1: 2\.00 → 2\.60/.test((await textOf(page, '#move-list li[data-event="903"]')) ?? "");
      }, "the move of Roma v Lazio", 15000).catch((error) => assert.fail(`${error.message}: ${listed}`));
      await page.click('input[data-topic="odds_updates"]');
      await eventually(async () => page.isChecked('input[data-topic="odds_updates"]'), "odds_updates on");
    });

    await t.test("at 390 px wide the page fits and every price is readable", async () => {
      await page.setViewportSize({ width: 390, height: 844 });
      await eventually(async () => (await page.evaluate(() => document.documentElement.scrollWidth)) <= 390, "no sideways scroll");
      const box = await page.$eval(cell(901, "bet9ja", "2"), (el) => {
        const r = el.getBoundingClientRect();
        return { right: r.right, width: r.width };
      });
      assert.ok(box.right <= 390 && box.width >= 36, JSON.stringify(box));
      // Every price (with its outcome's label and its arrow) and every bookmaker's name fits.
      const overflowing = await page.$$eval("#rows .row .cell[data-source]", (cells) => cells
        .filter((c) => c.checkVisibility() && c.scrollWidth > c.clientWidth)
        .map((c) => `${c.closest(".row").dataset.event} ${c.dataset.source} ${c.dataset.outcome ?? "name"}: ${c.textContent}`));
      assert.deepEqual(overflowing, []);
      const label = (selector, pseudo) => page.$eval(selector, (el, p) => getComputedStyle(el, p).content, pseudo);
      assert.equal(await label(cell(901, "betpawa", "X"), "::before"), '"X"');
      assert.equal(await label(`${row(901)} .margin[data-source="sportybet"]`, "::before"), '"sportybet"');
      const width = await page.$eval(cell(901, "betpawa", "1"), (el) => el.getBoundingClientRect().width);
      assert.ok(width >= 60, `a price cell ${width} px wide`);
      await page.screenshot({ path: path.join(ARTIFACTS, "comparison-phone.png") });
      await page.setViewportSize({ width: 1400, height: 900 });
    });

    assert.deepEqual(pageErrors, [], "no script errors on the page");
  } finally {
    await browser.close();
    await stopServer(server);
  }
});
