/*
 * Chart wrappers over TradingView Lightweight Charts™ v5.
 *
 * Attribution notice (the library's licence asks for it):
 *   TradingView Lightweight Charts™
 *   Copyright (c) 2025 TradingView, Inc. https://www.tradingview.com/
 * The attribution logo stays on (the default `attributionLogo: true`) and every chart has a visible footer link.
 */
import {
  AreaSeries,
  CandlestickSeries,
  ColorType,
  CrosshairMode,
  HistogramSeries,
  LineSeries,
  createChart,
  createSeriesMarkers,
  type AreaSeriesPartialOptions,
  type CandlestickData,
  type CandlestickSeriesPartialOptions,
  type ChartOptions,
  type DeepPartial,
  type HistogramData,
  type HistogramSeriesPartialOptions,
  type IChartApi,
  type ISeriesApi,
  type ISeriesMarkersPluginApi,
  type LineData,
  type LineSeriesPartialOptions,
  type SeriesMarker,
  type SeriesType,
  type Time,
  type UTCTimestamp,
} from "lightweight-charts";
import { useEffect, useRef, useState } from "react";

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

interface Held {
  kind: SeriesSpec["kind"];
  pane: number;
  api: ISeriesApi<SeriesType>;
  markers: ISeriesMarkersPluginApi<Time> | null;
}

/** Why this browser cannot draw charts (no canvas/matchMedia: e.g. jsdom in the tests), or null. */
export function chartSupportProblem(): string | null {
  if (typeof window === "undefined" || typeof window.matchMedia !== "function") return "no matchMedia";
  if (typeof HTMLCanvasElement === "undefined") return "no canvas";
  return null;
}

function baseOptions(height: number): DeepPartial<ChartOptions> {
  return {
    autoSize: true,
    height,
    layout: {
      background: { type: ColorType.Solid, color: "transparent" },
      textColor: COLORS.text,
      fontFamily: "ui-sans-serif, system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
      fontSize: 11,
      attributionLogo: true,
      panes: { separatorColor: COLORS.border, enableResize: true },
    },
    grid: { vertLines: { color: COLORS.grid }, horzLines: { color: COLORS.grid } },
    rightPriceScale: { borderColor: COLORS.border },
    timeScale: { borderColor: COLORS.border, timeVisible: true, secondsVisible: false },
    crosshair: { mode: CrosshairMode.Normal },
    localization: { dateFormat: "yyyy-MM-dd" },
  };
}

function addSeries(chart: IChartApi, spec: SeriesSpec): ISeriesApi<SeriesType> {
  const pane = spec.pane ?? 0;
  switch (spec.kind) {
    case "candles":
      return chart.addSeries(
        CandlestickSeries,
        {
          upColor: COLORS.up,
          downColor: COLORS.down,
          borderUpColor: COLORS.up,
          borderDownColor: COLORS.down,
          wickUpColor: COLORS.up,
          wickDownColor: COLORS.down,
          ...spec.options,
        },
        pane,
      );
    case "line":
      return chart.addSeries(LineSeries, { color: COLORS.blue, lineWidth: 2, ...spec.options }, pane);
    case "area":
      return chart.addSeries(
        AreaSeries,
        { lineColor: COLORS.blue, topColor: "rgba(76,154,255,0.35)", bottomColor: "rgba(76,154,255,0.02)", lineWidth: 2, ...spec.options },
        pane,
      );
    case "histogram":
      return chart.addSeries(HistogramSeries, { color: COLORS.blue, ...spec.options }, pane);
  }
}

/**
 * A time chart with any number of series (by key: kept across renders so zoom survives live refreshes).
 * `resetKey` changing (e.g. another market) fits the content again. `paneStretch` sets the relative pane heights.
 */
export function TimeChart({
  series,
  height = 360,
  testId,
  resetKey = "",
  options,
  paneStretch,
  label,
}: {
  series: SeriesSpec[];
  height?: number;
  testId?: string;
  resetKey?: string;
  options?: DeepPartial<ChartOptions>;
  paneStretch?: number[];
  label?: string;
}) {
  const containerRef = useRef<HTMLDivElement | null>(null);
  const chartRef = useRef<IChartApi | null>(null);
  const heldRef = useRef(new Map<string, Held>());
  const fittedRef = useRef<string | null>(null);
  const [failed, setFailed] = useState<string | null>(null);

  useEffect(() => {
    const container = containerRef.current;
    if (!container) return undefined;
    const missing = chartSupportProblem();
    if (missing) {
      setFailed(missing);
      return undefined;
    }
    let chart: IChartApi;
    try {
      chart = createChart(container, { ...baseOptions(height), ...options });
    } catch (error) {
      setFailed(error instanceof Error ? error.message : String(error));
      return undefined;
    }
    chartRef.current = chart;
    const held = heldRef.current;
    return () => {
      held.clear();
      chartRef.current = null;
      fittedRef.current = null;
      chart.remove();
    };
    // created once: options and series are applied by the effects below
  }, []);

  useEffect(() => {
    chartRef.current?.applyOptions({ ...(options ?? {}), height });
  }, [options, height]);

  useEffect(() => {
    const chart = chartRef.current;
    if (!chart) return;
    const held = heldRef.current;
    const wanted = new Set(series.map((spec) => spec.key));
    for (const [key, item] of held) {
      if (!wanted.has(key)) {
        item.markers?.detach();
        chart.removeSeries(item.api);
        held.delete(key);
      }
    }
    for (const spec of series) {
      let item = held.get(spec.key);
      if (item && (item.kind !== spec.kind || item.pane !== (spec.pane ?? 0))) {
        item.markers?.detach();
        chart.removeSeries(item.api);
        held.delete(spec.key);
        item = undefined;
      }
      if (!item) {
        item = { kind: spec.kind, pane: spec.pane ?? 0, api: addSeries(chart, spec), markers: null };
        held.set(spec.key, item);
      } else if (spec.options) {
        item.api.applyOptions(spec.options);
      }
      item.api.setData(spec.data as never);
      if (spec.markers) {
        if (item.markers) item.markers.setMarkers(spec.markers);
        else item.markers = createSeriesMarkers(item.api, spec.markers);
      } else if (item.markers) {
        item.markers.setMarkers([]);
      }
    }
    if (paneStretch) {
      chart.panes().forEach((pane, index) => {
        const factor = paneStretch[index];
        if (factor !== undefined) pane.setStretchFactor(factor);
      });
    }
    const hasData = series.some((spec) => spec.data.length > 0);
    if (hasData && fittedRef.current !== resetKey) {
      fittedRef.current = resetKey;
      chart.timeScale().fitContent();
    }
  }, [series, resetKey, paneStretch]);

  return (
    <figure className="chart" aria-label={label}>
      {failed ? (
        <div className="chart-failed" style={{ height }} data-testid={testId}>
          Chart unavailable in this browser: {failed}
        </div>
      ) : (
        <div ref={containerRef} className="chart-box" style={{ height }} data-testid={testId} />
      )}
    </figure>
  );
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
