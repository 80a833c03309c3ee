// Trades: orders newest first with filters and keyset pagination; a row expands to its fills and decision.
import { useState } from "react";
import type { Schemas } from "../api/client";
import { useMarkets, useOrders } from "../api/queries";
import { Table, type Column } from "../components/Table";
import { Badge, Pager, Panel, QueryState, Select, type Tone } from "../components/ui";
import { DASH, fmtNum, fmtPrice, fmtTime, shortHash } from "../format";
import { useKeyset } from "../hooks";

type OrderOut = Schemas["OrderOut"];

export const ORDER_STATUSES = [
  "PENDING_SUBMIT",
  "ACKNOWLEDGED",
  "OPEN",
  "PARTIALLY_FILLED",
  "FILLED",
  "CANCELLED",
  "REJECTED",
  "UNKNOWN",
];

const STATUS_TONE: Record<string, Tone> = {
  FILLED: "ok",
  PARTIALLY_FILLED: "info",
  OPEN: "info",
  ACKNOWLEDGED: "info",
  PENDING_SUBMIT: "muted",
  CANCELLED: "muted",
  REJECTED: "bad",
  UNKNOWN: "warn",
};

export function SideText({ side }: { side: string }) {
  return <span className={side === "buy" ? "text-up" : side === "sell" ? "text-down" : ""}>{side}</span>;
}

function fee(order: { fee_cost: number; fee_currency: string | null }) {
  return `${fmtNum(order.fee_cost)}${order.fee_currency ? ` ${order.fee_currency}` : ""}`;
}

const columns: Column<OrderOut>[] = [
  { key: "time", header: "Time (created)", render: (o) => fmtTime(o.created_at ?? o.candle_time), className: "nowrap" },
  { key: "market", header: "Market", render: (o) => o.market },
  { key: "side", header: "Side", render: (o) => <SideText side={o.side} /> },
  {
    key: "status",
    header: "Status",
    render: (o) => (
      <Badge tone={STATUS_TONE[o.status] ?? "neutral"} title={o.last_error ?? undefined}>
        {o.status}
      </Badge>
    ),
  },
  { key: "amount", header: "Amount", align: "right", mono: true, render: (o) => fmtNum(o.amount) },
  { key: "filled", header: "Filled", align: "right", mono: true, render: (o) => fmtNum(o.filled) },
  { key: "avg", header: "Avg price", align: "right", mono: true, render: (o) => fmtPrice(o.average_price) },
  { key: "fee", header: "Fee", align: "right", mono: true, render: fee },
  { key: "model", header: "Model", mono: true, render: (o) => (o.decision ? `v${o.decision.model_version}` : DASH) },
  {
    key: "prediction",
    header: "Prediction",
    align: "right",
    mono: true,
    render: (o) => (o.decision ? fmtNum(o.decision.prediction) : DASH),
  },
  { key: "target", header: "Target", align: "right", mono: true, render: (o) => (o.decision ? fmtNum(o.decision.target) : DASH) },
];

