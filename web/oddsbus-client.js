// oddsbus-client: a small, dependency-free client for the oddsbus WebSocket, served by the
// broker at /oddsbus-client.js (its types at /oddsbus-client.d.ts). The wire contract is
// docs/PROTOCOL.md (v1 and v1.1).
//
//   import { OddsbusClient } from "http://127.0.0.1:8000/oddsbus-client.js";
//   const bus = new OddsbusClient({ topics: ["odds_updates"] });
//   bus.addEventListener("changed", (e) => refetch(e.detail.eventIds)); // these ids changed
//   bus.addEventListener("resync", () => refetchEverything());          // we may have missed some
//   bus.connect();
//
// Imported from the broker, it connects to that broker, from a page on any site the broker
// allows (`--allowed-origins`); `bus.origin` is where the reads are (`${bus.origin}/api/...`).
// A copy served from elsewhere is told where the broker is: `new OddsbusClient({ url })`.
//
// A client that would rather not refetch subscribes to "odds_changes" instead: its
// "snapshots" events carry the changed snapshots themselves, as the reads return them.
//
// It reconnects by itself with exponential backoff and jitter, and resumes where it left off:
// it remembers each topic's position (epoch and offset) and reconnects with `since`, so after
// a short drop the server replays exactly what was missed ("changed" events, in order). When
// it cannot (the broker restarted, or the drop outlasted the history), "resync" says so.
//
// Events (each a CustomEvent; the payload is `event.detail`):
//   status    {status: "connecting"|"live"|"reconnecting", connectionId, refused}
//   topics    {topics}                      the server's subscription set, after each change
//   changed   {eventIds, source, offset}    an odds_update
//   snapshots {snapshots, source, offset}   an odds_change: each snapshot as the reads give it
//   progress  {progress, offset}            a scrape_progress step
//   alert     {alert, offset}               an odds_alert (topic "alerts", opt-in)
//   resync    {topic, missed, reason}       refetch everything of `topic` from the reads
//   recovered {topics}                      topics resumed without loss on (re)connecting
//   message   the raw server message, for anything else (errors, pongs)

/** Backoff: doubles from `base` up to `cap` milliseconds, each delay with ±50% jitter. */
const DEFAULT_BACKOFF = { base: 250, cap: 10000 };

export class OddsbusClient extends EventTarget {
  /**
   * @param {object} options
   * @param {string} [options.url] the WebSocket URL; default: /api/ws on the broker this
   *   module was loaded from
   * @param {string[]} [options.topics] topics to subscribe to; default: odds_updates
   * @param {() => string} [options.token] returns the access token, if the broker needs one
   * @param {{base: number, cap: number}} [options.backoff] reconnect delays, in milliseconds
   */
  constructor({ url, topics = ["odds_updates"], token = () => "", backoff = DEFAULT_BACKOFF } = {}) {
    super();
    const socket = new URL(url ?? "/api/ws", import.meta.url);
    socket.protocol = socket.protocol.replace(/^http/, "ws");
    this.url = socket.href;
    /** The broker's HTTP origin, for the reads: `${bus.origin}/api/events/odds?ids=1,2`. */
    this.origin = `${socket.protocol.replace(/^ws/, "http")}//${socket.host}`;
    this.token = token;
    this.backoff = backoff;
    /** Topics the application wants; the server's set is `this.topics`. */
    this.wanted = new Set(topics);
    this.topics = new Set();
    /** topic -> {epoch, offset}: the last position known on this connection or before. */
    this.positions = new Map();
    this.socket = null;
    this.attempt = 0;
    this.closed = true;
  }

  /** Opens the connection (and keeps it open until `close`). */
  connect() {
    this.closed = false;
    this.#open();
  }

  /** Closes the connection for good. */
  close() {
    this.closed = true;
    this.socket?.close();
  }

  /** Adds topics; each resumes from its last known position if it has one. */
  subscribe(topics) {
    for (const topic of topics) this.wanted.add(topic);
    const since = this.#since(topics);
    this.#send({ type: "subscribe", topics, ...(Object.keys(since).length ? { since } : {}) });
  }

