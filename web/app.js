// The oddsbus live odds board: plain JavaScript, no build step.
//
// Its connection is the broker's own client module (/oddsbus-client.js): it refetches only
// the events each `odds_update` names from the cache-first reads (many updates arriving close
// together share one refetch round), and after a reconnect only those the server replays as
// missed. It refetches everything on its first load and on `resync` (a restarted broker, or
// a drop longer than the history). With `odds_changes` on (a setting kept in this browser),
// the odds come with the push and nothing is refetched but on `resync`. Rows are updated in
// place, so a message never re-renders the table. With `alerts` on, the alerts feed is live.
import { OddsbusClient } from "/oddsbus-client.js";
import { followAlerts } from "/alerts.js";
import { eventIds, removeRow, renderRow, setBeatenOnly, setMarket, setOpenings, setOrder, setSearch, setupBoard } from "/board.js";
import { followMoves, openChart } from "/chart.js";

const SOURCES = document.querySelector('meta[name="oddsbus-sources"]').content.split(",");
const HOME = "betpawa";
/** The topic toggles are a setting: kept in this browser. */
const TOPICS_KEY = "oddsbus-topics";
const savedTopics = JSON.parse(localStorage.getItem(TOPICS_KEY) ?? "null");
const TOPICS = Array.isArray(savedTopics) ? savedTopics : ["odds_updates", "scrape_progress", "alerts"];
/** Refetch rounds: updates gather for FETCH_DELAY_MS, then their events are read in requests
 * of up to FETCH_BATCH ids, at most FETCH_CONCURRENCY requests at a time. */
const FETCH_CONCURRENCY = 2;
const FETCH_BATCH = 200;
const FETCH_DELAY_MS = 100;

const $ = (selector) => document.querySelector(selector);

// ---- access token ------------------------------------------------------------------------
// A broker started with --auth-secret needs a token: from the page's address (/#token=...,
// which never reaches a server log) or typed in; kept for this tab only. It goes as a bearer
// on reads and the scrape stream, and as a subprotocol on the WebSocket (the client module):
// never in a URL.

const TOKEN_KEY = "oddsbus-token";
const fromAddress = new URLSearchParams(location.hash.slice(1)).get("token");
if (fromAddress) {
  sessionStorage.setItem(TOKEN_KEY, fromAddress);
  history.replaceState(null, "", location.pathname + location.search);
}
const token = () => sessionStorage.getItem(TOKEN_KEY) ?? "";
const read = (url, signal) => fetch(url, { signal, headers: token() ? { authorization: `Bearer ${token()}` } : {} });

const bus = new OddsbusClient({ topics: TOPICS, token });

const state = {
  connectionId: null,
  live: false,
  /** Whether the board has been loaded whole once; after that, changes are enough. */
  loaded: false,
  /** The toggles show the server's set, which the server confirms. */
  serverTopics: new Set(),
  /** Events pushed without details whose details were read once. */
  asked: new Set(),
  pending: new Set(),
  flushTimer: null,
  fetching: 0,
  /** [timestamp ms, ids] of recent odds_update messages, for the rate counter. */
  recent: [],
  scrape: null,
};

// ---- connection ------------------------------------------------------------------------

/** What the board did, for the browser test: whole loads, events refetched, snapshots pushed. */
window.board = { bus, fullLoads: 0, refetched: 0, pushed: 0, recovered: [] };

function setStatus(status) {
  const el = $("#status");
  el.dataset.state = status;
  el.textContent = status;
  $("#connection-id").textContent = status === "live" ? state.connectionId : "";
}

