import { QueryClient } from "@tanstack/react-query";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { createInvalidator } from "./live";
import { INVALIDATES, LiveStream, SseParser, backoffDelay, toStreamEvent, type StreamEvent } from "./stream";

function event(kind: StreamEvent["kind"], extra: Partial<StreamEvent> = {}): string {
  const body: StreamEvent = { kind, id: null, market: null, data: {}, server_time: "2024-01-01T00:00:00+00:00", ...extra };
  return `event: ${kind}\n${body.id !== null ? `id: ${body.id}\n` : ""}data: ${JSON.stringify(body)}\n\n`;
}

describe("SseParser", () => {
  it("parses one complete event", () => {
    const parser = new SseParser();
    const out = parser.push('event: hello\ndata: {"kind":"hello"}\n\n');
    expect(out).toEqual([{ event: "hello", id: null, data: '{"kind":"hello"}', retry: null }]);
  });

  it("parses several events in one chunk", () => {
    const parser = new SseParser();
    const out = parser.push(event("decision", { id: 1 }) + event("order", { id: 2 }) + event("heartbeat"));
    expect(out.map((m) => m.event)).toEqual(["decision", "order", "heartbeat"]);
    expect(out.map((m) => m.id)).toEqual(["1", "2", "2"]); // the last event id carries over, as in the spec
  });

  it("joins chunks split mid-line and mid-event", () => {
    const text = event("fill", { id: 7, market: "BTC/USDT", data: { price: 100.5 } }) + event("equity", { id: 8 });
    // split at every possible position, one and two cuts
    for (let cut = 1; cut < text.length; cut++) {
      const parser = new SseParser();
      const out = [...parser.push(text.slice(0, cut)), ...parser.push(text.slice(cut))];
      expect(out).toHaveLength(2);
      expect(toStreamEvent(out[0]!)?.market).toBe("BTC/USDT");
      expect(toStreamEvent(out[1]!)?.kind).toBe("equity");
    }
    const parser = new SseParser();
    const out = [...text].flatMap((ch) => parser.push(ch)); // one character at a time
    expect(out.map((m) => m.event)).toEqual(["fill", "equity"]);
  });

  it("returns nothing until the blank line ends the event", () => {
    const parser = new SseParser();
    expect(parser.push("event: state\n")).toEqual([]);
    expect(parser.push('data: {"kind":"state"}\n')).toEqual([]);
    expect(parser.push("\n")).toHaveLength(1);
  });

  it("handles CRLF and CR line endings, even with CR and LF in different chunks", () => {
    const parser = new SseParser();
    const out = [
      ...parser.push('event: order\r'),
      ...parser.push('\ndata: {"kind":"order"}\r\n\r'),
      ...parser.push("\n"),
      ...parser.push('data: {"kind":"fill"}\r\r'),
    ];
    expect(out.map((m) => m.data)).toEqual(['{"kind":"order"}', '{"kind":"fill"}']);
    expect(out[0]?.event).toBe("order");
    expect(out[1]?.event).toBe("message");
  });

  it("ignores comments, joins multi-line data and drops events without data", () => {
    const parser = new SseParser();
    const out = parser.push(": keep-alive\n\nevent: x\n\ndata: a\ndata: b\nretry: 1000\n\n");
    expect(out).toEqual([{ event: "message", id: null, data: "a\nb", retry: 1000 }]);
  });

  it("keeps the space rule: only one leading space is removed", () => {
    const parser = new SseParser();
    expect(parser.push("data:  two\n\n")[0]?.data).toBe(" two");
    expect(parser.push("data:none\n\n")[0]?.data).toBe("none");
  });
});

describe("toStreamEvent", () => {
  it("parses the JSON data into a StreamEvent", () => {
    const parsed = toStreamEvent({ event: "order", id: "3", data: '{"kind":"order","id":3,"market":"ETH/USDT","data":{"status":"FILLED"},"server_time":"t"}', retry: null });
    expect(parsed).toEqual({ kind: "order", id: 3, market: "ETH/USDT", data: { status: "FILLED" }, server_time: "t" });
  });

  it("falls back to the event name and rejects bad data", () => {
    expect(toStreamEvent({ event: "heartbeat", id: null, data: "{}", retry: null })?.kind).toBe("heartbeat");
    expect(toStreamEvent({ event: "order", id: null, data: "not json", retry: null })).toBeNull();
    expect(toStreamEvent({ event: "mystery", id: null, data: "{}", retry: null })).toBeNull();
  });
});

