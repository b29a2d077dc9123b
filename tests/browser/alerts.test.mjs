// What the odds analysis shows on the board, in Debian's headless Chromium against the real
// oddsbus: the alerts feed (its text, its colours, its severity filter, a click that opens the
// match), the drop or rise since opening beside a price, a sure bet's badge and legs, and the
// fair view in the match's dialog. A screenshot lands in target/browser/alerts.png.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { ARTIFACTS, openBrowser, cell, eventually, startServer, stopServer, textOf } from "./helpers.mjs";

const ID = 9001;
const MATCH = { name: "Leeds v Hull", competition: "England: Championship", kickoff: new Date(Date.now() + 7200e3).toISOString() };

/** Posts `source`'s 1X2 of the match and waits until the analysis has taken it in (it reads
 * only the latest waiting snapshot of an event and source). */
async function put(base, source, [home, draw, away]) {
  const snapshot = {
    event_id: ID,
    event: MATCH,
    markets: [{ market_id: "1x2", name: "1X2", line: null, outcomes: [
      { name: "1", odds: home }, { name: "X", odds: draw }, { name: "2", odds: away },
    ] }],
  };
  const response = await fetch(`${base}/api/odds`, { method: "POST", body: JSON.stringify({ source, snapshots: [snapshot] }) });
  assert.equal(response.status, 200, await response.text());
  await eventually(async () => {
    const fair = await (await fetch(`${base}/api/events/${ID}/fair`)).json();
    return fair.markets?.[0]?.outcomes[0].prices[source]?.odds === home;
  }, `the analysis took ${source}'s ${home}`);
}

/** The feed's items a person sees, as text. */
const feed = (page) => page.$$eval("#alert-list li", (items) => items.filter((li) => li.checkVisibility()).map((li) => li.innerText));
/** Whether the feed shows an alert of `severity` about the match that reads `what`. */
const inFeed = async (page, severity, what) =>
  (await feed(page)).some((text) => text.includes(severity) && text.includes(MATCH.name) && text.includes(what));

