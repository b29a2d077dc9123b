// The board's table: one row per event (kickoff, teams, competition), each source's prices for
// the chosen market with the best of each outcome highlighted, each source's margin, how each
// price last moved and how far it is from its opening, and a badge on a row whose best prices
// make a sure bet. Rows are updated in place; a change of market, search, filter or order
// touches every row once, a changed price only its row.

const $ = (selector) => document.querySelector(selector);

/** The markets the tabs show: the cache's market id, its short name, its line, its outcomes
 * in order. */
export const MARKETS = {
  "1x2": { name: "1X2", line: null, outcomes: ["1", "X", "2"] },
  over_under: { name: "O/U", line: 2.5, outcomes: ["Over", "Under"] },
  btts: { name: "BTTS", line: null, outcomes: ["Yes", "No"] },
};

/** A market as a line names it: "1X2", "O/U 2.5". */
export function marketName(marketId, line) {
  const name = MARKETS[marketId]?.name ?? marketId;
  return line === null || line === undefined ? name : `${name} ${line}`;
}

const board = {
  sources: [],
  home: "betpawa",
  market: "1x2",
  search: "",
  beatenOnly: false,
  order: "competition",
  /** event id -> { el, odds, details, cells: Map(source -> [cell]), margins: Map(source -> cell) } */
  rows: new Map(),
  /** Event ids in display order, parallel to the rows in #rows. */
  ordered: [],
  /** Rows on screen: only these flash. */
  visible: new Set(),
  summaryTimer: null,
  groupsTimer: null,
  /** Called with an event id whose shown prices lack their opening price. */
  onOpenings: () => {},
};

/** How long a row waits before asking again for openings the analysis did not have. */
const OPENINGS_RETRY_MS = 5000;

const visibility = new IntersectionObserver((entries) => {
  for (const entry of entries) {
    if (entry.isIntersecting) board.visible.add(entry.target);
    else board.visible.delete(entry.target);
  }
});

export function setupBoard({ sources, home, onOpen, onOpenings }) {
  board.sources = sources;
  board.home = home;
  board.onOpenings = onOpenings;
  $("#board").dataset.order = board.order;
  renderHeader();
  const rows = $("#rows");
  rows.addEventListener("click", (event) => {
    const row = event.target.closest(".row");
    if (row) onOpen(Number(row.dataset.event));
  });
  rows.addEventListener("keydown", (event) => {
    const row = event.target.closest(".row");
    if (!row) return;
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      onOpen(Number(row.dataset.event));
    } else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      let next = row;
      do next = event.key === "ArrowDown" ? next.nextElementSibling : next.previousElementSibling;
      while (next && next.hidden);
      if (next) next.focus();
    }
  });
}

/** What the board knows of an event, for the chart and the moves panel. */
export function eventOf(id) {
  const row = board.rows.get(id);
  return row ? { odds: row.odds, details: row.details } : null;
}

/** The events the board shows a row for. */
export function eventIds() {
  return [...board.rows.keys()];
}

export function marketShown() {
  return board.market;
}

export function setMarket(market) {
  board.market = market;
  renderHeader();
  for (const row of board.rows.values()) {
    buildCells(row);
    fill(row, false);
  }
  scheduleSummary();
}

export function setSearch(text) {
  board.search = text.trim().toLowerCase();
  for (const row of board.rows.values()) applyFilter(row);
  scheduleGroups();
}

export function setBeatenOnly(on) {
  board.beatenOnly = on;
  for (const row of board.rows.values()) applyFilter(row);
  scheduleGroups();
}

export function setOrder(order) {
  board.order = order;
  $("#board").dataset.order = order;
  board.ordered.sort((a, b) => compare(board.rows.get(a), board.rows.get(b)));
  $("#rows").replaceChildren(...board.ordered.map((id) => board.rows.get(id).el));
  scheduleGroups();
}

