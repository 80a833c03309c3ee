// Small building blocks: badges, stat tiles, panels, loading/error states, select boxes, pagination.
import type { ReactNode } from "react";
import { errorMessage } from "../api/client";

export type Tone = "ok" | "warn" | "bad" | "info" | "muted" | "neutral";

export function Badge({
  tone = "neutral",
  children,
  title,
  testId,
}: {
  tone?: Tone;
  children: ReactNode;
  title?: string;
  testId?: string;
}) {
  return (
    <span className={`badge badge-${tone}`} title={title} data-testid={testId}>
      {children}
    </span>
  );
}

export const TRADING_TONE: Record<string, Tone> = { RUNNING: "ok", REDUCING: "warn", HALTED: "bad" };

export function TradingStateBadge({ state, testId }: { state: string | null | undefined; testId?: string }) {
  const text = state ?? "…";
  return (
    <Badge tone={TRADING_TONE[text] ?? "muted"} testId={testId} title="Trading state (kill switch)">
      {text}
    </Badge>
  );
}

export function Stat({
  label,
  value,
  sub,
  tone,
  testId,
}: {
  label: string;
  value: ReactNode;
  sub?: ReactNode;
  tone?: "pos" | "neg" | "warn" | "";
  testId?: string;
}) {
  return (
    <div className="stat" data-testid={testId}>
      <div className="stat-label">{label}</div>
      <div className={`stat-value ${tone ?? ""}`}>{value}</div>
      {sub !== undefined && sub !== null && <div className="stat-sub">{sub}</div>}
    </div>
  );
}

export function Panel({
  title,
  actions,
  children,
  className,
  testId,
  extra,
}: {
  title?: ReactNode;
  actions?: ReactNode;
  children: ReactNode;
  className?: string;
  testId?: string;
  extra?: Record<string, string>;
}) {
  return (
    <section className={`panel ${className ?? ""}`} data-testid={testId} {...extra}>
      {(title !== undefined || actions !== undefined) && (
        <header className="panel-head">
          {title !== undefined && <h2>{title}</h2>}
          {actions !== undefined && <div className="panel-actions">{actions}</div>}
        </header>
      )}
      {children}
    </section>
  );
}

export function Loading({ what = "Loading" }: { what?: string }) {
  return (
    <div className="loading" role="status">
      <span className="spinner" aria-hidden="true" /> {what}…
    </div>
  );
}

export function ErrorBox({ error, testId }: { error: unknown; testId?: string }) {
  if (!error) return null;
  return (
    <div className="alert alert-bad" role="alert" data-testid={testId}>
      {errorMessage(error)}
    </div>
  );
}

/** Loading / error / content, for a query result. */
export function QueryState({
  query,
  what,
  children,
}: {
  query: { isPending: boolean; error: unknown; data?: unknown };
  what?: string;
  children: () => ReactNode;
}) {
  if (query.data !== undefined) {
    return (
      <>
        {query.error ? (
          <div className="alert alert-warn" role="status">
            Showing the last data: {errorMessage(query.error)}
          </div>
        ) : null}
        {children()}
      </>
    );
  }
  if (query.error) return <ErrorBox error={query.error} />;
  return <Loading what={what} />;
}

export function Select({
  label,
  value,
  options,
  onChange,
  testId,
  allLabel,
}: {
  label: string;
  value: string;
  options: { value: string; label: string }[] | string[];
  onChange: (value: string) => void;
  testId?: string;
  allLabel?: string;
}) {
  const items = options.map((option) => (typeof option === "string" ? { value: option, label: option } : option));
  return (
    <label className="field-inline">
      <span>{label}</span>
      <select value={value} onChange={(event) => onChange(event.target.value)} data-testid={testId}>
        {allLabel !== undefined && <option value="">{allLabel}</option>}
        {items.map((item) => (
          <option key={item.value} value={item.value}>
            {item.label}
          </option>
        ))}
      </select>
    </label>
  );
}

/** Keyset pagination: "Newer" goes back through the cursors seen, "Older" follows next_before. */
export function Pager({
  total,
  shown,
  page,
  hasNewer,
  hasOlder,
  onNewer,
  onOlder,
  fetching,
}: {
  total: number;
  shown: number;
  page: number;
  hasNewer: boolean;
  hasOlder: boolean;
  onNewer: () => void;
  onOlder: () => void;
  fetching?: boolean;
}) {
  return (
    <div className="pager">
      <span className="muted" data-testid="total">
        {total.toLocaleString("en-US")} total · page {page} · {shown} shown{fetching ? " · updating…" : ""}
      </span>
      <div className="pager-buttons">
        <button type="button" className="btn" onClick={onNewer} disabled={!hasNewer} data-testid="page-newer">
          ← Newer
        </button>
        <button type="button" className="btn" onClick={onOlder} disabled={!hasOlder} data-testid="page-older">
          Older →
        </button>
      </div>
    </div>
  );
}

/** Empty-state line inside a table or panel. */
export function Empty({ children }: { children: ReactNode }) {
  return <div className="empty">{children}</div>;
}
