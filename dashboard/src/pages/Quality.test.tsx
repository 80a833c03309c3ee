import { screen, waitFor, within } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { saveSession, type Schemas } from "../api/client";
import { overview } from "../test/fixtures";
import { mockFetch, renderWithClient } from "../test/utils";
import { Performance } from "./Performance";
import { Quality } from "./Quality";

afterEach(() => {
  vi.unstubAllGlobals();
});

const quality: Schemas["QualityOut"] = {
  markets: [
    {
      market: "BTC/USDT",
      lake_rows: 12345,
      lake_newest: "2024-05-01T12:00:00+00:00",
      lake_age_s: 600,
      gaps: 1,
      missing_candles: 3,
      suite: "passed",
      online_newest: "2024-05-01T12:00:00+00:00",
      online_age_s: 9 * 3600,
      quarantined: 2,
    },
  ],
  validations: [{ suite: "candles", time: "2024-05-01T12:05:00+00:00", success: false, failed: ["expect_column_values_to_be_between(close)"], file: "/x/y/run.json" }],
  quarantine: [{ market: "BTC/USDT", candle_time: "2024-04-30T10:00:00+00:00", reason: "high < low", run_id: "run-1", detected_at: "2024-04-30T10:05:00+00:00" }],
  problem: null,
};

describe("Quality", () => {
  it("lists per-market freshness, validation runs and quarantined rows", async () => {
    saveSession({ token: "t", role: "viewer" });
    mockFetch({ "GET /api/v1/quality": quality, "GET /api/v1/overview": overview });
    renderWithClient(<Quality />, { role: "viewer" });
    const table = await screen.findByTestId("quality-table");
    const row = within(table).getAllByTestId("quality-row")[0]!;
    expect(row).toHaveTextContent("12,345");
    expect(row).toHaveTextContent("10 min");
    expect(row).toHaveTextContent("passed");
    await waitFor(() => expect(within(row).getByText("9 h")).toHaveAttribute("data-freshness", "old"));
    expect(screen.getByTestId("validations-table")).toHaveTextContent("expect_column_values_to_be_between(close)");
    expect(screen.getByTestId("validations-table")).toHaveTextContent("failed");
    expect(screen.getByTestId("quarantine-table")).toHaveTextContent("high < low");
  });
});

describe("Performance", () => {
  it("shows the stats tiles for all markets and asks per market", async () => {
    saveSession({ token: "t", role: "viewer" });
    const { calls } = mockFetch({
      "GET /api/v1/overview": overview,
      "GET /api/v1/performance": {
        market: null,
        equity: [{ time: "2024-05-01T00:00:00+00:00", equity: 100, drawdown: 0 }],
        daily: [{ day: "2024-05-01", pnl: 12.5 }],
        total_return: 0.1234,
        buy_hold_return: -0.02,
        sharpe: 1.234,
        sortino: 2.5,
        max_drawdown: -0.081,
        snapshots: 1440,
      },
    });
    renderWithClient(<Performance />, { role: "viewer" });
    const stats = await screen.findByTestId("performance-stats");
    expect(stats).toHaveTextContent("+12.34%");
    expect(stats).toHaveTextContent("−2.00%");
    expect(stats).toHaveTextContent("1.23");
    expect(stats).toHaveTextContent("−8.10%");
    expect(stats).toHaveTextContent("1,440");
    expect(screen.getByTestId("equity-chart")).toBeInTheDocument();
    expect(screen.getByTestId("daily-pnl")).toHaveTextContent("+12.50");
    expect(calls.find((c) => c.path === "/api/v1/performance")?.search).not.toContain("market=");
  });
});