// ---- rows ------------------------------------------------------------------------------

function cell(text, className) {
  const el = document.createElement("div");
  el.className = className ? `cell ${className}` : "cell";
  el.setAttribute("role", "cell");
  el.textContent = text;
  return el;
}

function renderHeader() {
  const { outcomes } = MARKETS[board.market];
  // kickoff, event, then per source its outcomes and its margin.
  const perSource = `${"82px ".repeat(outcomes.length)}56px`;
  const columns = `84px minmax(180px, 280px) ${Array(board.sources.length).fill(perSource).join(" ")}`;
  $("#board").style.setProperty("--columns", columns);
  $("#board").style.setProperty("--outcomes", outcomes.length);
  const top = document.createElement("div");
  top.className = "row head";
  top.setAttribute("role", "row");
  const sub = top.cloneNode();
  top.append(cell("", "when"), cell("event", "event"));
  sub.append(cell("kickoff", "when"), cell("", "event"));
  for (const source of board.sources) {
    const name = cell(source, "source");
    name.style.gridColumn = `span ${outcomes.length + 1}`;
    top.appendChild(name);
    outcomes.forEach((outcome, i) => sub.appendChild(cell(outcome, i === 0 ? "first" : "")));
    sub.appendChild(cell("margin", "margin"));
  }
  $("#board-head").replaceChildren(top, sub);
}

function buildCells(row) {
  const { outcomes } = MARKETS[board.market];
  row.cells = new Map();
  row.margins = new Map();
  const parts = [row.when, row.event];
  board.sources.forEach((source, index) => {
    // A phone's card puts each source on a line of its own (style.css).
    const line = String(3 + index);
    const cells = outcomes.map((outcome, i) => {
      const el = cell("", i === 0 ? "first missing" : "missing");
      const price = document.createElement("span");
      price.className = "price";
      price.textContent = "–";
      const since = document.createElement("small");
      since.className = "since";
      el.append(price, since);
      el.dataset.source = source;
      el.dataset.outcome = outcome;
      el.style.setProperty("--line", line);
      return el;
    });
    const margin = cell("", "margin");
    margin.dataset.source = source;
    margin.style.setProperty("--line", line);
    row.cells.set(source, cells);
    row.margins.set(source, margin);
    parts.push(...cells, margin);
  });
  row.el.replaceChildren(...parts);
}

function newRow(id) {
  const el = document.createElement("div");
  el.className = "row";
  el.setAttribute("role", "row");
  el.tabIndex = 0;
  el.dataset.event = id;
  const badge = document.createElement("span");
  badge.className = "surebet";
  badge.hidden = true;
  const row = {
    id, el, odds: null, details: null, when: cell("", "when"), event: cell("", "event"), badge,
    /** "market line outcome source" -> the analysis's opening price, and when it was asked. */
    openings: new Map(), openingsAsked: 0,
  };
  row.event.append(badge, String(id));
  buildCells(row);
  board.rows.set(id, row);
  visibility.observe(el);
  place(row);
  $("#event-count").textContent = board.rows.size;
  return row;
}

/** Where `row` goes: by competition then kickoff, or by kickoff; then name, then id. */
function compare(a, b) {
  const kickoff = (row) => row.details?.kickoff ?? "9999";
  const competition = (row) => row.details?.competition ?? "~";
  const keys = (row) => board.order === "kickoff"
    ? [kickoff(row), competition(row), row.details?.name ?? "", row.id]
    : [competition(row), kickoff(row), row.details?.name ?? "", row.id];
  const [x, y] = [keys(a), keys(b)];
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return x[i] < y[i] ? -1 : 1;
  return 0;
}

function place(row) {
  let low = 0;
  let high = board.ordered.length;
  while (low < high) {
    const mid = (low + high) >> 1;
    if (compare(board.rows.get(board.ordered[mid]), row) < 0) low = mid + 1;
    else high = mid;
  }
  const before = board.ordered[low];
  $("#rows").insertBefore(row.el, before === undefined ? null : board.rows.get(before).el);
  board.ordered.splice(low, 0, row.id);
  scheduleGroups();
}

