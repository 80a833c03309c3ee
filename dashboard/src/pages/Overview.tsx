// Overview: the system's mode and readiness, then one card per market.
import type { Schemas } from "../api/client";
import { useOverview } from "../api/queries";
import { Badge, Panel, QueryState, Stat, TradingStateBadge } from "../components/ui";
import {
  fmtAge,
  fmtDuration,
  fmtMoney,
  fmtNum,
  fmtPct,
  fmtSigned,
  fmtTime,
  freshness,
  ageSeconds,
  signClass,
  timeframeSeconds,
} from "../format";
import { useNow } from "../hooks";

type OverviewOut = Schemas["OverviewOut"];
type MarketOverview = Schemas["MarketOverview"];

export function MarketCard({ market, now, trading }: { market: MarketOverview; now: number; trading?: string }) {
  const bar = timeframeSeconds(market.timeframe);
  const fresh = freshness(market.data_age_s, bar);
  const decision = market.last_decision;
  const champion = market.champion;
  return (
    <article
      className={`card market-card ${market.enabled ? "" : "card-disabled"}`}
      data-testid="market-card"
      data-market={market.market}
    >
      <header className="card-head">
        <div>
          <h3>{market.market}</h3>
          <div className="muted small mono">
            {market.symbol} · {market.timeframe}
          </div>
        </div>
        <div className="card-badges">
          {trading ? <TradingStateBadge state={trading} testId="market-trading-state" /> : null}
          <Badge tone={market.enabled ? "ok" : "muted"} testId="market-enabled">
            {market.enabled ? "enabled" : "disabled"}
          </Badge>
        </div>
      </header>

      <div className="kv" data-testid="champion">
        <span className="k">Champion</span>
        {champion.problem ? (
          <span className="v text-bad">{champion.problem}</span>
        ) : (
          <span className="v mono">
            {champion.model ?? <span className="muted">none</span>}
            {champion.version ? <span className="muted"> v{champion.version}</span> : null}
          </span>
        )}
      </div>

      <div className="stat-grid">
        <Stat
          label="Position"
          value={<span className="mono">{fmtNum(market.position_units)}</span>}
          sub={market.position_value !== null ? `${fmtMoney(market.position_value)} value` : "no price"}
          testId="position"
        />
        <Stat label="Equity" value={fmtMoney(market.equity)} sub={market.start_equity !== null ? `start ${fmtMoney(market.start_equity)}` : undefined} testId="equity" />
        <Stat label="PnL today" value={fmtSigned(market.pnl_today)} tone={signClass(market.pnl_today) as "pos" | "neg" | ""} testId="pnl-today" />
        <Stat
          label="PnL since start"
          value={fmtSigned(market.pnl_since_start)}
          sub={fmtPct(market.return_since_start, { signed: true })}
          tone={signClass(market.pnl_since_start) as "pos" | "neg" | ""}
          testId="pnl-since-start"
        />
        <Stat
          label="Buy & hold since start"
          value={fmtPct(market.buy_hold_since_start, { signed: true })}
          tone={signClass(market.buy_hold_since_start) as "pos" | "neg" | ""}
          testId="buy-hold"
        />
        <Stat label="Orders" value={market.orders.toLocaleString("en-US")} testId="orders-count" />
      </div>

      <div className={`kv fresh-${fresh}`} data-testid="data-freshness" data-freshness={fresh}>
        <span className="k">Data</span>
        <span className="v">
          {market.data_age_s === null ? "no candle yet" : `${fmtDuration(market.data_age_s)} old`}
          {market.last_candle_time ? <span className="muted"> · last candle {fmtTime(market.last_candle_time)}</span> : null}
        </span>
      </div>

      <div className="decision" data-testid="last-decision">
        <div className="k">Last decision</div>
        {decision ? (
          <div className="decision-body">
            <span title={fmtTime(decision.time, { seconds: true })}>
              {fmtTime(decision.time)} <span className="muted">({fmtAge(ageSeconds(decision.time, now))})</span>
            </span>
            <span>
              prediction <b className="mono">{fmtNum(decision.prediction)}</b> → target{" "}
              <b className="mono">{fmtNum(decision.target)}</b>
            </span>
            <span className="muted">
              {decision.reason} · <span className="mono">v{decision.model_version}</span>
            </span>
          </div>
        ) : (
          <div className="muted">none yet</div>
        )}
      </div>

      {market.warnings.length > 0 && (
        <ul className="warnings" data-testid="warnings">
          {market.warnings.map((warning, index) => (
            <li key={index}>{warning}</li>
          ))}
        </ul>
      )}
    </article>
  );
}

export function OverviewView({ data, now }: { data: OverviewOut; now: number }) {
  const markets = data.markets;
  const totalEquity = markets.reduce((sum, m) => (m.equity !== null ? sum + m.equity : sum), 0);
  const totalToday = markets.reduce((sum, m) => (m.pnl_today !== null ? sum + m.pnl_today : sum), 0);
  const haveEquity = markets.some((m) => m.equity !== null);
  const trading = data.trading;
  return (
    <div className="page">
      <div className="page-head">
        <h1>Overview</h1>
        <span className="muted small">server time {fmtTime(data.server_time, { seconds: true })}</span>
      </div>
      <div className="summary" data-testid="overview-summary">
        <Stat label="Mode" value={<Badge tone={data.mode === "live" ? "bad" : "info"} testId="mode">{data.mode}</Badge>} />
        <Stat label="Venue" value={<span className="mono">{data.venue}</span>} />
        <Stat label="Broker" value={<span className="mono">{data.broker}</span>} />
        <Stat
          label="Ready"
          value={
            data.ready ? (
              <Badge tone="ok" testId="ready">ready</Badge>
            ) : (
              <Badge tone="bad" testId="ready">not ready</Badge>
            )
          }
        />
        <Stat
          label="Trading"
          value={<TradingStateBadge state={trading.state} />}
          sub={trading.reason ? `${trading.reason}${trading.updated_by ? ` — ${trading.updated_by}` : ""}` : undefined}
        />
        <Stat label="Equity (all)" value={haveEquity ? fmtMoney(totalEquity) : "—"} />
        <Stat label="PnL today (all)" value={haveEquity ? fmtSigned(totalToday) : "—"} tone={signClass(totalToday) as "pos" | "neg" | ""} />
      </div>
      {!data.ready && data.reasons.length > 0 && (
        <div className="alert alert-bad" data-testid="not-ready-reasons">
          <b>Not ready:</b>
          <ul>
            {data.reasons.map((reason, index) => (
              <li key={index}>{reason}</li>
            ))}
          </ul>
        </div>
      )}
      {markets.length === 0 ? (
        <Panel>
          <p className="muted">No markets configured.</p>
        </Panel>
      ) : (
        <div className="card-grid">
          {markets.map((market) => (
            <MarketCard key={market.market} market={market} now={now} trading={trading.state} />
          ))}
        </div>
      )}
    </div>
  );
}

export function Overview() {
  const overview = useOverview();
  const now = useNow(5000);
  return (
    <QueryState query={overview} what="Loading the overview">
      {() =>
        overview.data ? (
          <OverviewView
            data={overview.data}
            now={overview.data.market_time ? Date.parse(overview.data.market_time) + (now - Date.parse(overview.data.server_time)) : now}
          />
        ) : null}
    </QueryState>
  );
}