bus.addEventListener("status", ({ detail }) => {
  state.live = detail.status === "live";
  if (state.live) state.connectionId = detail.connectionId;
  setStatus(detail.status);
  if (detail.refused) log("the broker refused the connection or cannot be reached: with --auth-secret it needs a token (paste one above)");
  if (state.live && !state.loaded) {
    state.loaded = true;
    refetchAll();
  }
});
bus.addEventListener("topics", ({ detail }) => {
  state.serverTopics = detail.topics;
  renderToggles();
});
bus.addEventListener("recovered", ({ detail }) => {
  window.board.recovered = detail.topics;
  log(`resumed ${detail.topics.join(", ")} without loss`);
});
bus.addEventListener("changed", ({ detail }) => {
  // With odds_changes on, the same changes come with their odds: nothing to refetch.
  if (state.serverTopics.has("odds_changes")) return;
  state.recent.push([Date.now(), detail.eventIds.length]);
  for (const id of detail.eventIds) state.pending.add(id);
  scheduleFlush();
});
bus.addEventListener("snapshots", ({ detail }) => {
  state.recent.push([Date.now(), detail.snapshots.length]);
  for (const snapshot of detail.snapshots) {
    const odds = { event_id: snapshot.event_id, betpawa: null, competitors: {} };
    if (detail.source === HOME) odds.betpawa = snapshot;
    else odds.competitors[detail.source] = snapshot;
    // A pushed snapshot says nothing of the match: read an unknown event's details once.
    if (renderRow(odds) && !state.asked.has(snapshot.event_id)) {
      state.asked.add(snapshot.event_id);
      state.pending.add(snapshot.event_id);
      scheduleFlush();
    }
  }
  window.board.pushed += detail.snapshots.length;
});
bus.addEventListener("resync", ({ detail }) => {
  if (detail.topic === "scrape_progress") return;
  log(`missed changes on ${detail.topic}: refetching everything`);
  refetchAll();
});
bus.addEventListener("progress", ({ detail }) => showProgress(detail.progress));
bus.addEventListener("message", ({ detail }) => {
  if (detail.type === "error") log(`server: ${detail.code}: ${detail.message}`);
});

// ---- topic toggles -----------------------------------------------------------------------

function renderToggles() {
  for (const input of document.querySelectorAll("#topics input")) {
    const topic = input.dataset.topic;
    input.checked = state.serverTopics.has(topic);
    const pending = bus.wanted.has(topic) !== state.serverTopics.has(topic);
    input.parentElement.classList.toggle("pending", pending && state.live);
  }
}

for (const input of document.querySelectorAll("#topics input")) {
  input.addEventListener("change", () => {
    const topic = input.dataset.topic;
    if (input.checked) bus.subscribe([topic]);
    else bus.unsubscribe([topic]);
    localStorage.setItem(TOPICS_KEY, JSON.stringify([...bus.wanted]));
    renderToggles(); // shows the server's set until it answers
  });
}

// ---- cache-first reads -------------------------------------------------------------------

function scheduleFlush() {
  if (state.flushTimer === null) {
    state.flushTimer = setTimeout(flush, FETCH_DELAY_MS);
  }
}

function flush() {
  state.flushTimer = null;
  while (state.fetching < FETCH_CONCURRENCY && state.pending.size) {
    const ids = [];
    for (const id of state.pending) {
      ids.push(id);
      if (ids.length === FETCH_BATCH) break;
    }
    for (const id of ids) state.pending.delete(id);
    state.fetching += 1;
    fetchEvents(ids).finally(() => {
      state.fetching -= 1;
      if (state.pending.size) scheduleFlush();
    });
  }
}

/** Reads the named events in one request; events the cache no longer has lose their row. */
async function fetchEvents(ids) {
  try {
    const response = await read(`/api/events/odds?ids=${ids.join(",")}`);
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const { events } = await response.json();
    const returned = new Set();
    for (const odds of events) {
      returned.add(odds.event_id);
      renderRow(odds);
    }
    for (const id of ids) if (!returned.has(id)) removeRow(id);
    window.board.refetched += ids.length;
  } catch (error) {
    log(`refetch failed: ${error.message}`);
    for (const id of ids) state.pending.add(id); // try again with the next round
  }
}

async function refetchAll() {
  window.board.fullLoads += 1;
  try {
    const response = await read("/api/events");
    const { events } = await response.json();
    const present = new Set(events.map((e) => e.event_id));
    for (const id of eventIds()) if (!present.has(id)) removeRow(id);
    for (const id of present) state.pending.add(id);
    flush();
  } catch (error) {
    log(`refetch failed: ${error.message}`);
  }
}

// ---- the board and its controls -------------------------------------------------------

const open = (id) => openChart(id, { read, sources: SOURCES });
setupBoard({ sources: SOURCES, home: HOME, onOpen: open, onOpenings: askOpenings });
for (const tab of document.querySelectorAll("#markets [data-market]")) {
  tab.addEventListener("click", () => {
    for (const other of document.querySelectorAll("#markets [data-market]")) {
      other.setAttribute("aria-selected", String(other === tab));
    }
    setMarket(tab.dataset.market);
  });
}
$("#search").addEventListener("input", (event) => setSearch(event.target.value));
$("#beaten").addEventListener("change", (event) => setBeatenOnly(event.target.checked));
$("#order").addEventListener("change", (event) => setOrder(event.target.value));
followMoves(read, fetchEvents);
followAlerts({ bus, read, open });

// ---- opening prices ----------------------------------------------------------------------
// Rows whose prices lack their opening ask for it; the asks of a second go in one read of up
// to FETCH_BATCH events (`GET /api/events/fair?ids=`).

