// Controls: the kill switch, the trading parameters (a form generated from their JSON Schema) and the markets'
// enable/disable switches. Every change needs a reason and the operator token; viewers see it all read-only.
import { useState, type FormEvent } from "react";
import { errorMessage, type Schemas } from "../api/client";
import { useControl, useOverview, useParameters, useSetControl, useSetMarketEnabled } from "../api/queries";
import { ParameterForm } from "../components/ParameterForm";
import { Badge, Panel, QueryState, TradingStateBadge } from "../components/ui";
import { fmtAge, ageSeconds, fmtTime } from "../format";
import { useNow } from "../hooks";
import { useCanOperate } from "../role";

type TradingState = Schemas["ControlIn"]["state"];

const ACTIONS: { state: TradingState; label: string; testId: string; className: string; help: string }[] = [
  { state: "HALTED", label: "Halt", testId: "halt-button", className: "btn-danger", help: "no new orders" },
  { state: "REDUCING", label: "Reduce only", testId: "reduce-button", className: "btn-warn", help: "orders may only shrink positions" },
  { state: "RUNNING", label: "Resume", testId: "resume-button", className: "btn-ok", help: "trade normally" },
];

export function KillSwitch() {
  const control = useControl();
  const setControl = useSetControl();
  const canOperate = useCanOperate();
  const now = useNow(5000);
  const [reason, setReason] = useState("");
  const [cancelOpen, setCancelOpen] = useState(false);
  const [pending, setPending] = useState<TradingState | null>(null);

  function apply(state: TradingState) {
    setPending(state);
    setControl.mutate(
      { state, reason, cancel_open: cancelOpen },
      {
        onSuccess: () => {
          setReason("");
          setCancelOpen(false);
        },
        onSettled: () => setPending(null),
      },
    );
  }

  const current = control.data;
  const disabled = !canOperate || setControl.isPending;
  return (
    <Panel title="Kill switch" testId="kill-switch">
      <QueryState query={control} what="Loading the kill switch">
        {() =>
          current ? (
            <div className="kill-current" data-testid="control-current">
              <TradingStateBadge state={current.state} testId="control-state" />
              <div>
                <div>{current.reason || <span className="muted">no reason given</span>}</div>
                <div className="muted small">
                  {current.updated_by ? `by ${current.updated_by}` : "by configuration"}
                  {current.updated_at ? ` · ${fmtTime(current.updated_at)} (${fmtAge(ageSeconds(current.updated_at, now))})` : ""}
                  {current.cancel_open ? " · open orders cancelled" : ""}
                </div>
              </div>
            </div>
          ) : null
        }
      </QueryState>
      <form
        className="kill-form"
        onSubmit={(event: FormEvent) => {
          event.preventDefault();
        }}
        noValidate
      >
        <label className="field grow">
          <span>Reason (recorded in the ledger)</span>
          <input
            type="text"
            value={reason}
            onChange={(event) => setReason(event.target.value)}
            disabled={disabled}
            maxLength={1000}
            placeholder="e.g. exchange maintenance"
            data-testid="control-reason"
          />
        </label>
        <label className="check">
          <input
            type="checkbox"
            checked={cancelOpen}
            onChange={(event) => setCancelOpen(event.target.checked)}
            disabled={disabled}
            data-testid="cancel-open"
          />
          cancel open orders
        </label>
        <div className="button-row">
          {ACTIONS.map((action) => (
            <button
              key={action.state}
              type="button"
              className={`btn ${action.className} ${current?.state === action.state ? "btn-current" : ""}`}
              disabled={disabled}
              onClick={() => apply(action.state)}
              data-testid={action.testId}
              title={action.help}
            >
              {pending === action.state ? `${action.label}…` : action.label}
            </button>
          ))}
        </div>
      </form>
      {setControl.error ? (
        <div className="alert alert-bad" role="alert" data-testid="control-error">
          {errorMessage(setControl.error)}
        </div>
      ) : null}
      {setControl.data && !setControl.error ? (
        <div className="alert alert-ok" role="status" data-testid="control-done">
          Trading is now {setControl.data.state}
          {setControl.data.worker_notified === false ? " — the worker was NOT notified (it will pick it up on its next poll)" : ""}.
        </div>
      ) : null}
    </Panel>
  );
}