test("the odds analysis on the board", async (t) => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const server = await startServer("127.0.0.1:0");
  const base = `http://${server.addr}`;
  const { browser, page, pageErrors } = await openBrowser();
  try {
    await put(base, "betpawa", [2.0, 3.4, 3.9]);
    await put(base, "sportybet", [2.0, 3.4, 3.5]);
    await page.goto(`${base}/`);
    await page.waitForSelector('#status[data-state="live"]');
    await eventually(async () => (await textOf(page, `[data-event="${ID}"] .name`)) === MATCH.name, "the match's row");

    await t.test("a price change appears in the feed, coloured by its severity, and the price shows its rise since opening", async () => {
      await put(base, "sportybet", [2.22, 3.4, 3.5]); // +11%: elevated
      await eventually(() => inFeed(page, "ELEVATED", "sportybet 1X2 1: 2.00 → 2.22 (+11.0%)"), "the alert in the feed");
      const item = page.locator("#alert-list li", { hasText: "2.00 → 2.22" });
      assert.equal(await item.locator(".severity").innerText(), "ELEVATED");
      const colour = await item.locator(".severity").evaluate((el) => getComputedStyle(el).color);
      const plain = await item.locator(".match").evaluate((el) => getComputedStyle(el).color);
      assert.notEqual(colour, plain, "the severity stands out in its colour");
      // The analysis's opening price was 2.00: the cell reads 2.22, +11%, both visible.
      await eventually(async () => (await textOf(page, `${cell(ID, "sportybet", "1")} .since`)) === "+11%", "the rise since opening");
      const since = await page.locator(`${cell(ID, "sportybet", "1")} .since`).isVisible();
      assert.ok(since, "the change since opening is shown beside the price");
    });

    await t.test("a sure bet puts a badge with its profit on the row and a critical alert with its legs in the feed", async () => {
      // 1/2.22 + 1/5.00 + 1/3.90 = 0.90686: a sure bet of 1/0.90686 - 1 = 10.3%, betpawa a leg.
      await put(base, "bet9ja", [1.9, 5.0, 3.3]);
      const badge = page.locator(`[data-event="${ID}"] .surebet`);
      await eventually(async () => (await badge.isVisible()) && (await badge.innerText()) === "sure bet +10.3%", "the badge");
      // The badge fits in its cell: a person reads all of it.
      const [inner, outer] = await Promise.all([badge.boundingBox(), page.locator(`[data-event="${ID}"] .event`).boundingBox()]);
      assert.ok(inner.x >= outer.x && inner.x + inner.width <= outer.x + outer.width, JSON.stringify({ inner, outer }));
      // The legs are the row's best prices, outlined.
      for (const [source, outcome] of [["sportybet", "1"], ["bet9ja", "X"], ["betpawa", "2"]]) {
        const outline = await page.$eval(cell(ID, source, outcome), (el) => getComputedStyle(el).outlineStyle);
        assert.equal(outline, "solid", `${source} ${outcome} is a leg`);
      }
      const legs = "sure bet 1X2 +10.3%: 1 @ 2.22 sportybet · X @ 5.00 bet9ja · 2 @ 3.90 betpawa";
      await eventually(() => inFeed(page, "CRITICAL", legs), "the sure bet in the feed");
    });

    await t.test("the severity filter leaves the lesser alerts out", async () => {
      await page.selectOption("#alert-severity", "critical");
      const shown = await feed(page);
      assert.ok(shown.length >= 1 && shown.every((text) => text.includes("CRITICAL")), JSON.stringify(shown));
      await page.selectOption("#alert-severity", "");
      assert.ok((await feed(page)).some((text) => text.includes("ELEVATED")));
    });

    await t.test("clicking an alert opens the match with its fair prices and betpawa's edge", async () => {
      await page.locator("#alert-list li", { hasText: "2.00 → 2.22" }).click();
      await page.waitForSelector("#chart[open]");
      assert.equal(await textOf(page, "#chart-title"), MATCH.name);
      await page.waitForSelector("#fair table");
      const fair = await (await fetch(`${base}/api/events/${ID}/fair`)).json();
      const market = fair.markets.find((m) => m.market_id === "1x2");
      for (const outcome of market.outcomes) {
        const cells = await page.$$eval(`#fair tr[data-outcome="${outcome.outcome}"] td`, (tds) => tds.map((td) => td.innerText));
        const edge = 100 * outcome.betpawa_edge;
        assert.deepEqual(cells, [
          outcome.outcome,
          `${outcome.best.odds.toFixed(2)} ${outcome.best.source}`,
          outcome.fair_odds.toFixed(2),
          `${(100 * outcome.fair_probability).toFixed(1)}%`,
          outcome.prices.betpawa.odds.toFixed(2),
          `${edge > 0 ? "+" : ""}${edge.toFixed(1)}%`,
        ]);
      }
      // betpawa's 3.90 on the away win pays more than fair (a risk for the house), its 2.00 on
      // the home win less: the two edges show in different colours.
      const away = market.outcomes.find((o) => o.outcome === "2");
      assert.ok(away.betpawa_edge > 0, JSON.stringify(away));
      const [risk, shorter] = await Promise.all(["2", "1"].map((o) =>
        page.$eval(`#fair tr[data-outcome="${o}"] td:last-child`, (td) => getComputedStyle(td).color)));
      assert.notEqual(risk, shorter);
      assert.match(await textOf(page, "#fair .margins"), /^margins: bet9ja [\d.]+% · betpawa [\d.]+% · sportybet [\d.]+%$/);
      await page.screenshot({ path: path.join(ARTIFACTS, "alerts.png") });
      await page.keyboard.press("Escape");
    });

    assert.deepEqual(pageErrors, [], "no script errors on the page");
  } finally {
    await browser.close();
    await stopServer(server);
  }
});
