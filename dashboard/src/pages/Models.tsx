// Models: per market, the champion and the previous version, every candidate with its verdict, the promoting
// backtest against the live curve, and (operators) a rollback to the previous version.
import type { UTCTimestamp } from "lightweight-charts";
import { useMemo, useState, type FormEvent } from "react";
import { errorMessage, type Schemas } from "../api/client";
import { useModels, useRollback } from "../api/queries";
import { COLORS, ChartAttribution, type SeriesSpec } from "../components/chartKit";
import { TimeChart, preloadCharts } from "../components/LazyChart";
import { Table, type Column } from "../components/Table";
import { Badge, Panel, QueryState, Stat, type Tone } from "../components/ui";
import { DASH, fmtNum, fmtPct, fmtRatio, fmtTime, shortHash, signClass } from "../format";
import { useCanOperate } from "../role";

type MarketModels = Schemas["MarketModelsOut"];
type Candidate = Schemas["CandidateOut"];
type Version = Schemas["VersionOut"];

export function verdictTone(verdict: string): Tone {
  const v = verdict.toLowerCase();
  if (v === "champion" || v === "promoted") return "info";
  if (v.startsWith("pass") || v === "ok" || v === "accepted") return "ok";
  if (v.includes("fail") || v === "rejected" || v === "demoted") return "bad";
  if (v === "stale" || v === "rolled_back") return "warn";
  return "muted";
}

const candidateColumns: Column<Candidate>[] = [
  { key: "version", header: "Version", mono: true, render: (c) => (c.version ? `v${c.version}` : DASH) },
  { key: "family", header: "Family", render: (c) => c.family ?? DASH },
  { key: "started", header: "Trained", render: (c) => fmtTime(c.started_at), className: "nowrap" },
  {
    key: "verdict",
    header: "Verdict",
    render: (c) => (
      <Badge tone={verdictTone(c.verdict)} testId="verdict">
        {c.verdict}
      </Badge>
    ),
  },
  { key: "sharpe", header: "Sharpe", align: "right", mono: true, render: (c) => fmtRatio(c.sharpe) },
  { key: "mdd", header: "Max DD", align: "right", mono: true, render: (c) => fmtPct(c.max_drawdown) },
  { key: "trades", header: "Trades", align: "right", mono: true, render: (c) => fmtNum(c.trades) },
  {
    key: "reasons",
    header: "Reasons",
    render: (c) => (c.reasons.length ? <ul className="reasons">{c.reasons.map((r, i) => <li key={i}>{r}</li>)}</ul> : DASH),
  },
  { key: "run", header: "Run", mono: true, render: (c) => <span title={c.run_id ?? ""}>{shortHash(c.run_id, 8)}</span> },
];

function VersionBox({ label, version, testId }: { label: string; version: Version | null; testId: string }) {
  return (
    <div className="version-box" data-testid={testId}>
      <div className="stat-label">{label}</div>
      {version ? (
        <>
          <div className="stat-value mono">v{version.version}</div>
          <div className="stat-sub">
            {version.family ?? "unknown family"} · created {fmtTime(version.created_at)}
          </div>
          {Object.keys(version.tags).length > 0 && (
            <div className="tags">
              {Object.entries(version.tags)
                .slice(0, 6)
                .map(([k, v]) => (
                  <span key={k} className="tag mono" title={`${k}=${v}`}>
                    {k}={shortHash(v, 14)}
                  </span>
                ))}
            </div>
          )}
        </>
      ) : (
        <div className="stat-value muted">none</div>
      )}
    </div>
  );
}

/** Both curves indexed by bar (the gap compares them over the same number of bars), from 1. */
export function curveSeries(models: MarketModels): SeriesSpec[] {
  const toPoints = (curve: Schemas["CurvePointOut"][]) => curve.map((p, i) => ({ time: (i + 1) as UTCTimestamp, value: p.value }));
  return [
    { key: "backtest", kind: "line", data: toPoints(models.backtest_curve), options: { color: COLORS.muted, lineWidth: 2, title: "backtest" } },
    { key: "live", kind: "line", data: toPoints(models.live_curve), options: { color: COLORS.blue, lineWidth: 2, title: "live" } },
  ];
}

const barAxis = {
  localization: { timeFormatter: (t: unknown) => `bar ${String(t)}` },
  timeScale: { tickMarkFormatter: (t: unknown) => String(t), timeVisible: false },
};

