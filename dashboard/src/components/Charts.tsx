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
  type ChartOptions,
  type DeepPartial,
  type IChartApi,
  type ISeriesApi,
  type ISeriesMarkersPluginApi,
  type SeriesType,
  type Time,
} from "lightweight-charts";
import { useEffect, useRef, useState } from "react";
import { COLORS, chartSupportProblem, type SeriesSpec } from "./chartKit";

interface Held {
  kind: SeriesSpec["kind"];
  pane: number;
  api: ISeriesApi<SeriesType>;
  markers: ISeriesMarkersPluginApi<Time> | null;
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