const openings = { pending: new Set(), timer: null };

function askOpenings(id) {
  openings.pending.add(id);
  openings.timer ??= setTimeout(readOpenings, 1000);
}

async function readOpenings() {
  openings.timer = null;
  const ids = [...openings.pending].slice(0, FETCH_BATCH);
  for (const id of ids) openings.pending.delete(id);
  if (openings.pending.size) openings.timer = setTimeout(readOpenings, 1000);
  try {
    const response = await read(`/api/events/fair?ids=${ids.join(",")}`);
    if (!response.ok) return;
    const { events } = await response.json();
    for (const event of events) setOpenings(event);
  } catch { /* the rows ask again */ }
}

// ---- scrape progress ---------------------------------------------------------------------

function platformBox(platform) {
  let box = document.querySelector(`.platform[data-platform="${platform}"]`);
  if (!box) {
    box = document.createElement("div");
    box.className = "platform";
    box.dataset.platform = platform;
    box.innerHTML = `<div class="name"></div><progress max="1" value="0"></progress><div class="note"></div>`;
    box.querySelector(".name").textContent = platform;
    $("#platforms").appendChild(box);
  }
  return box;
}

function showProgress(progress) {
  if (progress.phase === "started") {
    $("#platforms").replaceChildren();
    for (const source of SOURCES) platformBox(source).querySelector(".note").textContent = "waiting";
  }
  const box = progress.platform ? platformBox(progress.platform) : null;
  const bar = box && box.querySelector("progress");
  switch (progress.phase) {
    case "platform_started":
      bar.removeAttribute("value"); // indeterminate while it runs
      box.querySelector(".note").textContent = "scraping…";
      break;
    case "platform_progress": // the platform's own counts
      bar.value = progress.events_total ? progress.events_scraped / progress.events_total : 0;
      box.querySelector(".note").textContent = `${progress.events_scraped} of ${progress.events_total}`;
      return; // the run's status line keeps the run's counts
    case "platform_completed":
      bar.value = 1;
      box.querySelector(".note").textContent = progress.message;
      break;
    case "failed":
      if (box) {
        box.classList.add("failed");
        bar.value = 0;
        box.querySelector(".note").textContent = progress.message;
      }
      break;
  }
  const done = progress.phase === "completed" || (progress.phase === "failed" && !progress.platform);
  $("#run-status").textContent = done
    ? `${progress.phase}: ${progress.message}`
    : `running (${progress.events_scraped} of ${progress.events_total} events)`;
  $("#run-status").dataset.phase = done ? progress.phase : "running";
}

// The stream is read with fetch rather than EventSource, which cannot send the token as a
// header (in the URL, proxies would log it) and reconnects by itself (starting another run).
$("#scrape").addEventListener("click", async () => {
  if (state.scrape) return;
  const button = $("#scrape");
  button.disabled = true;
  state.scrape = new AbortController();
  try {
    const response = await read("/api/scrape/stream", state.scrape.signal);
    if (!response.ok) {
      const reply = await response.json().catch(() => null);
      log(reply?.error?.message ?? `the scrape stream was refused (${response.status})`);
      return;
    }
    for await (const data of serverEvents(response.body)) {
      const progress = JSON.parse(data);
      showProgress(progress);
      if (progress.phase === "completed" || (progress.phase === "failed" && !progress.platform)) break;
    }
  } catch (error) {
    log(`the scrape stream was cut: ${error.message}`);
  } finally {
    state.scrape.abort();
    state.scrape = null;
    button.disabled = false;
  }
});

/** The `data` of each event in a Server-Sent Events body (comments and other fields skipped). */
async function* serverEvents(body) {
  const lines = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  let data = [];
  for (;;) {
    const { value, done } = await lines.read();
    if (done) return;
    buffered += value;
    const complete = buffered.split(/\r?\n/);
    buffered = complete.pop();
    for (const line of complete) {
      if (line === "") {
        if (data.length) yield data.join("\n");
        data = [];
      } else if (line.startsWith("data:")) {
        data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
      }
    }
  }
}

$("#token").value = token();
$("#token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("#token").value.trim());
  // An open socket reconnects with the new token when closed; a closed one already has a
  // reconnect pending, which will use it.
  bus.socket?.close();
});

// ---- updates per second and messages -----------------------------------------------------

setInterval(() => {
  const now = Date.now();
  state.recent = state.recent.filter(([t]) => now - t < 1000);
  $("#rate").textContent = state.recent.reduce((sum, [, n]) => sum + n, 0);
}, 250);

function log(text) {
  $("#log").textContent = text;
}

bus.connect();
