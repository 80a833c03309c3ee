// Live updates: GET /api/v1/stream read with fetch() (EventSource cannot send the Authorization header), parsed
// as server-sent events, with a watchdog (nothing for 25 s: stale) and reconnection with backoff.
import type { components } from "./schema";

export type StreamEvent = components["schemas"]["StreamEvent"];
export type StreamKind = StreamEvent["kind"];

// ----- the SSE parser -------------------------------------------------------------------------------------------

/** One server-sent event as it arrived: its `event:` name (default "message"), `id:` and joined `data:` lines. */
export interface SseMessage {
  event: string;
  id: string | null;
  data: string;
  retry: number | null;
}

/**
 * Incremental parser for `text/event-stream` (the WHATWG rules): feed it text chunks however they were split
 * (mid-line, mid-event, several events at once, CRLF split across chunks) and it returns the complete events.
 */
export class SseParser {
  private buffer = "";
  private pendingCR = false;
  private event = "";
  private data: string[] = [];
  private id: string | null = null;
  private lastId: string | null = null;
  private retry: number | null = null;

  push(chunk: string): SseMessage[] {
    const out: SseMessage[] = [];
    let text = chunk;
    if (this.pendingCR) {
      // the previous chunk ended with "\r": a following "\n" belongs to the same line break
      if (text.startsWith("\n")) text = text.slice(1);
      this.pendingCR = false;
    }
    this.buffer += text;
    let start = 0;
    for (let i = 0; i < this.buffer.length; i++) {
      const ch = this.buffer[i];
      if (ch !== "\n" && ch !== "\r") continue;
      const line = this.buffer.slice(start, i);
      if (ch === "\r") {
        if (i + 1 < this.buffer.length) {
          if (this.buffer[i + 1] === "\n") i++;
        } else {
          this.pendingCR = true;
        }
      }
      start = i + 1;
      const message = this.line(line);
      if (message) out.push(message);
    }
    this.buffer = this.buffer.slice(start);
    return out;
  }

  /** The stream ended: an unterminated event is dropped (the spec's rule). */
  reset(): void {
    this.buffer = "";
    this.pendingCR = false;
    this.event = "";
    this.data = [];
    this.id = null;
    this.retry = null;
  }

  private line(line: string): SseMessage | null {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return null; // a comment
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    switch (field) {
      case "event":
        this.event = value;
        break;
      case "data":
        this.data.push(value);
        break;
      case "id":
        if (!value.includes("\0")) this.id = value;
        break;
      case "retry":
        if (/^\d+$/.test(value)) this.retry = Number(value);
        break;
      default:
        break; // unknown fields are ignored
    }
    return null;
  }

  private dispatch(): SseMessage | null {
    if (this.id !== null) this.lastId = this.id;
    const message: SseMessage | null =
      this.data.length === 0
        ? null
        : { event: this.event || "message", id: this.id ?? this.lastId, data: this.data.join("\n"), retry: this.retry };
    this.event = "";
    this.data = [];
    this.id = null;
    this.retry = null;
    return message;
  }
}

const KINDS: ReadonlySet<string> = new Set<StreamKind>([
  "hello",
  "decision",
  "order",
  "fill",
  "equity",
  "state",
  "parameters",
  "heartbeat",
]);

/** The JSON `data` of an event as a StreamEvent (its kind from the data, else from the `event:` line). */
export function toStreamEvent(message: SseMessage): StreamEvent | null {
  let parsed: unknown;
  try {
    parsed = JSON.parse(message.data);
  } catch {
    return null;
  }
  if (typeof parsed !== "object" || parsed === null) return null;
  const record = parsed as Partial<StreamEvent>;
  const kind = typeof record.kind === "string" ? record.kind : message.event;
  if (!KINDS.has(kind)) return null;
  return {
    kind: kind as StreamKind,
    id: typeof record.id === "number" ? record.id : null,
    market: typeof record.market === "string" ? record.market : null,
    data: typeof record.data === "object" && record.data !== null ? record.data : {},
    server_time: typeof record.server_time === "string" ? record.server_time : "",
  };
}

// ----- which queries an event makes stale -----------------------------------------------------------------------

/** Query-key roots (see queries.ts) to invalidate for each kind of event. */
export const INVALIDATES: Record<StreamKind, readonly string[]> = {
  hello: [],
  heartbeat: [],
  decision: ["decisions", "overview", "chart"],
  order: ["orders", "fills", "overview", "chart", "ledger"],
  fill: ["orders", "fills", "overview", "chart", "ledger"],
  equity: ["overview", "performance"],
  state: ["control", "overview", "ledger"],
  parameters: ["parameters", "overview", "ledger"],
};

// ----- the live connection ----------------------------------------------------------------------------------------

export type LiveState = "connecting" | "live" | "stale";

export interface LiveSnapshot {
  state: LiveState;
  /** epoch ms of the last event or heartbeat received (null: none yet) */
  lastEventAt: number | null;
  /** why the stream is not live, when known */
  problem: string | null;
  /** ms until the next connection attempt, when one is scheduled */
  retryInMs: number | null;
}

export const STALE_AFTER_MS = 25_000;
export const MAX_BACKOFF_MS = 15_000;

/** Delay before reconnection attempt number `attempt` (0-based): 1 s, 2 s, 4 s, 8 s, 15 s, 15 s … */
export function backoffDelay(attempt: number): number {
  return Math.min(MAX_BACKOFF_MS, 1000 * 2 ** Math.max(0, attempt));
}