function MarketRow({ market, enabled, canOperate }: { market: string; enabled: boolean; canOperate: boolean }) {
  const setEnabled = useSetMarketEnabled();
  const [asking, setAsking] = useState(false);
  const [reason, setReason] = useState("");
  const next = !enabled;

  function submit(event: FormEvent) {
    event.preventDefault();
    setEnabled.mutate(
      { market, enabled: next, reason },
      {
        onSuccess: () => {
          setAsking(false);
          setReason("");
        },
      },
    );
  }

  return (
    <li className="market-row" data-testid="market-control" data-market={market}>
      <div className="market-row-main">
        <b>{market}</b>
        <Badge tone={enabled ? "ok" : "muted"}>{enabled ? "enabled" : "disabled"}</Badge>
        <button
          type="button"
          role="switch"
          aria-checked={enabled}
          aria-label={`${market} enabled`}
          className={`switch ${enabled ? "on" : "off"}`}
          disabled={!canOperate || setEnabled.isPending}
          onClick={() => {
            setAsking((open) => !open);
            setEnabled.reset();
          }}
          data-testid="market-toggle"
          data-market={market}
          data-enabled={String(enabled)}
        >
          <span className="switch-knob" />
        </button>
      </div>
      {asking && canOperate && (
        <form className="inline-form" onSubmit={submit} noValidate>
          <input
            type="text"
            value={reason}
            onChange={(event) => setReason(event.target.value)}
            placeholder={`Reason to ${next ? "enable" : "disable"} ${market}`}
            maxLength={1000}
            autoFocus
            data-testid="market-reason"
            data-market={market}
          />
          <button type="submit" className={`btn ${next ? "btn-ok" : "btn-danger"}`} disabled={setEnabled.isPending} data-testid="market-confirm">
            {next ? "Enable" : "Disable"} {market}
          </button>
          <button type="button" className="btn btn-ghost" onClick={() => setAsking(false)}>
            Cancel
          </button>
        </form>
      )}
      {setEnabled.error ? (
        <div className="text-bad small" role="alert" data-testid="market-error">
          {errorMessage(setEnabled.error)}
        </div>
      ) : null}
    </li>
  );
}

export function MarketsControl({ parameters }: { parameters: Schemas["ParametersOut"] | undefined }) {
  const overview = useOverview();
  const canOperate = useCanOperate();
  const disabled = new Set(parameters?.disabled_markets ?? []);
  const markets = overview.data?.markets.map((m) => m.market) ?? [];
  for (const name of disabled) if (!markets.includes(name)) markets.push(name);
  return (
    <Panel title="Markets" testId="markets-control">
      {markets.length === 0 ? (
        <p className="muted">No markets.</p>
      ) : (
        <ul className="market-list">
          {markets.map((market) => {
            const fromOverview = overview.data?.markets.find((m) => m.market === market);
            const enabled = parameters ? !disabled.has(market) : (fromOverview?.enabled ?? true);
            return <MarketRow key={market} market={market} enabled={enabled} canOperate={canOperate} />;
          })}
        </ul>
      )}
      <p className="muted small">A disabled market keeps its position but places no new orders.</p>
    </Panel>
  );
}

export function Controls() {
  const canOperate = useCanOperate();
  const parameters = useParameters();
  return (
    <div className="page">
      <div className="page-head">
        <h1>Controls</h1>
      </div>
      {!canOperate && (
        <div className="alert alert-info" data-testid="operator-only">
          Changes need the operator token. You are signed in as a viewer: everything below is read-only.
        </div>
      )}
      <div className="grid-2">
        <KillSwitch />
        <MarketsControl parameters={parameters.data} />
      </div>
      <Panel title="Trading parameters" testId="parameters">
        <QueryState query={parameters} what="Loading the parameters">
          {() => (parameters.data ? <ParameterForm parameters={parameters.data} canOperate={canOperate} /> : null)}
        </QueryState>
      </Panel>
    </div>
  );
}