export function OrderDetails({ order }: { order: OrderOut }) {
  const decision = order.decision;
  return (
    <div className="details" data-testid="order-details">
      <div className="details-grid">
        <dl className="dl">
          <dt>Order id</dt>
          <dd className="mono">{order.id}</dd>
          <dt>Client order id</dt>
          <dd className="mono">{order.client_order_id}</dd>
          <dt>Exchange order id</dt>
          <dd className="mono">{order.exchange_order_id ?? DASH}</dd>
          <dt>Type</dt>
          <dd>
            {order.type}
            {order.limit_price !== null ? ` @ ${fmtPrice(order.limit_price)}` : ""}
          </dd>
          <dt>Candle</dt>
          <dd>{fmtTime(order.candle_time)}</dd>
          <dt>Updated</dt>
          <dd>{fmtTime(order.updated_at, { seconds: true })}</dd>
          <dt>Ledger entry</dt>
          <dd className="mono" data-testid="order-ledger-seq">
            {order.ledger_seq !== null ? (
              <a href="#/ledger" title="Open the ledger">
                #{order.ledger_seq}
              </a>
            ) : (
              DASH
            )}
          </dd>
          {order.last_error && (
            <>
              <dt>Last error</dt>
              <dd className="text-bad">{order.last_error}</dd>
            </>
          )}
        </dl>
        <div>
          <h4>Decision</h4>
          {decision ? (
            <dl className="dl" data-testid="order-decision">
              <dt>Model</dt>
              <dd className="mono">
                {decision.model_name} v{decision.model_version}
              </dd>
              <dt>Prediction</dt>
              <dd className="mono">{fmtNum(decision.prediction)}</dd>
              <dt>Target</dt>
              <dd className="mono">
                {fmtNum(decision.target)} <span className="muted">(Δ {fmtNum(decision.delta)})</span>
              </dd>
              <dt>Feature hash</dt>
              <dd className="mono hash" title={decision.feature_hash}>
                {decision.feature_hash}
              </dd>
              <dt>Reason</dt>
              <dd>{decision.reason}</dd>
              <dt>Decided</dt>
              <dd>{fmtTime(decision.created_at ?? decision.candle_time, { seconds: true })}</dd>
            </dl>
          ) : (
            <p className="muted">No decision recorded for this order.</p>
          )}
        </div>
      </div>
      <h4>Fills ({order.fills.length})</h4>
      {order.fills.length === 0 ? (
        <p className="muted">No fills.</p>
      ) : (
        <table className="table table-inner" data-testid="order-fills">
          <thead>
            <tr>
              <th>Time</th>
              <th className="num">Price</th>
              <th className="num">Amount</th>
              <th className="num">Fee</th>
              <th>Trade id</th>
            </tr>
          </thead>
          <tbody>
            {order.fills.map((fill) => (
              <tr key={fill.id}>
                <td className="nowrap">{fmtTime(fill.time, { seconds: true })}</td>
                <td className="num mono">{fmtPrice(fill.price)}</td>
                <td className="num mono">{fmtNum(fill.amount)}</td>
                <td className="num mono">{fee(fill)}</td>
                <td className="mono" title={fill.exchange_trade_id}>
                  {shortHash(fill.exchange_trade_id, 18)}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}

export function Trades() {
  const markets = useMarkets();
  const [market, setMarket] = useState("");
  const [status, setStatus] = useState("");
  const [side, setSide] = useState<"" | "buy" | "sell">("");
  const [open, setOpen] = useState<Set<number>>(new Set());
  const pager = useKeyset(`${market}|${status}|${side}`);
  const orders = useOrders({
    market: market || null,
    status: status || null,
    side: side || null,
    before: pager.before,
  });
  const page = orders.data;

  const toggle = (order: OrderOut) =>
    setOpen((current) => {
      const next = new Set(current);
      if (next.has(order.id)) next.delete(order.id);
      else next.add(order.id);
      return next;
    });

  return (
    <div className="page">
      <div className="page-head">
        <h1>Trades</h1>
        <div className="filters">
          <Select label="Market" value={market} options={markets} onChange={setMarket} testId="filter-market" allLabel="All markets" />
          <Select label="Status" value={status} options={ORDER_STATUSES} onChange={setStatus} testId="filter-status" allLabel="Any status" />
          <Select
            label="Side"
            value={side}
            options={["buy", "sell"]}
            onChange={(value) => setSide(value === "buy" || value === "sell" ? value : "")}
            testId="filter-side"
            allLabel="Both sides"
          />
        </div>
      </div>
      <Panel>
        <QueryState query={orders} what="Loading orders">
          {() =>
            page ? (
              <>
                <Table
                  columns={columns}
                  rows={page.items}
                  rowKey={(o) => o.id}
                  testId="orders-table"
                  rowTestId="order-row"
                  rowProps={(o) => ({ "data-order-id": o.id, "data-side": o.side, "data-status": o.status })}
                  onRowClick={toggle}
                  expanded={(o) => open.has(o.id)}
                  renderExpanded={(o) => <OrderDetails order={o} />}
                  empty="No orders match."
                />
                <Pager
                  total={page.total}
                  shown={page.items.length}
                  page={pager.page}
                  hasNewer={pager.hasNewer}
                  hasOlder={page.next_before !== null}
                  onNewer={pager.newer}
                  onOlder={() => pager.older(page.next_before)}
                  fetching={orders.isFetching}
                />
                <p className="muted small">Click a row for its fills, decision and ledger entry.</p>
              </>
            ) : null
          }
        </QueryState>
      </Panel>
    </div>
  );
}