export function removeRow(id) {
  const row = board.rows.get(id);
  if (!row) return;
  visibility.unobserve(row.el);
  board.visible.delete(row.el);
  row.el.remove();
  board.rows.delete(id);
  board.ordered.splice(board.ordered.indexOf(id), 1);
  $("#event-count").textContent = board.rows.size;
  scheduleSummary();
}

/** Each source's newer snapshot of `odds` and of what `row` shows: a push and a refetch may
 * cross, and neither may take a row back to older odds. */
function merged(row, odds) {
  if (!row.odds) return odds;
  const newer = (a, b) => (!a ? b : !b ? a : a.snapshot_id >= b.snapshot_id ? a : b);
  const competitors = { ...row.odds.competitors };
  for (const [source, snapshot] of Object.entries(odds.competitors)) {
    competitors[source] = newer(competitors[source], snapshot);
  }
  return { event_id: odds.event_id, betpawa: newer(row.odds.betpawa, odds.betpawa), competitors };
}

/** Shows an event's odds (a read, or a push of one source) and its details, if given.
 * Returns whether the board still lacks the event's details. */
export function renderRow(incoming) {
  const row = board.rows.get(incoming.event_id) ?? newRow(incoming.event_id);
  row.odds = merged(row, incoming);
  if (incoming.event && JSON.stringify(incoming.event) !== JSON.stringify(row.details)) {
    row.details = incoming.event;
    showDetails(row);
    board.ordered.splice(board.ordered.indexOf(row.id), 1);
    place(row); // its kickoff or competition may move it
  }
  fill(row, board.visible.has(row.el));
  scheduleSummary();
  return row.details === null;
}

function showDetails(row) {
  const { name, competition, kickoff } = row.details;
  const title = document.createElement("span");
  title.className = "name";
  title.textContent = name ?? `event ${row.id}`;
  const where = document.createElement("span");
  where.className = "competition";
  where.textContent = competition ?? "";
  row.event.replaceChildren(row.badge, title, where);
  row.el.dataset.competition = competition ?? "";
  row.when.textContent = kickoff ? when(kickoff) : "";
  row.when.classList.toggle("live", Boolean(kickoff) && Date.parse(kickoff) <= Date.now());
}

/** `live` for a match under way, `HH:MM` today, `Sat 15:00` later. */
function when(kickoff) {
  const time = new Date(kickoff);
  if (time.getTime() <= Date.now()) return "live";
  const hm = time.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
  if (time.toDateString() === new Date().toDateString()) return hm;
  return `${time.toLocaleDateString([], { weekday: "short" })} ${hm}`;
}

/** The chosen market's prices in a snapshot, by outcome, in the tab's order. */
export function pricesIn(snapshot, market = board.market) {
  const { line, outcomes } = MARKETS[market];
  const found = snapshot?.markets.find((m) => m.market_id === market && (m.line ?? null) === line);
  const byName = new Map(found ? found.outcomes.map((o) => [o.name, o.odds]) : []);
  return outcomes.map((name) => byName.get(name));
}

/** A bookmaker's margin (overround): how far the implied probabilities sum above 1. */
export function margin(prices) {
  if (!prices.length || prices.some((p) => p === undefined)) return undefined;
  return prices.reduce((sum, p) => sum + 1 / p, 0) - 1;
}

function snapshotOf(odds, source) {
  return source === board.home ? odds.betpawa : odds.competitors[source];
}

