// The alerts feed: what the odds analysis raised (docs/PROTOCOL.md, "Odds alerts"), newest
// first, coloured by severity. It starts from the last hour's (`GET /api/alerts`), then takes
// each `odds_alert` the topic pushes; after a `resync` of `alerts` it reads them again.
// Clicking an alert opens its match's chart.

import { eventOf, marketName } from "/board.js";

const $ = (selector) => document.querySelector(selector);
/** Alerts the feed keeps; older ones leave it. */
const KEEP = 50;

const feed = {
  /** The alerts shown, newest first, each with the JSON it came as (the key that lets a
   * read and a push of the same alert meet once). */
  items: [],
  keys: new Set(),
  severity: "",
  read: null,
  renderTimer: null,
};

/** A flood of alerts redraws the feed at most this often. */
const RENDER_MS = 250;

/** Fills the feed and keeps it live: `bus` is the board's client, `open` opens a chart. */
export function followAlerts({ bus, read, open }) {
  feed.read = read;
  bus.addEventListener("alert", ({ detail }) => add([detail.alert]));
  bus.addEventListener("resync", ({ detail }) => {
    if (detail.topic === "alerts") load();
  });
  $("#alert-severity").addEventListener("change", (event) => {
    feed.severity = event.target.value;
    render();
  });
  $("#alert-list").addEventListener("click", (event) => {
    const item = event.target.closest("li[data-event]");
    if (item) open(Number(item.dataset.event));
  });
  $("#alert-list").addEventListener("keydown", (event) => {
    const item = event.target.closest("li[data-event]");
    if (item && (event.key === "Enter" || event.key === " ")) {
      event.preventDefault();
      open(Number(item.dataset.event));
    }
  });
  load();
}

async function load() {
  try {
    const response = await feed.read(`/api/alerts?minutes=60&limit=${KEEP}`);
    if (!response.ok) return;
    const { alerts } = await response.json();
    add(alerts);
  } catch { /* the pushed alerts still come */ }
}

function add(alerts) {
  for (const alert of alerts) {
    const key = JSON.stringify(alert);
    if (feed.keys.has(key)) continue;
    feed.keys.add(key);
    feed.items.push({ alert, key });
  }
  feed.items.sort((a, b) => (a.alert.at < b.alert.at ? 1 : a.alert.at > b.alert.at ? -1 : 0));
  for (const { key } of feed.items.splice(KEEP)) feed.keys.delete(key);
  feed.renderTimer ??= setTimeout(render, RENDER_MS);
}

const RANK = { warning: 0, elevated: 1, critical: 2 };

function render() {
  clearTimeout(feed.renderTimer);
  feed.renderTimer = null;
  const least = RANK[feed.severity] ?? 0;
  const shown = feed.items.filter(({ alert }) => RANK[alert.severity] >= least);
  $("#alert-list").replaceChildren(...shown.map(({ alert }) => item(alert)));
  $("#alerts-empty").hidden = shown.length > 0;
}

function item(alert) {
  const li = document.createElement("li");
  li.dataset.event = alert.event_id;
  li.dataset.severity = alert.severity;
  li.dataset.kind = alert.kind;
  li.tabIndex = 0;
  const time = document.createElement("time");
  time.dateTime = alert.at;
  time.textContent = new Date(alert.at).toLocaleTimeString([], { hour12: false });
  const severity = document.createElement("span");
  severity.className = "severity";
  severity.textContent = alert.severity;
  const match = document.createElement("span");
  match.className = "match";
  match.textContent = eventOf(alert.event_id)?.details?.name ?? `event ${alert.event_id}`;
  const what = document.createElement("span");
  what.className = "what";
  what.textContent = describe(alert);
  li.append(time, severity, match, what);
  return li;
}

/** One line a person reads: "sportybet 1X2 1: 2.10 → 2.35 (+11.9%)". */
function describe(alert) {
  const where = marketName(alert.market_id, alert.line);
  const pct = (p) => `${p > 0 ? "+" : ""}${p.toFixed(1)}%`;
  const odds = (o) => o.toFixed(2);
  switch (alert.kind) {
    case "price_change":
      return `${alert.source} ${where} ${alert.outcome}: ${odds(alert.from)} → ${odds(alert.to)} (${pct(alert.change_pct)})`;
    case "direction_disagreement":
      return `${where} ${alert.outcome}: ` + alert.moves
        .map((m) => `${m.source} ${odds(m.from)} → ${odds(m.to)}`).join(", against ");
    case "availability":
      return `${alert.source} ${alert.state} ${where}`;
    case "surebet": {
      const legs = alert.legs.map((l) => `${l.outcome} @ ${odds(l.odds)} ${l.source}`).join(" · ");
      return alert.state === "open"
        ? `sure bet ${where} ${pct(alert.profit_pct)}: ${legs}`
        : `sure bet ${where} closed`;
    }
    default:
      return alert.kind;
  }
}
