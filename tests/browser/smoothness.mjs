// How smooth the board stays under the simulated market at its fastest: frames per second and
// long tasks (over 50 ms) in 10 s of a scrape every 200 ms over 1,300 events. Not part of
// `make test` (it measures, it does not check): `node smoothness.mjs [BINARY] [ROUNDS]`.
import path from "node:path";
import { chromium } from "playwright-core";
import { CHROMIUM, CHROMIUM_ARGS, ROOT, spawnServer, stopServer } from "./helpers.mjs";

const binary = process.argv[2] ?? path.join(ROOT, "target/release/oddsbus");
const rounds = Number(process.argv[3] ?? 1);

for (let round = 0; round < rounds; round++) {
  const args = ["--listen", "127.0.0.1:0", "--scrape-interval", "0.2", "--sim-events", "1300", "--sim-latency-ms", "0"];
  const server = await spawnServer(binary, args);
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  await page.goto(`http://${server.addr}/`);
  await page.waitForSelector('#status[data-state="live"]');
  await page.waitForTimeout(3000); // the first whole load
  const before = await page.evaluate(() => window.board.refetched);
  const result = await page.evaluate(() => new Promise((resolve) => {
    let frames = 0;
    let longTasks = 0;
    new PerformanceObserver((list) => { longTasks += list.getEntries().length; }).observe({ type: "longtask" });
    const start = performance.now();
    const tick = () => {
      frames += 1;
      if (performance.now() - start < 10_000) requestAnimationFrame(tick);
      else resolve({ fps: frames / ((performance.now() - start) / 1000), longTasks });
    };
    requestAnimationFrame(tick);
  }));
  const rows = await page.$$eval("#rows .row", (rows) => rows.length);
  const refetched = (await page.evaluate(() => window.board.refetched)) - before;
  console.log(JSON.stringify({
    binary: path.basename(binary), fps: Number(result.fps.toFixed(1)), long_tasks: result.longTasks, rows,
    refetched_per_sec: Math.round(refetched / 10),
  }));
  await browser.close();
  await stopServer(server);
}
