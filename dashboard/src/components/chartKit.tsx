/*
 * What the chart pages need without TradingView Lightweight Charts™ itself (colours, series specs, time helpers,
 * the attribution line): pages import this eagerly and load the library only with `TimeChart` (./LazyChart), so a
 * chart page's data is fetched while the library loads.
 *
 * Attribution notice (the library's licence asks for it):
 *   TradingView Lightweight Charts™
 *   Copyright (c) 2025 TradingView, Inc. https://www.tradingview.com/
 */
import type {
  AreaSeriesPartialOptions,
  CandlestickData,
  CandlestickSeriesPartialOptions,
  HistogramData,
  HistogramSeriesPartialOptions,
  LineData,
  LineSeriesPartialOptions,
  SeriesMarker,
  Time,
  UTCTimestamp,
} from "lightweight-charts";

export const COLORS = {
  text: "#c9d4e3",
  muted: "#7f8fa6",
  grid: "rgba(120, 140, 170, 0.12)",
  border: "#263447",
  up: "#2fbf8f",
  down: "#f0585d",
  blue: "#4c9aff",
  amber: "#f0b429",
  violet: "#a68cff",
};

export type SeriesSpec =
  | { key: string; kind: "candles"; data: CandlestickData<Time>[]; options?: CandlestickSeriesPartialOptions; pane?: number; markers?: SeriesMarker<Time>[] }
  | { key: string; kind: "line"; data: LineData<Time>[]; options?: LineSeriesPartialOptions; pane?: number; markers?: SeriesMarker<Time>[] }
  | { key: string; kind: "area"; data: LineData<Time>[]; options?: AreaSeriesPartialOptions; pane?: number; markers?: SeriesMarker<Time>[] }
  | { key: string; kind: "histogram"; data: HistogramData<Time>[]; options?: HistogramSeriesPartialOptions; pane?: number; markers?: SeriesMarker<Time>[] };

/** Why this browser cannot draw charts (no canvas/matchMedia: e.g. jsdom in the tests), or null. */
export function chartSupportProblem(): string | null {
  if (typeof window === "undefined" || typeof window.matchMedia !== "function") return "no matchMedia";
  if (typeof HTMLCanvasElement === "undefined") return "no canvas";
  return null;
}

/** The attribution line under every chart page (the licence asks for a link to TradingView). */
export function ChartAttribution() {
  return (
    <p className="chart-attribution">
      <a href="https://www.tradingview.com/" target="_blank" rel="noopener noreferrer">
        Charts by TradingView Lightweight Charts™
      </a>
    </p>
  );
}

// ----- data helpers ---------------------------------------------------------------------------------------------------

/** ISO time or epoch seconds to the chart's UTCTimestamp (seconds). */
export function toChartTime(value: string | number): UTCTimestamp | null {
  if (typeof value === "number") return (Number.isFinite(value) ? Math.floor(value) : null) as UTCTimestamp | null;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? null : (Math.floor(ms / 1000) as UTCTimestamp);
}

/** Points sorted by time with one point per time (the last wins): what setData requires. */
export function uniqueSorted<T extends { time: UTCTimestamp }>(points: T[]): T[] {
  const byTime = new Map<number, T>();
  for (const point of points) byTime.set(point.time, point);
  return [...byTime.values()].sort((a, b) => a.time - b.time);
}

/** The open time of the candle containing `t` (the largest open time ≤ t), or null if before the first. */
export function snapToCandle(openTimes: number[], t: number): number | null {
  let lo = 0;
  let hi = openTimes.length - 1;
  let found: number | null = null;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const value = openTimes[mid] as number;
    if (value <= t) {
      found = value;
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  return found;
}