function RollbackForm({ market, previous }: { market: string; previous: Version | null }) {
  const canOperate = useCanOperate();
  const rollback = useRollback();
  const [open, setOpen] = useState(false);
  const [reason, setReason] = useState("");

  if (!canOperate) {
    return (
      <p className="muted small" data-testid="operator-only">
        Rollback needs the operator token.
      </p>
    );
  }

  function submit(event: FormEvent) {
    event.preventDefault();
    rollback.mutate({ market, reason }, { onSuccess: () => setReason("") });
  }

  return (
    <div className="rollback">
      {!open ? (
        <button
          type="button"
          className="btn btn-warn"
          data-testid="rollback-button"
          disabled={!previous}
          title={previous ? `Make v${previous.version} the champion again` : "No previous version"}
          onClick={() => {
            setOpen(true);
            rollback.reset();
          }}
        >
          Roll back to previous{previous ? ` (v${previous.version})` : ""}
        </button>
      ) : (
        <form className="inline-form" onSubmit={submit} data-testid="rollback-form">
          <input
            type="text"
            placeholder="Reason for the rollback (recorded)"
            value={reason}
            onChange={(event) => setReason(event.target.value)}
            data-testid="rollback-reason"
            maxLength={1000}
            autoFocus
          />
          <button type="submit" className="btn btn-warn" disabled={rollback.isPending} data-testid="rollback-confirm">
            {rollback.isPending ? "Rolling back…" : "Confirm rollback"}
          </button>
          <button type="button" className="btn btn-ghost" onClick={() => setOpen(false)}>
            Cancel
          </button>
        </form>
      )}
      {rollback.error ? (
        <p className="text-bad small" role="alert" data-testid="rollback-error">
          {errorMessage(rollback.error)}
        </p>
      ) : null}
      {rollback.data ? (
        <p className="text-ok small" data-testid="rollback-done">
          {rollback.data.description}
        </p>
      ) : null}
    </div>
  );
}

function MarketModelsSection({ models }: { models: MarketModels }) {
  const series = useMemo(() => curveSeries(models), [models]);
  const hasCurves = models.backtest_curve.length > 0 || models.live_curve.length > 0;
  return (
    <Panel
      title={
        <>
          {models.market} <span className="muted small mono">{models.registered_name}</span>
        </>
      }
      testId="models-market"
      extra={{ "data-market": models.market }}
      actions={<RollbackForm market={models.market} previous={models.previous} />}
    >
      {models.problem && <div className="alert alert-warn">{models.problem}</div>}
      <div className="models-top">
        <VersionBox label="Champion" version={models.champion} testId="champion-version" />
        <VersionBox label="Previous" version={models.previous} testId="previous-version" />
        <Stat label="Backtest return" value={fmtPct(models.backtest_return, { signed: true })} tone={signClass(models.backtest_return) as "pos" | "neg" | ""} />
        <Stat label="Live return" value={fmtPct(models.live_return, { signed: true })} tone={signClass(models.live_return) as "pos" | "neg" | ""} />
        <Stat
          label="Gap (live − backtest)"
          value={fmtPct(models.gap, { signed: true })}
          tone={models.gap !== null && models.gap < 0 ? "neg" : ""}
          sub="over the same number of bars"
          testId="gap"
        />
      </div>
      {hasCurves ? (
        <>
          <TimeChart series={series} height={240} resetKey={models.market} options={barAxis} label={`${models.market} backtest vs live`} />
          <div className="legend small">
            <span><i className="swatch" style={{ background: COLORS.muted }} /> backtest (growth of 1)</span>
            <span><i className="swatch" style={{ background: COLORS.blue }} /> live since promotion</span>
            <span className="muted">x-axis: bars since each curve's start</span>
          </div>
        </>
      ) : (
        <p className="muted">No backtest or live curve yet.</p>
      )}
      <h3 className="subhead">Candidates ({models.candidates.length})</h3>
      <Table
        columns={candidateColumns}
        rows={models.candidates}
        rowKey={(c) => `${c.run_id ?? ""}-${c.version ?? ""}-${c.started_at ?? ""}`}
        rowTestId="candidate-row"
        empty="No candidates trained yet."
      />
    </Panel>
  );
}

export function Models() {
  void preloadCharts(); // the library loads while the data is fetched
  const models = useModels();
  return (
    <div className="page">
      <div className="page-head">
        <h1>Models</h1>
      </div>
      <QueryState query={models} what="Loading models">
        {() =>
          models.data ? (
            <div data-testid="models-page">
              {models.data.markets.length === 0 && <p className="muted">No markets.</p>}
              {models.data.markets.map((m) => (
                <MarketModelsSection key={m.market} models={m} />
              ))}
              <ChartAttribution />
            </div>
          ) : null
        }
      </QueryState>
    </div>
  );
}