describe("backoff", () => {
  it("doubles from 1 s up to 15 s", () => {
    expect([0, 1, 2, 3, 4, 5, 10].map(backoffDelay)).toEqual([1000, 2000, 4000, 8000, 15000, 15000, 15000]);
  });
});

describe("invalidation", () => {
  it("maps each event kind to the queries it makes stale", () => {
    expect(INVALIDATES.decision).toEqual(expect.arrayContaining(["decisions", "overview", "chart"]));
    expect(INVALIDATES.order).toEqual(expect.arrayContaining(["orders", "fills", "overview", "chart"]));
    expect(INVALIDATES.fill).toEqual(expect.arrayContaining(["orders", "fills", "overview", "chart"]));
    expect(INVALIDATES.equity).toEqual(expect.arrayContaining(["overview", "performance"]));
    expect(INVALIDATES.state).toEqual(expect.arrayContaining(["control", "overview"]));
    expect(INVALIDATES.parameters).toEqual(expect.arrayContaining(["parameters", "overview"]));
    expect(INVALIDATES.heartbeat).toEqual([]);
  });

  it("batches a burst of events into one invalidation per query root", () => {
    vi.useFakeTimers();
    try {
      const client = new QueryClient();
      const spy = vi.spyOn(client, "invalidateQueries").mockResolvedValue(undefined);
      const invalidator = createInvalidator(client, 100);
      const base = { id: null, market: null, data: {}, server_time: "" };
      for (let i = 0; i < 50; i++) invalidator.event({ kind: "fill", ...base });
      invalidator.event({ kind: "state", ...base });
      invalidator.event({ kind: "heartbeat", ...base });
      expect(spy).not.toHaveBeenCalled();
      vi.advanceTimersByTime(100);
      const roots = spy.mock.calls.map((call) => (call[0] as { queryKey: string[] }).queryKey[0]);
      expect(roots.sort()).toEqual(["chart", "control", "fills", "ledger", "orders", "overview"]);
    } finally {
      vi.useRealTimers();
    }
  });
});

// ----- the connection, with a scripted fetch ------------------------------------------------------------------------

interface Script {
  push: (text: string) => void;
  end: () => void;
  fail: (error: Error) => void;
}

function scriptedFetch() {
  const streams: Script[] = [];
  const requests: { url: string; init: RequestInit | undefined }[] = [];
  const statuses: number[] = [];
  const fetchImpl = vi.fn(async (url: RequestInfo | URL, init?: RequestInit) => {
    requests.push({ url: String(url), init });
    const status = statuses.shift() ?? 200;
    if (status !== 200) return new Response(JSON.stringify({ error: "no" }), { status });
    const encoder = new TextEncoder();
    let controller!: ReadableStreamDefaultController<Uint8Array>;
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        controller = c;
      },
    });
    streams.push({
      push: (text) => controller.enqueue(encoder.encode(text)),
      end: () => controller.close(),
      fail: (error) => controller.error(error),
    });
    init?.signal?.addEventListener("abort", () => {
      try {
        controller.error(new DOMException("aborted", "AbortError"));
      } catch {
        // already closed
      }
    });
    return new Response(body, { status: 200, headers: { "Content-Type": "text/event-stream" } });
  });
  return { fetchImpl, streams, requests, statuses };
}

async function flush() {
  for (let i = 0; i < 10; i++) await Promise.resolve();
  await vi.advanceTimersByTimeAsync(0);
}

