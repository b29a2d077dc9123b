// How the odds moved: an event's prices over time per bookmaker, drawn as SVG in a dialog
// (`GET /api/events/{id}/history`), each price's rise or drop since its opening, the market's
// fair prices and betpawa's edge against them (`GET /api/events/{id}/fair`), and the
// biggest moves of the last 10 minutes (`GET /api/moves`). With a database the history holds
// days, so the chart offers ranges and reads the history in pages.

import { MARKETS, eventOf, marketShown } from "/board.js";

const $ = (selector) => document.querySelector(selector);
const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#4cd97b", "#5aa9ff", "#f0b840", "#e07be0", "#f06262", "#7be0d6"];
const WIDTH = 320;
const HEIGHT = 120;
const PAD = 28;
/** Whether the server keeps the history in a database (days of it) or in memory. */
const DAYS = document.querySelector('meta[name="oddsbus-history"]')?.content === "database";
/** The ranges a chart offers with a database; the first is where it opens. */
const RANGES = [["1 h", 3600e3], ["24 h", 86400e3], ["7 d", 7 * 86400e3]];
/** Most pages of history one chart reads (10,000 market rows each). */
const MAX_PAGES = 10;

let range = RANGES[0];
/** Counts the charts asked for, so that a slow answer never replaces a newer one. */
let asked = 0;

function svg(name, attributes) {
  const el = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) el.setAttribute(key, value);
  return el;
}

const nameOf = (id) => eventOf(id)?.details?.name ?? `event ${id}`;
const colorOf = (sources, source) => COLORS[Math.max(0, sources.indexOf(source)) % COLORS.length];

/** Opens the chart of event `id` for the market the board shows. */
export async function openChart(id, { read, sources }) {
  const dialog = $("#chart");
  $("#chart-title").textContent = nameOf(id);
  if (!dialog.open) dialog.showModal();
  await draw(id, { read, sources });
}

async function draw(id, { read, sources }) {
  const mine = ++asked;
  const ranges = DAYS ? [rangeButtons(id, { read, sources })] : [];
  $("#chart-body").replaceChildren(...ranges, "loading…");
  const market = marketShown();
  const since = DAYS ? Date.now() - range[1] : null;
  const [loaded, fair] = await Promise.all([load(id, market, since, read), loadFair(id, read)]);
  if (mine !== asked) return;
  if (!loaded) {
    $("#chart-body").replaceChildren(...ranges, "no price of this event was recorded yet", fairView(fair, market));
    return;
  }
  const { line, outcomes } = MARKETS[market];
  const charts = outcomes.map((outcome) => {
    const series = loaded.history.filter((s) => (s.line ?? null) === line && s.outcome === outcome);
    return chart(outcome, series, sources, since);
  });
  const legend = document.createElement("p");
  legend.className = "legend";
  sources.forEach((source) => {
    const key = document.createElement("span");
    key.style.color = colorOf(sources, source);
    key.textContent = `■ ${source} `;
    legend.appendChild(key);
  });
  if (loaded.cut) legend.append(`(the first ${MAX_PAGES} pages of changes: a shorter range shows the latest)`);
  $("#chart-body").replaceChildren(...ranges, legend, ...charts, fairView(fair, market));
}

/** The event's fair prices, or null. */
async function loadFair(id, read) {
  try {
    const response = await read(`/api/events/${id}/fair`);
    return response.ok ? await response.json() : null;
  } catch {
    return null;
  }
}

/** `market`'s fair prices: per outcome the best price and who pays it, the fair odds and
 * probability (the bookmakers' margins taken out and averaged), betpawa's price and its edge
 * (above 0: it pays more than fair), and each bookmaker's margin. */
function fairView(fair, market) {
  const section = document.createElement("section");
  section.id = "fair";
  section.setAttribute("aria-label", "fair prices");
  const title = document.createElement("h3");
  title.textContent = "Fair prices";
  const { line } = MARKETS[market];
  const found = fair?.markets.find((m) => m.market_id === market && (m.line ?? null) === line);
  if (!found) {
    section.append(title, "no bookmaker prices this market yet");
    return section;
  }
  const table = document.createElement("table");
  const row = (cells, tag = "td") => {
    const tr = document.createElement("tr");
    for (const text of cells) {
      const cell = document.createElement(tag);
      cell.textContent = text;
      tr.appendChild(cell);
    }
    return tr;
  };
  const odds = (o) => (o === null || o === undefined ? "–" : o.toFixed(2));
  table.appendChild(row(["outcome", "best", "fair", "probability", "betpawa", "edge"], "th"));
  for (const o of found.outcomes) {
    const tr = row([
      o.outcome,
      o.best ? `${odds(o.best.odds)} ${o.best.source}` : "–",
      odds(o.fair_odds),
      o.fair_probability === null ? "–" : `${(100 * o.fair_probability).toFixed(1)}%`,
      odds(o.prices.betpawa?.odds),
      o.betpawa_edge === null ? "–" : `${o.betpawa_edge > 0 ? "+" : ""}${(100 * o.betpawa_edge).toFixed(1)}%`,
    ]);
    tr.dataset.outcome = o.outcome;
    if (o.betpawa_edge !== null) tr.lastChild.dataset.edge = o.betpawa_edge > 0 ? "over" : "under";
    table.appendChild(tr);
  }
  const margins = document.createElement("p");
  margins.className = "margins";
  margins.textContent = "margins: " + Object.entries(found.margins)
    .map(([source, m]) => `${source} ${(100 * m).toFixed(1)}%`).join(" · ");
  section.append(title, table, margins);
  return section;
}