export interface LiveStreamOptions {
  url?: string;
  getToken: () => string | null;
  onEvent: (event: StreamEvent) => void;
  onUnauthorized?: () => void;
  /** the stream came back after a gap (events may have been missed): refresh everything */
  onResync?: () => void;
  fetchImpl?: typeof fetch;
  now?: () => number;
  staleAfterMs?: number;
}

type Listener = () => void;

/**
 * One stream connection with its state (a tiny external store for useSyncExternalStore). `start()` connects;
 * any failure (HTTP error, network error, end of the body, 25 s of silence) marks it stale and reconnects after
 * 1 s, 2 s, 4 s … 15 s; a received event resets the backoff. `stop()` ends it.
 */
export class LiveStream {
  private snapshot: LiveSnapshot = { state: "connecting", lastEventAt: null, problem: null, retryInMs: null };
  private listeners = new Set<Listener>();
  private controller: AbortController | null = null;
  private watchdog: ReturnType<typeof setInterval> | null = null;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private attempt = 0;
  private running = false;
  private hadGap = false;
  private generation = 0;
  private readonly options: Required<Pick<LiveStreamOptions, "url" | "staleAfterMs">> & LiveStreamOptions;

  constructor(options: LiveStreamOptions) {
    this.options = { url: "/api/v1/stream", staleAfterMs: STALE_AFTER_MS, ...options };
  }

  private now(): number {
    return (this.options.now ?? Date.now)();
  }

  getSnapshot = (): LiveSnapshot => this.snapshot;

  subscribe = (listener: Listener): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  private set(patch: Partial<LiveSnapshot>): void {
    const next = { ...this.snapshot, ...patch };
    if (
      next.state === this.snapshot.state &&
      next.lastEventAt === this.snapshot.lastEventAt &&
      next.problem === this.snapshot.problem &&
      next.retryInMs === this.snapshot.retryInMs
    ) {
      return;
    }
    this.snapshot = next;
    for (const listener of [...this.listeners]) listener();
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.attempt = 0;
    this.watchdog = setInterval(() => this.check(), 1000);
    void this.connect();
  }

  stop(): void {
    this.running = false;
    this.generation++;
    this.controller?.abort();
    this.controller = null;
    if (this.watchdog !== null) clearInterval(this.watchdog);
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.watchdog = null;
    this.retryTimer = null;
  }

  /** Called every second: 25 s without anything means the connection is dead even if it looks open. */
  private check(): void {
    if (!this.running || this.controller === null) return;
    const since = Math.max(this.snapshot.lastEventAt ?? 0, this.connectedAt ?? 0);
    if (since > 0 && this.now() - since > this.options.staleAfterMs) {
      this.fail(`no event or heartbeat for ${Math.round(this.options.staleAfterMs / 1000)} s`);
    }
  }

  private connectedAt: number | null = null;

  private async connect(): Promise<void> {
    const generation = ++this.generation;
    const token = this.options.getToken();
    if (!token) {
      this.stop();
      return;
    }
    const controller = new AbortController();
    this.controller = controller;
    this.connectedAt = this.now();
    if (this.snapshot.state !== "stale") this.set({ state: "connecting", retryInMs: null });
    else this.set({ retryInMs: null });
    const fetchImpl = this.options.fetchImpl ?? ((input: RequestInfo | URL, init?: RequestInit) => globalThis.fetch(input, init));
    try {
      const response = await fetchImpl(this.options.url, {
        headers: { Authorization: `Bearer ${token}`, Accept: "text/event-stream" },
        cache: "no-store",
        signal: controller.signal,
      });
      if (generation !== this.generation) return;
      if (response.status === 401) {
        this.stop();
        this.options.onUnauthorized?.();
        return;
      }
      if (!response.ok || response.body === null) {
        this.fail(`stream answered HTTP ${response.status}`);
        return;
      }
      await this.read(response.body, generation);
      if (generation === this.generation) this.fail("the stream ended");
    } catch (error) {
      if (generation !== this.generation) return; // aborted on purpose
      this.fail(error instanceof Error ? error.message : String(error));
    }
  }

  private async read(body: ReadableStream<Uint8Array>, generation: number): Promise<void> {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    const parser = new SseParser();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (generation !== this.generation) return;
        if (done) break;
        for (const message of parser.push(decoder.decode(value, { stream: true }))) {
          this.received(message);
        }
      }
    } finally {
      try {
        reader.releaseLock();
      } catch {
        // already released
      }
    }
  }

  private received(message: SseMessage): void {
    const event = toStreamEvent(message);
    const first = this.snapshot.state !== "live";
    this.attempt = 0;
    this.set({ state: "live", lastEventAt: this.now(), problem: null, retryInMs: null });
    if (first && this.hadGap) {
      this.hadGap = false;
      this.options.onResync?.();
    }
    if (event) this.options.onEvent(event);
  }

  /** Give up on this connection: stale, and try again after the backoff. */
  private fail(problem: string): void {
    if (!this.running) return;
    this.generation++;
    this.controller?.abort();
    this.controller = null;
    this.hadGap = true;
    const delay = backoffDelay(this.attempt);
    this.attempt++;
    this.set({ state: "stale", problem, retryInMs: delay });
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (this.running) void this.connect();
    }, delay);
  }
}
