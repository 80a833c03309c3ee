// Performance: return, risk ratios and drawdown for one market or all together; equity, drawdown and daily PnL.
import type { UTCTimestamp } from "lightweight-charts";
import { useMemo, useState } from "react";
import type { Schemas } from "../api/client";
import { useMarkets, usePerformance } from "../api/queries";
import { COLORS, ChartAttribution, toChartTime, uniqueSorted, type SeriesSpec } from "../components/chartKit";
import { TimeChart, preloadCharts } from "../components/LazyChart";
import { Panel, QueryState, Select, Stat } from "../components/ui";
import { fmtPct, fmtRatio, fmtSigned, signClass } from "../format";

type PerformanceOut = Schemas["PerformanceOut"];

export function equitySeries(data: PerformanceOut): { equity: SeriesSpec[]; drawdown: SeriesSpec[]; daily: SeriesSpec[] } {
  const points = data.equity
    .map((p) => ({ time: toChartTime(p.time), equity: p.equity, drawdown: p.drawdown }))
    .filter((p): p is { time: UTCTimestamp; equity: number; drawdown: number } => p.time !== null);
  const equity = uniqueSorted(points.map((p) => ({ time: p.time, value: p.equity })));
  const drawdown = uniqueSorted(points.map((p) => ({ time: p.time, value: p.drawdown * 100 })));
  const daily = uniqueSorted(
    data.daily
      .map((d) => ({ time: toChartTime(`${d.day.slice(0, 10)}T00:00:00Z`), value: d.pnl }))
      .filter((d): d is { time: UTCTimestamp; value: number } => d.time !== null)
      .map((d) => ({ ...d, color: d.value >= 0 ? COLORS.up : COLORS.down })),
  );
  return {
    equity: [{ key: "equity", kind: "line", data: equity, options: { color: COLORS.blue, lineWidth: 2, title: "equity" } }],
    drawdown: [
      {
        key: "drawdown",
        kind: "area",
        data: drawdown,
        options: {
          lineColor: COLORS.down,
          topColor: "rgba(240,88,93,0.05)",
          bottomColor: "rgba(240,88,93,0.4)",
          invertFilledArea: true,
          priceFormat: { type: "percent", precision: 2 },
          title: "drawdown",
        },
      },
    ],
    daily: [{ key: "daily", kind: "histogram", data: daily, options: { title: "daily PnL", priceFormat: { type: "price", precision: 2, minMove: 0.01 } } }],
  };
}

const dailyOptions = { timeScale: { timeVisible: false } };

export function Performance() {
  void preloadCharts(); // the library loads while the data is fetched
  const markets = useMarkets();
  const [market, setMarket] = useState("");
  const performance = usePerformance(market || null);
  const data = performance.data;
  const series = useMemo(() => (data ? equitySeries(data) : null), [data]);
  const resetKey = market || "all";
  const recentDays = data ? [...data.daily].slice(-14).reverse() : [];
  const maxAbs = recentDays.reduce((m, d) => Math.max(m, Math.abs(d.pnl)), 0) || 1;

  return (
    <div className="page">
      <div className="page-head">
        <h1>Performance</h1>
        <div className="filters">
          <Select label="Market" value={market} options={markets} onChange={setMarket} testId="performance-market" allLabel="All markets" />
        </div>
      </div>
      <QueryState query={performance} what="Loading performance">
        {() =>
          data && series ? (
            <>
              <div className="summary" data-testid="performance-stats">
                <Stat label="Total return" value={fmtPct(data.total_return, { signed: true })} tone={signClass(data.total_return) as "pos" | "neg" | ""} />
                <Stat label="Buy & hold" value={fmtPct(data.buy_hold_return, { signed: true })} tone={signClass(data.buy_hold_return) as "pos" | "neg" | ""} />
                <Stat label="Sharpe" value={fmtRatio(data.sharpe)} sub="annualised" />
                <Stat label="Sortino" value={fmtRatio(data.sortino)} />
                <Stat label="Max drawdown" value={fmtPct(data.max_drawdown)} tone={data.max_drawdown ? "neg" : ""} />
                <Stat label="Snapshots" value={data.snapshots.toLocaleString("en-US")} />
              </div>
              <div className="grid-2">
                <Panel title={`Equity · ${data.market ?? "all markets"}`} className="span-2">
                  {data.equity.length === 0 ? <p className="muted">No equity snapshots yet.</p> : null}
                  <TimeChart series={series.equity} height={300} testId="equity-chart" resetKey={resetKey} label="Equity" />
                </Panel>
                <Panel title="Drawdown">
                  <TimeChart series={series.drawdown} height={220} testId="drawdown-chart" resetKey={resetKey} label="Drawdown" />
                </Panel>
                <Panel title="Daily PnL">
                  <TimeChart series={series.daily} height={220} testId="daily-chart" resetKey={resetKey} options={dailyOptions} label="Daily PnL" />
                </Panel>
              </div>
              <Panel title="Last 14 days">
                {recentDays.length === 0 ? (
                  <p className="muted">No daily PnL yet.</p>
                ) : (
                  <ul className="bar-list" data-testid="daily-pnl">
                    {recentDays.map((day) => (
                      <li key={day.day}>
                        <span className="mono">{day.day.slice(0, 10)}</span>
                        <span className="bar-track">
                          <span
                            className={`bar ${day.pnl >= 0 ? "bar-pos" : "bar-neg"}`}
                            style={{ width: `${Math.max(1, (Math.abs(day.pnl) / maxAbs) * 100)}%` }}
                          />
                        </span>
                        <span className={`num mono ${signClass(day.pnl)}`}>{fmtSigned(day.pnl)}</span>
                      </li>
                    ))}
                  </ul>
                )}
              </Panel>
              <ChartAttribution />
            </>
          ) : null
        }
      </QueryState>
    </div>
  );
}