function fill(row, flash) {
  const bySource = new Map(board.sources.map((s) => [s, pricesIn(snapshotOf(row.odds, s))]));
  const best = bestPrices(bySource);
  const { line, outcomes } = MARKETS[board.market];
  let unopened = false;
  for (const source of board.sources) {
    const prices = bySource.get(source);
    row.cells.get(source).forEach((el, i) => {
      const price = prices[i];
      const text = price === undefined ? "–" : price.toFixed(2);
      const shown = el.firstChild;
      if (shown.textContent !== text) {
        const before = Number(shown.textContent);
        const moved = shown.textContent !== "–" && price !== undefined;
        shown.textContent = text;
        el.classList.toggle("up", moved && price > before);
        el.classList.toggle("down", moved && price < before);
        if (moved && flash) {
          el.animate([{ background: "var(--flash)" }, { background: "transparent" }], { duration: 1200 });
        }
      }
      el.classList.toggle("missing", price === undefined);
      el.classList.toggle("best", price !== undefined && price === best[i]?.odds);
      const opening = row.openings.get(`${board.market} ${line} ${outcomes[i]} ${source}`);
      if (price !== undefined && opening === undefined) unopened = true;
      showSince(el.lastChild, price, opening);
    });
    const m = margin(prices);
    row.margins.get(source).textContent = m === undefined ? "" : `${(m * 100).toFixed(1)}%`;
  }
  showSurebet(row);
  if (unopened && Date.now() - row.openingsAsked > OPENINGS_RETRY_MS) {
    row.openingsAsked = Date.now();
    board.onOpenings(row.id);
  }
  applyFilter(row);
}

/** Each outcome of `market` (in the tab's order): its best price and the first source that
 * pays it, from `bySource` (each source's prices, as `pricesIn` gives them). */
function bestPrices(bySource, market = board.market) {
  return MARKETS[market].outcomes.map((outcome, i) => {
    let best;
    for (const source of board.sources) {
      const odds = bySource.get(source)[i];
      if (odds !== undefined && !(odds <= best?.odds)) best = { outcome, source, odds };
    }
    return best;
  });
}

/** "+12%" or "−4%" beside a price: how far it is from the first price the broker saw.
 * Written only when it changes: a row's update touches what changed, not every cell. */
function showSince(el, price, opening) {
  const change = price !== undefined && opening ? Math.round(100 * (price / opening - 1)) : 0;
  const text = change ? `${change > 0 ? "+" : "−"}${Math.abs(change)}%` : "";
  if (el.textContent === text) return;
  el.textContent = text;
  el.dataset.direction = change > 0 ? "up" : "down";
  el.parentElement.title = opening ? `opened at ${opening.toFixed(2)}` : "";
}

/** A market's sure bet from every source's prices: the best price of each outcome, when
 * their implied probabilities add up to under 1 (the rule of docs/PROTOCOL.md, "Odds
 * alerts"); null when there is none. */
function surebet(odds, market) {
  const bySource = new Map(board.sources.map((s) => [s, pricesIn(snapshotOf(odds, s), market)]));
  const legs = bestPrices(bySource, market);
  if (legs.some((leg) => !leg)) return null;
  const sum = legs.reduce((total, leg) => total + 1 / leg.odds, 0);
  return sum < 1 - 1e-9 ? { market, sum, profit: 1 / sum - 1, legs } : null;
}

/** The row's badge: its best sure bet (the shown market's first), its profit and legs. */
function showSurebet(row) {
  const found = Object.keys(MARKETS).map((m) => surebet(row.odds, m)).filter(Boolean);
  found.sort((a, b) => (a.market === board.market ? -1 : b.market === board.market ? 1 : b.profit - a.profit));
  const best = found[0];
  if (!best && row.badge.hidden) return; // the common case: nothing to write
  row.el.classList.toggle("arb", best?.market === board.market);
  row.badge.hidden = !best;
  if (!best) return;
  const market = best.market === board.market ? "" : ` ${marketName(best.market, MARKETS[best.market].line)}`;
  const text = `sure bet${market} +${(100 * best.profit).toFixed(1)}%`;
  if (row.badge.textContent !== text) row.badge.textContent = text;
  row.badge.title = best.legs
    .map((leg) => `${leg.outcome} @ ${leg.odds.toFixed(2)} at ${leg.source}: ${(100 / leg.odds / best.sum).toFixed(1)}% of the stake`)
    .join("\n");
}