describe("LiveStream", () => {
  let now = 0;
  beforeEach(() => {
    vi.useFakeTimers();
    now = 1_000_000;
    vi.setSystemTime(now);
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  function make(fetchImpl: typeof fetch, extra: Partial<ConstructorParameters<typeof LiveStream>[0]> = {}) {
    const events: StreamEvent[] = [];
    const live = new LiveStream({
      getToken: () => "secret",
      onEvent: (e) => events.push(e),
      fetchImpl,
      now: () => Date.now(),
      ...extra,
    });
    return { live, events };
  }

  it("connects with the bearer token, goes live on the first event and passes events on", async () => {
    const { fetchImpl, streams, requests } = scriptedFetch();
    const { live, events } = make(fetchImpl);
    expect(live.getSnapshot().state).toBe("connecting");
    live.start();
    await flush();
    expect(requests[0]?.url).toBe("/api/v1/stream");
    expect(new Headers(requests[0]?.init?.headers).get("Authorization")).toBe("Bearer secret");
    expect(live.getSnapshot().state).toBe("connecting");
    streams[0]!.push(event("hello"));
    await flush();
    expect(live.getSnapshot().state).toBe("live");
    streams[0]!.push(event("decision", { id: 5, market: "BTC/USDT" }).slice(0, 20));
    await flush();
    expect(events.map((e) => e.kind)).toEqual(["hello"]);
    streams[0]!.push(event("decision", { id: 5, market: "BTC/USDT" }).slice(20));
    await flush();
    expect(events.map((e) => e.kind)).toEqual(["hello", "decision"]);
    live.stop();
  });

  it("goes stale after 25 s of silence and reconnects with growing backoff", async () => {
    const { fetchImpl, streams } = scriptedFetch();
    const { live } = make(fetchImpl);
    live.start();
    await flush();
    streams[0]!.push(event("hello"));
    await flush();
    expect(live.getSnapshot().state).toBe("live");

    await vi.advanceTimersByTimeAsync(20_000);
    streams[0]!.push(event("heartbeat")); // a heartbeat keeps it live
    await flush();
    await vi.advanceTimersByTimeAsync(20_000);
    expect(live.getSnapshot().state).toBe("live");

    await vi.advanceTimersByTimeAsync(6_000); // 26 s since the heartbeat
    expect(live.getSnapshot().state).toBe("stale");
    expect(live.getSnapshot().problem).toMatch(/25 s/);
    expect(fetchImpl).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(1000); // first retry after 1 s
    expect(fetchImpl).toHaveBeenCalledTimes(2);
    expect(live.getSnapshot().state).toBe("stale"); // until something arrives

    streams[1]!.end(); // the stream ends: stale again, next retry after 2 s
    await flush();
    await vi.advanceTimersByTimeAsync(1500);
    expect(fetchImpl).toHaveBeenCalledTimes(2);
    await vi.advanceTimersByTimeAsync(600);
    expect(fetchImpl).toHaveBeenCalledTimes(3);

    streams[2]!.push(event("hello"));
    await flush();
    expect(live.getSnapshot().state).toBe("live");
    live.stop();
  });

  it("retries after HTTP and network errors with 1 s, 2 s, 4 s … capped at 15 s", async () => {
    const { fetchImpl, statuses } = scriptedFetch();
    statuses.push(503, 503, 503, 503, 503, 503);
    const { live } = make(fetchImpl);
    live.start();
    await flush();
    expect(live.getSnapshot().state).toBe("stale");
    const delays = [1000, 2000, 4000, 8000, 15000, 15000];
    for (const [index, delay] of delays.entries()) {
      expect(live.getSnapshot().retryInMs).toBe(delay);
      await vi.advanceTimersByTimeAsync(delay - 1);
      expect(fetchImpl).toHaveBeenCalledTimes(index + 1);
      await vi.advanceTimersByTimeAsync(1);
      await flush();
      expect(fetchImpl).toHaveBeenCalledTimes(index + 2);
    }
    live.stop();
  });

  it("asks for a resync after a gap, so missed events are refetched", async () => {
    const { fetchImpl, streams } = scriptedFetch();
    const onResync = vi.fn();
    const { live } = make(fetchImpl, { onResync });
    live.start();
    await flush();
    streams[0]!.push(event("hello"));
    await flush();
    expect(onResync).not.toHaveBeenCalled();
    streams[0]!.fail(new Error("network down"));
    await flush();
    expect(live.getSnapshot().state).toBe("stale");
    await vi.advanceTimersByTimeAsync(1000);
    streams[1]!.push(event("hello"));
    await flush();
    expect(onResync).toHaveBeenCalledTimes(1);
    live.stop();
  });

  it("stops and reports a 401", async () => {
    const { fetchImpl, statuses } = scriptedFetch();
    statuses.push(401);
    const onUnauthorized = vi.fn();
    const { live } = make(fetchImpl, { onUnauthorized });
    live.start();
    await flush();
    expect(onUnauthorized).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(fetchImpl).toHaveBeenCalledTimes(1);
  });

  it("notifies subscribers of state changes", async () => {
    const { fetchImpl, streams } = scriptedFetch();
    const { live } = make(fetchImpl);
    const seen: string[] = [];
    live.subscribe(() => seen.push(live.getSnapshot().state));
    live.start();
    await flush();
    streams[0]!.push(event("hello"));
    await flush();
    expect(seen).toContain("live");
    live.stop();
  });
});