/** The buttons that pick the chart's range. */
function rangeButtons(id, context) {
  const group = document.createElement("div");
  group.id = "chart-ranges";
  group.setAttribute("role", "group");
  group.setAttribute("aria-label", "time range");
  for (const choice of RANGES) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = choice[0];
    button.dataset.range = choice[0];
    button.setAttribute("aria-pressed", String(choice === range));
    button.addEventListener("click", () => {
      range = choice;
      draw(id, context);
    });
    group.appendChild(button);
  }
  return group;
}

/** The event's history of `market` (from `since`, if not null), its pages joined; null if
 * none of the event's prices was recorded. */
async function load(id, market, since, read) {
  const query = new URLSearchParams({ market });
  if (since !== null) query.set("from", new Date(since).toISOString());
  const series = new Map();
  for (let page = 1; ; page++) {
    const response = await read(`/api/events/${id}/history?${query}`);
    if (!response.ok) return page > 1 ? { history: [...series.values()], cut: true } : null;
    const body = await response.json();
    for (const s of body.history) {
      const key = `${s.source} ${s.market_id} ${s.line} ${s.outcome}`;
      const joined = series.get(key);
      if (joined) joined.points.push(...s.points);
      else series.set(key, s);
    }
    if (!body.next_from) return { history: [...series.values()], cut: false };
    if (page === MAX_PAGES) return { history: [...series.values()], cut: true };
    query.set("from", body.next_from);
  }
}

/** One outcome: a line per source, time across (from `since`, if not null), price up; and
 * each source's price now against its opening. */
function chart(outcome, series, sources, since) {
  const figure = document.createElement("figure");
  const caption = document.createElement("figcaption");
  caption.textContent = outcome;
  const points = series.flatMap((s) => s.points.map((p) => [Date.parse(p.at), p.odds]));
  const plot = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": `${outcome} over time` });
  figure.append(caption, plot, sinceOpening(series, sources));
  if (!points.length) return figure;
  const t0 = since ?? Math.min(...points.map((p) => p[0]));
  const t1 = Math.max(...points.map((p) => p[0]), Date.now());
  let [low, high] = [Math.min(...points.map((p) => p[1])), Math.max(...points.map((p) => p[1]))];
  if (high - low < 0.02) [low, high] = [low - 0.05, high + 0.05];
  const x = (t) => PAD + ((WIDTH - PAD - 4) * (t - t0)) / Math.max(1, t1 - t0);
  const y = (odds) => HEIGHT - 14 - ((HEIGHT - 24) * (odds - low)) / (high - low);
  for (const [label, odds] of [[high.toFixed(2), high], [low.toFixed(2), low]]) {
    const text = svg("text", { x: 2, y: y(odds) + 4, class: "axis" });
    text.textContent = label;
    plot.appendChild(text);
  }
  for (const s of series) {
    // A step line: a price holds until the next one, and the last until now.
    const steps = s.points.flatMap((p, i) => {
      const next = s.points[i + 1] ? Date.parse(s.points[i + 1].at) : t1;
      return [[Date.parse(p.at), p.odds], [next, p.odds]];
    });
    const line = svg("polyline", {
      points: steps.map(([t, odds]) => `${x(t).toFixed(1)},${y(odds).toFixed(1)}`).join(" "),
      fill: "none", stroke: colorOf(sources, s.source), "stroke-width": 2, "data-source": s.source,
    });
    plot.appendChild(line);
  }
  return figure;
}

/** Each source's latest price against its opening: "betpawa 2.00 → 2.20 ▲ 10.0%". */
function sinceOpening(series, sources) {
  const list = document.createElement("ul");
  list.className = "since-opening";
  list.setAttribute("aria-label", "since opening");
  for (const s of series) {
    const last = s.points.at(-1);
    if (!s.opening || !last) continue;
    const change = last.odds / s.opening.odds - 1;
    const item = document.createElement("li");
    item.dataset.source = s.source;
    item.dataset.direction = change > 0 ? "up" : change < 0 ? "down" : "same";
    item.style.color = colorOf(sources, s.source);
    const arrow = change > 0 ? "▲" : change < 0 ? "▼" : "=";
    item.textContent = `${s.source} ${s.opening.odds.toFixed(2)} → ${last.odds.toFixed(2)} ` +
      `${arrow} ${(100 * Math.abs(change)).toFixed(1)}%`;
    item.title = `opening price at ${new Date(s.opening.at).toLocaleString()}`;
    list.appendChild(item);
  }
  return list;
}

/** Lists the biggest moves of the last 10 minutes, and again every 10 seconds. A move of an
 *  event the board has no row for yet has it read first (`load`), so the list names the
 *  match as the table does. */
export function followMoves(read, load) {
  const refresh = async () => {
    try {
      const response = await read("/api/moves?minutes=10&limit=10");
      if (!response.ok) return;
      const { moves } = await response.json();
      const unknown = [...new Set(moves.map((move) => move.event_id))].filter((id) => !eventOf(id));
      if (unknown.length) await load(unknown);
      $("#move-list").replaceChildren(...moves.map((move) => {
        const item = document.createElement("li");
        item.dataset.event = move.event_id;
        item.dataset.direction = move.change > 0 ? "up" : "down";
        const pct = `${move.change > 0 ? "+" : ""}${(100 * move.change).toFixed(1)}%`;
        const market = move.line === null ? move.market_id : `${move.market_id} ${move.line}`;
        item.textContent = `${nameOf(move.event_id)} · ${move.source} ${market} ${move.outcome}: ` +
          `${move.from.toFixed(2)} → ${move.to.toFixed(2)} (${pct})`;
        return item;
      }));
    } catch { /* the next round tries again */ }
  };
  refresh();
  setInterval(refresh, 10_000);
}