  /** Removes topics (their positions are kept, to resume if they are subscribed again). */
  unsubscribe(topics) {
    for (const topic of topics) this.wanted.delete(topic);
    this.#send({ type: "unsubscribe", topics });
  }

  /** Asks for a pong: it comes after everything published before it (a barrier). */
  ping() {
    this.#send({ type: "ping" });
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  #open() {
    this.#emit("status", { status: this.attempt === 0 ? "connecting" : "reconnecting" });
    // An empty `topics` would mean every topic: ask for one and unsubscribe it after.
    const topics = this.wanted.size ? [...this.wanted] : ["odds_updates"];
    const query = new URLSearchParams({ topics: topics.join(",") });
    const since = Object.entries(this.#since(topics));
    if (since.length) query.set("since", since.map(([t, p]) => `${t}:${p.epoch}:${p.offset}`).join(","));
    // The token rides in the subprotocols, not the URL, so no access log records it.
    const token = this.token();
    const protocols = token ? ["oddsbus.bearer", `oddsbus.token.${token}`] : [];
    const socket = new WebSocket(`${this.url}?${query}`, protocols);
    this.socket = socket;
    let opened = false;
    socket.onopen = () => { opened = true; };
    socket.onmessage = (event) => this.#onMessage(JSON.parse(event.data));
    socket.onclose = () => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.topics = new Set();
      this.#emit("topics", { topics: this.topics });
      if (this.closed) return;
      this.attempt += 1;
      this.#emit("status", { status: "reconnecting", refused: !opened });
      const delay = Math.min(this.backoff.cap, this.backoff.base * 2 ** (this.attempt - 1));
      setTimeout(() => { if (!this.closed) this.#open(); }, delay * (0.5 + Math.random()));
    };
  }

  /** `since` entries for the topics with a known position. */
  #since(topics) {
    const since = {};
    for (const topic of topics) {
      const position = this.positions.get(topic);
      if (position) since[topic] = position;
    }
    return since;
  }

  #send(message) {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }

  #track(topic, offset) {
    const position = this.positions.get(topic);
    if (position && offset !== undefined) position.offset = offset;
  }

  #onMessage(message) {
    switch (message.type) {
      case "connection_ack":
      case "subscribed":
        for (const [topic, position] of Object.entries(message.positions ?? {})) {
          this.positions.set(topic, { ...position });
        }
        this.topics = new Set(message.topics);
        this.#emit("topics", { topics: this.topics });
        if (message.recovered?.length) this.#emit("recovered", { topics: message.recovered });
        if (message.type === "connection_ack") {
          this.attempt = 0;
          this.#emit("status", { status: "live", connectionId: message.connection_id });
          this.#reconcile();
        }
        break;
      case "unsubscribed":
        this.topics = new Set(message.topics);
        this.#emit("topics", { topics: this.topics });
        break;
      case "odds_update":
        this.#track("odds_updates", message.offset);
        this.#emit("changed", { eventIds: message.data.event_ids, source: message.data.source, offset: message.offset });
        break;
      case "odds_change":
        this.#track("odds_changes", message.offset);
        this.#emit("snapshots", { snapshots: message.data.snapshots, source: message.data.source, offset: message.offset });
        break;
      case "scrape_progress":
        this.#track("scrape_progress", message.offset);
        this.#emit("progress", { progress: message.data, offset: message.offset });
        break;
      case "odds_alert":
        this.#track("alerts", message.offset);
        this.#emit("alert", { alert: message.data, offset: message.offset });
        break;
      case "resync":
        this.#emit("resync", { topic: message.topic, missed: message.missed, reason: "missed" });
        break;
      default:
        this.#emit("message", message);
    }
  }

  /** Brings the server's set to what the application wants. */
  #reconcile() {
    const add = [...this.wanted].filter((t) => !this.topics.has(t));
    const remove = [...this.topics].filter((t) => !this.wanted.has(t));
    if (add.length) this.subscribe(add);
    if (remove.length) this.#send({ type: "unsubscribe", topics: remove });
  }
}
