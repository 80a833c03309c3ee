import { act, render, screen } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { LiveProvider } from "../api/live";
import type { LiveSnapshot } from "../api/stream";
import { makeTestClient } from "../test/utils";
import { QueryClientProvider } from "@tanstack/react-query";
import { LiveIndicator, LiveIndicatorView, liveText } from "./LiveIndicator";

const T0 = Date.parse("2024-05-01T12:00:00Z");

function snap(patch: Partial<LiveSnapshot>): LiveSnapshot {
  return { state: "connecting", lastEventAt: null, problem: null, retryInMs: null, ...patch };
}

describe("live indicator", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("says Connecting… before the first event", () => {
    render(<LiveIndicatorView snapshot={snap({})} now={T0} />);
    const el = screen.getByTestId("live-indicator");
    expect(el).toHaveAttribute("data-state", "connecting");
    expect(el).toHaveTextContent("Connecting…");
  });

  it("says Live with the seconds since the last event", () => {
    render(<LiveIndicatorView snapshot={snap({ state: "live", lastEventAt: T0 - 3000 })} now={T0} />);
    const el = screen.getByTestId("live-indicator");
    expect(el).toHaveAttribute("data-state", "live");
    expect(el).toHaveTextContent("Live · 3 s");
  });

  it("says Stale with the age of the last update and why in its title", () => {
    render(
      <LiveIndicatorView
        snapshot={snap({ state: "stale", lastEventAt: T0 - 12_000, problem: "the stream ended", retryInMs: 2000 })}
        now={T0}
      />,
    );
    const el = screen.getByTestId("live-indicator");
    expect(el).toHaveAttribute("data-state", "stale");
    expect(el).toHaveTextContent("Stale — last update 12 s ago");
    expect(el.title).toMatch(/the stream ended.*retrying in 2 s/);
    expect(liveText(snap({ state: "stale", lastEventAt: T0 - 125_000 }), T0)).toBe("Stale — last update 2 min ago");
    expect(liveText(snap({ state: "stale" }), T0)).toBe("Stale — no update yet");
  });

  it("keeps counting every second from the store (never freezes)", () => {
    vi.useFakeTimers();
    vi.setSystemTime(T0);
    let snapshot = snap({ state: "stale", lastEventAt: T0 - 30_000 });
    const listeners = new Set<() => void>();
    const store = {
      getSnapshot: () => snapshot,
      subscribe: (l: () => void) => {
        listeners.add(l);
        return () => listeners.delete(l);
      },
    };
    render(
      <QueryClientProvider client={makeTestClient()}>
        <LiveProvider token="t" store={store}>
          <LiveIndicator />
        </LiveProvider>
      </QueryClientProvider>,
    );
    const el = screen.getByTestId("live-indicator");
    expect(el).toHaveTextContent("Stale — last update 30 s ago");
    act(() => {
      vi.advanceTimersByTime(5000);
    });
    expect(el).toHaveTextContent("Stale — last update 35 s ago");
    act(() => {
      snapshot = snap({ state: "live", lastEventAt: Date.now() });
      for (const l of listeners) l();
    });
    expect(el).toHaveAttribute("data-state", "live");
    expect(el).toHaveTextContent("Live · 0 s");
    act(() => {
      vi.advanceTimersByTime(4000);
    });
    expect(el).toHaveTextContent("Live · 4 s");
  });
});
