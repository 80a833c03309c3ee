// Sample API payloads (typed by the generated schema) for the tests. The parameter schema is what the server's
// `Editable.model_json_schema()` returns: limits and risk as $refs into $defs.
import type { Schemas } from "../api/client";

export const parameterSchema = {
  $defs: {
    Limits: {
      additionalProperties: false,
      description: "What a decision may do. Positions are fractions of equity (1 = all-in long).",
      properties: {
        max_position: { default: 1.0, exclusiveMinimum: 0, maximum: 1.0, title: "Max Position", type: "number" },
        min_trade: { default: 0.05, maximum: 1.0, minimum: 0, title: "Min Trade", type: "number" },
        allow_short: { default: true, title: "Allow Short", type: "boolean" },
      },
      title: "Limits",
      type: "object",
    },
    RiskSettings: {
      additionalProperties: false,
      description: "Limits the serving worker checks before every order (quote currency amounts).",
      properties: {
        max_order_notional: { default: 20000.0, exclusiveMinimum: 0, title: "Max Order Notional", type: "number" },
        max_position_notional: { default: 20000.0, exclusiveMinimum: 0, title: "Max Position Notional", type: "number" },
        daily_loss_limit: { default: 0.05, exclusiveMinimum: 0, maximum: 1, title: "Daily Loss Limit", type: "number" },
        max_drawdown_halt: { default: 0.25, exclusiveMinimum: 0, maximum: 1, title: "Max Drawdown Halt", type: "number" },
        stale_after_bars: { default: 1.0, exclusiveMinimum: 0, title: "Stale After Bars", type: "number" },
      },
      title: "RiskSettings",
      type: "object",
    },
  },
  additionalProperties: false,
  description: "What may be changed while trading: the decision limits and the risk limits (the config's own models).",
  properties: { limits: { $ref: "#/$defs/Limits" }, risk: { $ref: "#/$defs/RiskSettings" } },
  required: ["limits", "risk"],
  title: "Editable",
  type: "object",
};

export const parameters: Schemas["ParametersOut"] = {
  values: {
    limits: { max_position: 0.8, min_trade: 0.05, allow_short: true },
    risk: { max_order_notional: 20000, max_position_notional: 20000, daily_loss_limit: 0.05, max_drawdown_halt: 0.25, stale_after_bars: 1 },
  },
  defaults: {
    limits: { max_position: 1, min_trade: 0.05, allow_short: true },
    risk: { max_order_notional: 20000, max_position_notional: 20000, daily_loss_limit: 0.05, max_drawdown_halt: 0.25, stale_after_bars: 1 },
  },
  parameter_schema: parameterSchema,
  disabled_markets: [],
  version: 3,
  updated_at: "2024-05-01T12:00:00+00:00",
  updated_by: "operator (api)",
  reason: "tighter",
};

export const marketBtc: Schemas["MarketOverview"] = {
  market: "BTC/USDT",
  symbol: "BTC/USDT",
  timeframe: "1h",
  enabled: true,
  champion: { model: "cta-btc", version: "7", problem: null },
  position_units: 0.125,
  position_value: 7500.5,
  equity: 10250.25,
  start_equity: 10000,
  pnl_today: 120.5,
  pnl_since_start: 250.25,
  return_since_start: 0.025025,
  buy_hold_since_start: -0.0312,
  last_candle_time: "2024-05-01T12:00:00+00:00",
  data_age_s: 600,
  last_decision: {
    time: "2024-05-01T13:00:05+00:00",
    prediction: 0.0042,
    target: 0.75,
    reason: "signal above threshold",
    model_version: "7",
  },
  orders: 42,
  warnings: ["fee rate unknown: using the configured one"],
};

export const marketEth: Schemas["MarketOverview"] = {
  ...marketBtc,
  market: "ETH/USDT",
  symbol: "ETH/USDT",
  enabled: false,
  champion: { model: null, version: null, problem: "no champion registered" },
  position_units: 0,
  position_value: null,
  equity: null,
  start_equity: null,
  pnl_today: null,
  pnl_since_start: null,
  return_since_start: null,
  buy_hold_since_start: null,
  data_age_s: 4 * 3600,
  last_decision: null,
  orders: 0,
  warnings: [],
};

export const overview: Schemas["OverviewOut"] = {
  mode: "paper",
  venue: "binance",
  broker: "paper",
  trading: { state: "RUNNING", reason: "started", cancel_open: false, updated_at: null, updated_by: null },
  ready: false,
  reasons: ["ETH/USDT: no champion"],
  markets: [marketBtc, marketEth],
  server_time: "2024-05-01T13:10:00+00:00",
  market_time: null,
};

export const control: Schemas["ControlOut"] = {
  state: "RUNNING",
  reason: "started",
  cancel_open: false,
  updated_at: "2024-05-01T10:00:00+00:00",
  updated_by: "operator (cli)",
};

export const decision: Schemas["DecisionOut"] = {
  id: 11,
  market: "BTC/USDT",
  candle_time: "2024-05-01T12:00:00+00:00",
  model_name: "cta-btc",
  model_version: "7",
  feature_hash: "ab12cd34ef56ab12cd34ef56ab12cd34",
  prediction: 0.0042,
  target: 0.75,
  delta: 0.25,
  reason: "signal above threshold",
  created_at: "2024-05-01T13:00:05+00:00",
};

export function order(id: number, extra: Partial<Schemas["OrderOut"]> = {}): Schemas["OrderOut"] {
  return {
    id,
    client_order_id: `cta-${id}-abc`,
    exchange_order_id: `x${id}`,
    market: "BTC/USDT",
    symbol: "BTC/USDT",
    side: id % 2 ? "buy" : "sell",
    type: "market",
    status: "FILLED",
    amount: 0.01,
    limit_price: null,
    filled: 0.01,
    average_price: 60000,
    fee_cost: 0.6,
    fee_currency: "USDT",
    candle_time: "2024-05-01T12:00:00+00:00",
    created_at: "2024-05-01T13:00:06+00:00",
    updated_at: "2024-05-01T13:00:07+00:00",
    last_error: null,
    decision_id: 11,
    decision,
    fills: [
      {
        id: id * 10,
        order_id: id,
        client_order_id: `cta-${id}-abc`,
        exchange_trade_id: `trade-${id}`,
        market: "BTC/USDT",
        price: 60000,
        amount: 0.01,
        fee_cost: 0.6,
        fee_currency: "USDT",
        time: "2024-05-01T13:00:07+00:00",
      },
    ],
    ledger_seq: 900 + id,
    ...extra,
  };
}

/** `GET /api/v1/me` for an operator of the overview's markets. */
export const me: Schemas["MeOut"] = {
  role: "operator",
  can_operate: true,
  markets: overview.markets.map((market) => market.market),
};