/** Takes in the analysis's opening prices of an event (`GET /api/events/fair`). */
export function setOpenings({ event_id, markets }) {
  const row = board.rows.get(event_id);
  if (!row) return;
  for (const market of markets) {
    for (const outcome of market.outcomes) {
      for (const [source, price] of Object.entries(outcome.prices)) {
        row.openings.set(`${market.market_id} ${market.line ?? null} ${outcome.outcome} ${source}`, price.opening);
      }
    }
  }
  fill(row, false);
}

/** Whether some competitor pays more than the home bookmaker for some outcome. */
function beaten(row) {
  const home = pricesIn(row.odds?.betpawa);
  return board.sources.some((source) => source !== board.home &&
    pricesIn(row.odds?.competitors[source]).some((p, i) => p !== undefined && home[i] !== undefined && p > home[i]));
}

function applyFilter(row) {
  const text = `${row.details?.name ?? ""} ${row.details?.competition ?? ""}`.toLowerCase();
  const shown = (!board.search || text.includes(board.search)) && (!board.beatenOnly || beaten(row));
  if (row.el.hidden === shown) {
    row.el.hidden = !shown;
    scheduleGroups();
  }
}

// ---- competition headers and the summary, recomputed at most every 500 ms -----------------

function scheduleGroups() {
  if (board.groupsTimer === null) board.groupsTimer = setTimeout(markGroups, 200);
}

/** In competition order, the first shown row of each competition carries its name. */
function markGroups() {
  board.groupsTimer = null;
  let last = null;
  for (const id of board.ordered) {
    const row = board.rows.get(id);
    if (row.el.hidden) continue;
    const group = board.order === "competition" ? (row.details?.competition ?? "") : "";
    const first = group !== "" && group !== last;
    if (first) row.el.dataset.group = group;
    else delete row.el.dataset.group;
    last = group;
  }
}

function scheduleSummary() {
  if (board.summaryTimer === null) board.summaryTimer = setTimeout(renderSummary, 500);
}

/** Per competitor: on how many of the prices both offer it pays more than betpawa, and by how
 * much on average where it does. */
export function summary() {
  const tally = new Map(board.sources.filter((s) => s !== board.home).map((s) => [s, { compared: 0, beaten: 0, by: 0 }]));
  for (const row of board.rows.values()) {
    const home = pricesIn(row.odds?.betpawa);
    for (const [source, t] of tally) {
      pricesIn(row.odds?.competitors[source]).forEach((p, i) => {
        if (p === undefined || home[i] === undefined) return;
        t.compared += 1;
        if (p > home[i]) {
          t.beaten += 1;
          t.by += p / home[i] - 1;
        }
      });
    }
  }
  return tally;
}

function renderSummary() {
  board.summaryTimer = null;
  const parts = [];
  for (const [source, t] of summary()) {
    const item = document.createElement("div");
    item.className = "beaten";
    item.dataset.source = source;
    const share = t.compared ? (100 * t.beaten) / t.compared : 0;
    const by = t.beaten ? (100 * t.by) / t.beaten : 0;
    item.innerHTML = `<strong></strong> beats betpawa on <b class="share"></b> of prices <span class="count"></span>, by <b class="by"></b> on average`;
    item.querySelector("strong").textContent = source;
    item.querySelector(".share").textContent = `${share.toFixed(0)}%`;
    item.querySelector(".count").textContent = `(${t.beaten} of ${t.compared})`;
    item.querySelector(".by").textContent = `${by.toFixed(1)}%`;
    parts.push(item);
  }
  $("#summary").replaceChildren(...parts);
}
