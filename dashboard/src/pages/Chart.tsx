// Chart: candles with the fills as markers, and the model's target position (and prediction) in panes below.
import type { SeriesMarker, Time, UTCTimestamp } from "lightweight-charts";
import { useMemo, useState } from "react";
import type { Schemas } from "../api/client";
import { useChart, useMarkets } from "../api/queries";
import { COLORS, ChartAttribution, snapToCandle, uniqueSorted, type SeriesSpec } from "../components/chartKit";
import { TimeChart, preloadCharts } from "../components/LazyChart";
import { Panel, QueryState, Select, Stat } from "../components/ui";
import { fmtNum, fmtPrice, fmtTime } from "../format";

type ChartOut = Schemas["ChartOut"];

/** Fills as markers on the candles: buys below the bar (green arrow up), sells above (red arrow down). */
export function fillMarkers(chart: ChartOut): SeriesMarker<Time>[] {
  const opens = chart.candles.map((candle) => candle.time).sort((a, b) => a - b);
  const markers: SeriesMarker<Time>[] = [];
  const labelled = chart.fills.length <= 15; // beyond that the labels hide the candles: arrows only
  for (const fill of chart.fills) {
    const time = snapToCandle(opens, fill.time);
    if (time === null) continue;
    const buy = fill.side === "buy";
    markers.push({
      time: time as UTCTimestamp,
      position: buy ? "belowBar" : "aboveBar",
      shape: buy ? "arrowUp" : "arrowDown",
      color: buy ? COLORS.up : COLORS.down,
      ...(labelled ? { text: `${buy ? "B" : "S"} ${fmtNum(fill.amount)} @ ${fmtPrice(fill.price)}` } : {}),
    });
  }
  return markers.sort((a, b) => (a.time as number) - (b.time as number));
}

export function chartSeries(chart: ChartOut): SeriesSpec[] {
  const candles = uniqueSorted(
    chart.candles.map((c) => ({ time: c.time as UTCTimestamp, open: c.open, high: c.high, low: c.low, close: c.close })),
  );
  const targets = uniqueSorted(
    chart.targets.map((t) => ({
      time: t.time as UTCTimestamp,
      value: t.target,
      color: t.target > 0 ? "rgba(47,191,143,0.6)" : t.target < 0 ? "rgba(240,88,93,0.6)" : COLORS.muted,
    })),
  );
  const predictions = uniqueSorted(
    chart.targets
      .filter((t) => t.prediction !== null)
      .map((t) => ({ time: t.time as UTCTimestamp, value: t.prediction as number })),
  );
  const series: SeriesSpec[] = [
    { key: "candles", kind: "candles", data: candles, markers: fillMarkers(chart) },
    {
      key: "target",
      kind: "histogram",
      data: targets,
      pane: 1,
      options: { title: "target", priceFormat: { type: "price", precision: 2, minMove: 0.01 } },
    },
  ];
  if (predictions.length > 0) {
    series.push({
      key: "prediction",
      kind: "line",
      data: predictions,
      pane: 2,
      options: { color: COLORS.violet, lineWidth: 1, lineType: 0 /* LineType.Simple: a value import would pull the library into the main bundle */, title: "prediction", priceFormat: { type: "price", precision: 4, minMove: 0.0001 } },
    });
  }
  return series;
}

export function Chart() {
  void preloadCharts(); // the library loads while the data is fetched
  const markets = useMarkets();
  const [chosen, setChosen] = useState("");
  const [limit, setLimit] = useState(300);
  const market = chosen || markets[0] || "";
  const chart = useChart(market || null, limit);
  const data = chart.data;
  const series = useMemo(() => (data ? chartSeries(data) : []), [data]);
  const last = data?.candles[data.candles.length - 1];
  const lastTarget = data?.targets[data.targets.length - 1];

  return (
    <div className="page">
      <div className="page-head">
        <h1>Chart</h1>
        <div className="filters">
          <Select label="Market" value={market} options={markets} onChange={setChosen} testId="chart-market" />
          <Select
            label="Candles"
            value={String(limit)}
            options={["100", "300", "1000"]}
            onChange={(value) => setLimit(Number(value))}
            testId="chart-limit"
          />
        </div>
      </div>
      {!market ? (
        <Panel>
          <p className="muted">No market to chart yet.</p>
        </Panel>
      ) : (
        <QueryState query={chart} what="Loading candles">
          {() =>
            data ? (
              <Panel>
                <div className="summary summary-tight">
                  <Stat label="Last close" value={<span className="mono">{fmtPrice(last?.close)}</span>} sub={last ? fmtTime(last.time) : undefined} />
                  <Stat label="Target now" value={<span className="mono">{fmtNum(lastTarget?.target)}</span>} />
                  <Stat label="Fills shown" value={String(data.fills.length)} />
                  <Stat label="Source" value={<span className="mono small" data-testid="chart-source">{data.source}</span>} />
                </div>
                {data.candles.length === 0 && (
                  <div className="alert alert-warn" data-testid="chart-unavailable">
                    No candles available for {data.market} (source: <span className="mono">{data.source}</span>).
                  </div>
                )}
                <TimeChart
                  series={series}
                  height={520}
                  testId="candle-chart"
                  resetKey={`${data.market}|${limit}`}
                  paneStretch={series.length > 2 ? [4, 1.2, 1] : [4, 1.2]}
                  label={`${data.market} candles`}
                />
                <div className="legend small">
                  <span><i className="swatch" style={{ background: COLORS.up }} /> buy fill (below bar)</span>
                  <span><i className="swatch" style={{ background: COLORS.down }} /> sell fill (above bar)</span>
                  <span><i className="swatch" style={{ background: "rgba(47,191,143,0.6)" }} /> target position (pane 2)</span>
                  {series.length > 2 && <span><i className="swatch" style={{ background: COLORS.violet }} /> prediction (pane 3)</span>}
                </div>
                <ChartAttribution />
              </Panel>
            ) : null
          }
        </QueryState>
      )}
    </div>
  );
}
