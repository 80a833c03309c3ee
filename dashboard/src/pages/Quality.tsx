// Data quality: per market freshness and completeness of the lake and the online store, validation runs and
// the quarantined rows.
import type { Schemas } from "../api/client";
import { useOverview, useQuality } from "../api/queries";
import { Table, type Column } from "../components/Table";
import { Badge, Panel, QueryState } from "../components/ui";
import { DASH, fmtDuration, fmtTime, freshness, timeframeSeconds } from "../format";

type MarketQuality = Schemas["MarketQualityOut"];
type ValidationRun = Schemas["ValidationRunOut"];
type Quarantined = Schemas["QuarantinedRowOut"];

function Age({ seconds, bar }: { seconds: number | null; bar: number | null }) {
  const state = freshness(seconds, bar);
  return (
    <span className={`fresh-${state}`} data-freshness={state}>
      {seconds === null ? DASH : fmtDuration(seconds)}
    </span>
  );
}

function marketColumns(bars: Record<string, number | null>): Column<MarketQuality>[] {
  return [
    { key: "market", header: "Market", render: (m) => <b>{m.market}</b> },
    { key: "rows", header: "Lake rows", align: "right", mono: true, render: (m) => m.lake_rows.toLocaleString("en-US") },
    { key: "newest", header: "Newest candle", render: (m) => fmtTime(m.lake_newest), className: "nowrap" },
    { key: "age", header: "Age", align: "right", render: (m) => <Age seconds={m.lake_age_s} bar={bars[m.market] ?? null} /> },
    {
      key: "gaps",
      header: "Gaps",
      align: "right",
      mono: true,
      render: (m) => <span className={m.gaps > 0 ? "text-warn" : ""}>{m.gaps}</span>,
    },
    {
      key: "missing",
      header: "Missing candles",
      align: "right",
      mono: true,
      render: (m) => <span className={m.missing_candles > 0 ? "text-warn" : ""}>{m.missing_candles.toLocaleString("en-US")}</span>,
    },
    {
      key: "suite",
      header: "Suite",
      render: (m) => (
        <Badge tone={m.suite === "passed" ? "ok" : m.suite.startsWith("not") || m.suite === "" ? "muted" : "bad"} title={m.suite}>
          {m.suite.length > 40 ? `${m.suite.slice(0, 40)}…` : m.suite || DASH}
        </Badge>
      ),
    },
    { key: "online", header: "Online newest", render: (m) => fmtTime(m.online_newest), className: "nowrap" },
    { key: "onlineAge", header: "Online age", align: "right", render: (m) => <Age seconds={m.online_age_s} bar={bars[m.market] ?? null} /> },
    {
      key: "quarantined",
      header: "Quarantined",
      align: "right",
      mono: true,
      render: (m) => <span className={m.quarantined > 0 ? "text-bad" : ""}>{m.quarantined}</span>,
    },
  ];
}

const validationColumns: Column<ValidationRun>[] = [
  { key: "suite", header: "Suite", render: (v) => v.suite },
  { key: "time", header: "Time", render: (v) => fmtTime(v.time), className: "nowrap" },
  {
    key: "success",
    header: "Result",
    render: (v) =>
      v.success === null ? <Badge tone="muted">unknown</Badge> : v.success ? <Badge tone="ok">success</Badge> : <Badge tone="bad">failed</Badge>,
  },
  {
    key: "failed",
    header: "Failed expectations",
    render: (v) => (v.failed.length ? <ul className="reasons">{v.failed.map((f, i) => <li key={i} className="mono">{f}</li>)}</ul> : DASH),
  },
  { key: "file", header: "File", mono: true, render: (v) => <span className="small" title={v.file}>{v.file.split("/").pop()}</span> },
];

const quarantineColumns: Column<Quarantined>[] = [
  { key: "market", header: "Market", render: (q) => q.market },
  { key: "candle", header: "Candle", render: (q) => fmtTime(q.candle_time), className: "nowrap" },
  { key: "reason", header: "Reason", render: (q) => q.reason },
  { key: "run", header: "Run", mono: true, render: (q) => <span title={q.run_id}>{q.run_id.length > 16 ? `${q.run_id.slice(0, 16)}…` : q.run_id}</span> },
  { key: "detected", header: "Detected", render: (q) => fmtTime(q.detected_at), className: "nowrap" },
];

export function Quality() {
  const quality = useQuality();
  const overview = useOverview();
  const bars: Record<string, number | null> = {};
  for (const m of overview.data?.markets ?? []) bars[m.market] = timeframeSeconds(m.timeframe);

  return (
    <div className="page">
      <div className="page-head">
        <h1>Data quality</h1>
      </div>
      <QueryState query={quality} what="Loading data quality">
        {() =>
          quality.data ? (
            <>
              {quality.data.problem && <div className="alert alert-warn">{quality.data.problem}</div>}
              <Panel title="Markets">
                <Table columns={marketColumns(bars)} rows={quality.data.markets} rowKey={(m) => m.market} testId="quality-table" rowTestId="quality-row" />
              </Panel>
              <Panel title={`Validation runs (${quality.data.validations.length})`}>
                <Table
                  columns={validationColumns}
                  rows={quality.data.validations}
                  rowKey={(v) => `${v.suite}|${v.time ?? ""}|${v.file}`}
                  testId="validations-table"
                  empty="No validation run recorded."
                />
              </Panel>
              <Panel title={`Quarantined rows (${quality.data.quarantine.length})`}>
                <Table
                  columns={quarantineColumns}
                  rows={quality.data.quarantine}
                  rowKey={(q) => `${q.market}|${q.candle_time ?? ""}|${q.run_id}|${q.reason}`}
                  testId="quarantine-table"
                  empty="Nothing quarantined."
                />
              </Panel>
            </>
          ) : null
        }
      </QueryState>
    </div>
  );
}
