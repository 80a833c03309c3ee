import { screen, waitFor } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { saveSession, type Schemas } from "../api/client";
import { snapToCandle } from "../components/chartKit";
import { me, overview } from "../test/fixtures";
import { mockFetch, renderWithClient } from "../test/utils";
import { Chart, chartSeries, fillMarkers } from "./Chart";
import { equitySeries } from "./Performance";

afterEach(() => {
  vi.unstubAllGlobals();
});

const H = 3600;
const chart: Schemas["ChartOut"] = {
  market: "BTC/USDT",
  candles: [0, 1, 2, 3].map((i) => ({ time: 1_700_000_000 + i * H, open: 100 + i, high: 102 + i, low: 99 + i, close: 101 + i, volume: 5 })),
  targets: [
    { time: 1_700_000_000, target: 0.5, prediction: 0.01 },
    { time: 1_700_000_000 + H, target: -0.25, prediction: null },
  ],
  fills: [
    { time: 1_700_000_000 + 2 * H + 125, side: "sell", price: 103, amount: 0.1 },
    { time: 1_700_000_000 + 30, side: "buy", price: 100.5, amount: 0.2 },
    { time: 1_600_000_000, side: "buy", price: 1, amount: 1 }, // before the first candle: dropped
  ],
  source: "exchange",
};

describe("chart data", () => {
  it("puts fills on their candles: buys below in green, sells above in red, sorted", () => {
    const markers = fillMarkers(chart);
    expect(markers).toHaveLength(2);
    expect(markers[0]).toMatchObject({ time: 1_700_000_000, position: "belowBar", shape: "arrowUp" });
    expect(markers[1]).toMatchObject({ time: 1_700_000_000 + 2 * H, position: "aboveBar", shape: "arrowDown" });
    expect(snapToCandle([10, 20, 30], 25)).toBe(20);
    expect(snapToCandle([10, 20, 30], 5)).toBeNull();
  });

  it("builds candles, a target pane and a prediction pane", () => {
    const series = chartSeries(chart);
    expect(series.map((s) => [s.key, s.pane ?? 0])).toEqual([
      ["candles", 0],
      ["target", 1],
      ["prediction", 2],
    ]);
    expect(series[1]?.data).toHaveLength(2);
    expect(series[2]?.data).toHaveLength(1);
  });

  it("turns equity points into sorted chart series, drawdown in percent", () => {
    const { equity, drawdown, daily } = equitySeries({
      market: null,
      equity: [
        { time: "2024-05-01T01:00:00+00:00", equity: 101, drawdown: 0 },
        { time: "2024-05-01T00:00:00+00:00", equity: 100, drawdown: -0.05 },
      ],
      daily: [{ day: "2024-05-01", pnl: -3 }],
      total_return: 0.01,
      buy_hold_return: null,
      sharpe: null,
      sortino: null,
      max_drawdown: -0.05,
      snapshots: 2,
    });
    expect(equity[0]?.data.map((p) => ("value" in p ? p.value : null))).toEqual([100, 101]);
    expect(drawdown[0]?.data.map((p) => ("value" in p ? p.value : null))).toEqual([-5, 0]);
    expect(daily[0]?.data[0]).toMatchObject({ value: -3 });
  });
});

describe("Chart page", () => {
  it("renders the chart container, the source and the attribution link", async () => {
    saveSession({ token: "t", role: "viewer" });
    mockFetch({ "GET /api/v1/overview": overview,
      "GET /api/v1/me": me, "GET /api/v1/chart": { ...chart, candles: [], source: "lake (exchange down)" } });
    renderWithClient(<Chart />, { role: "viewer" });
    await waitFor(() => expect(screen.getByTestId("chart-source")).toHaveTextContent("lake (exchange down)"));
    expect(screen.getByTestId("chart-unavailable")).toBeInTheDocument();
    expect(screen.getByTestId("candle-chart")).toBeInTheDocument();
    const link = screen.getByRole("link", { name: "Charts by TradingView Lightweight Charts™" });
    expect(link).toHaveAttribute("href", "https://www.tradingview.com/");
  });
});
