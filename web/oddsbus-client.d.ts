// Types for oddsbus-client.js, served by the broker at /oddsbus-client.d.ts. The messages
// are those of docs/PROTOCOL.md.

/** A topic of the broker. */
export type Topic = "odds_updates" | "odds_changes" | "scrape_progress" | "alerts";

/** A topic's position: its epoch and the offset of the last message received. */
export interface Position {
  epoch: string;
  offset: number;
}

/** One outcome's price. */
export interface Outcome {
  name: string;
  odds: number;
}

/** One market of a snapshot. */
export interface Market {
  market_id: string;
  name: string;
  line?: number | null;
  outcomes: Outcome[];
}

/** One source's latest odds for an event, as the reads and `odds_change` give them. */
export interface Snapshot {
  event_id: number;
  snapshot_id: number;
  bookmaker_id?: number | null;
  captured_at: string;
  markets: Market[];
}

/** A scrape run's step, as `scrape_progress` carries it. */
export interface ScrapeProgress {
  /** Same for every step of one run. */
  run_id: string;
  phase: "started" | "platform_started" | "platform_progress" | "platform_completed" | "completed" | "failed";
  /** The platform the step is about; null for the run's own steps. */
  platform: string | null;
  events_scraped: number;
  events_total: number;
  message: string;
}

/** One bookmaker's move, as a direction disagreement names it. */
export interface PriceMove {
  source: string;
  from: number;
  to: number;
  change_pct: number;
}

/** One leg of a sure bet: back `outcome` at `source`, with `stake_share` of the total. */
export interface Leg {
  outcome: string;
  source: string;
  odds: number;
  stake_share: number;
}

/** What every alert says: what it is, how serious, where, and when it was raised. */
interface AlertBase {
  severity: "warning" | "elevated" | "critical";
  event_id: number;
  /** The bookmaker whose change raised it. */
  source: string;
  market_id: string;
  line: number | null;
  /** When it was raised (RFC 3339, UTC). */
  at: string;
}

/** An `odds_alert`'s data, and an item of `GET /api/alerts` (docs/PROTOCOL.md, "Odds alerts"). */
export type Alert = AlertBase & (
  | { kind: "price_change"; outcome: string; from: number; to: number; change_pct: number }
  | { kind: "direction_disagreement"; outcome: string; moves: [PriceMove, PriceMove] }
  | { kind: "availability"; state: "pulled" | "returned" }
  | { kind: "surebet"; state: "open" | "closed"; profit_pct: number; legs: Leg[] }
);

/** What each event's `detail` holds, by event name. */
export interface OddsbusEventMap {
  status: {
    status: "connecting" | "live" | "reconnecting";
    connectionId?: string;
    /** On "reconnecting": the connection never opened (refused, or the broker is away). */
    refused?: boolean;
  };
  topics: { topics: Set<Topic> };
  /** An `odds_update`: these events of `source` changed; refetch them. */
  changed: { eventIds: number[]; source: string; offset?: number };
  /** An `odds_change`: the changed snapshots themselves. */
  snapshots: { snapshots: Snapshot[]; source: string; offset?: number };
  progress: { progress: ScrapeProgress; offset?: number };
  /** An `odds_alert` (topic `alerts`). */
  alert: { alert: Alert; offset?: number };
  /** Some messages of `topic` cannot be replayed: refetch everything of it. */
  resync: { topic: Topic; missed: number; reason: "missed" };
  /** Topics resumed without loss on (re)connecting. */
  recovered: { topics: Topic[] };
  /** Any other server message (errors, pongs), as sent. */
  message: Record<string, unknown>;
}

export interface OddsbusClientOptions {
  /** The WebSocket URL; default: /api/ws on the broker this module was loaded from. */
  url?: string;
  /** Topics to subscribe to; default: odds_updates. */
  topics?: Topic[];
  /** Returns the access token, if the broker needs one. */
  token?: () => string;
  /** Reconnect delays in milliseconds: doubling from `base` up to `cap`, each ±50%. */
  backoff?: { base: number; cap: number };
}

export class OddsbusClient extends EventTarget {
  constructor(options?: OddsbusClientOptions);
  /** The WebSocket URL it connects to. */
  readonly url: string;
  /** The broker's HTTP origin, for the reads: `${bus.origin}/api/events/odds?ids=1,2`. */
  readonly origin: string;
  /** Topics the application wants. */
  readonly wanted: Set<Topic>;
  /** The server's subscription set on this connection. */
  topics: Set<Topic>;
  /** Each topic's last known position, kept across reconnects. */
  readonly positions: Map<Topic, Position>;
  /** The open WebSocket, if any. */
  socket: WebSocket | null;
  /** Opens the connection (and keeps it open until `close`). */
  connect(): void;
  /** Closes the connection for good. */
  close(): void;
  /** Adds topics; each resumes from its last known position if it has one. */
  subscribe(topics: Topic[]): void;
  /** Removes topics (their positions are kept). */
  unsubscribe(topics: Topic[]): void;
  /** Asks for a pong: it comes after everything published before it. */
  ping(): void;
  addEventListener<K extends keyof OddsbusEventMap>(
    type: K,
    listener: (event: CustomEvent<OddsbusEventMap[K]>) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  removeEventListener<K extends keyof OddsbusEventMap>(
    type: K,
    listener: (event: CustomEvent<OddsbusEventMap[K]>) => void,
    options?: boolean | EventListenerOptions,
  ): void;
}
