// How the odds moved: an event's prices over time per bookmaker, drawn as SVG in a dialog
// (`GET /api/events/{id}/history`), and the biggest moves of the last 10 minutes
// (`GET /api/moves`).

import { MARKETS, eventOf, marketShown } from "/board.js";

const $ = (selector) => document.querySelector(selector);
const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#4cd97b", "#5aa9ff", "#f0b840", "#e07be0", "#f06262", "#7be0d6"];
const WIDTH = 320;
const HEIGHT = 120;
const PAD = 28;

function svg(name, attributes) {
  const el = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) el.setAttribute(key, value);
  return el;
}

const nameOf = (id) => eventOf(id)?.details?.name ?? `event ${id}`;

/** Opens the chart of event `id` for the market the board shows. */
export async function openChart(id, { read, sources }) {
  const dialog = $("#chart");
  $("#chart-title").textContent = nameOf(id);
  $("#chart-body").replaceChildren("loading…");
  if (!dialog.open) dialog.showModal();
  const response = await read(`/api/events/${id}/history`);
  if (!response.ok) {
    $("#chart-body").replaceChildren("no price of this event was recorded yet");
    return;
  }
  const { history } = await response.json();
  const market = marketShown();
  const { line, outcomes } = MARKETS[market];
  const charts = outcomes.map((outcome) => {
    const series = history.filter((s) => s.market_id === market && (s.line ?? null) === line && s.outcome === outcome);
    return chart(outcome, series, sources);
  });
  const legend = document.createElement("p");
  legend.className = "legend";
  sources.forEach((source, i) => {
    const key = document.createElement("span");
    key.style.color = COLORS[i % COLORS.length];
    key.textContent = `■ ${source} `;
    legend.appendChild(key);
  });
  $("#chart-body").replaceChildren(legend, ...charts);
}

/** One outcome: a line per source, time across, price up. */
function chart(outcome, series, sources) {
  const figure = document.createElement("figure");
  const caption = document.createElement("figcaption");
  caption.textContent = outcome;
  const points = series.flatMap((s) => s.points.map((p) => [Date.parse(p.at), p.odds]));
  const plot = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": `${outcome} over time` });
  figure.append(caption, plot);
  if (!points.length) return figure;
  const [t0, t1] = [Math.min(...points.map((p) => p[0])), Math.max(...points.map((p) => p[0]), Date.now())];
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
    const color = COLORS[sources.indexOf(s.source) % COLORS.length];
    // A step line: a price holds until the next one, and the last until now.
    const steps = s.points.flatMap((p, i) => {
      const next = s.points[i + 1] ? Date.parse(s.points[i + 1].at) : t1;
      return [[Date.parse(p.at), p.odds], [next, p.odds]];
    });
    const line = svg("polyline", {
      points: steps.map(([t, odds]) => `${x(t).toFixed(1)},${y(odds).toFixed(1)}`).join(" "),
      fill: "none", stroke: color, "stroke-width": 2, "data-source": s.source,
    });
    plot.appendChild(line);
  }
  return figure;
}

/** Lists the biggest moves of the last 10 minutes, and again every 10 seconds. */
export function followMoves(read) {
  const refresh = async () => {
    try {
      const response = await read("/api/moves?minutes=10&limit=10");
      if (!response.ok) return;
      const { moves } = await response.json();
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
