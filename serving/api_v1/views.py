"""API v1's reads from the trading database: each function takes a session and returns a schema object.

Pages are keyset-paginated on the id (newest first, `before` = the last id seen), so the 100th page costs what
the first does; filters are plain column comparisons on indexed columns.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from cta.lake import Market
from cta.metrics import bar_returns, max_drawdown
from cta.timeframes import timeframe_ms
from serving import control, ledger
from serving.api_v1 import schemas as s
from serving.models import Decision, EquitySnapshot, Fill, LedgerCheckpoint, LedgerEntry, Order, Position
from serving.parameters import Parameters
from serving.parameters import schema as parameter_schema

DAY_MS = 86_400_000
MAX_CURVE_POINTS = 1500  # the equity curve a chart gets (the statistics use every snapshot)
MIN_RATIO_SNAPSHOTS = 30  # Sharpe and Sortino from at least this many per-snapshot returns (else null)


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


# ----- rows -------------------------------------------------------------------------------------------------------


def decision_out(row: Decision) -> s.DecisionOut:
    return s.DecisionOut(
        id=row.id,
        market=row.market,
        candle_time=iso_ms(row.candle_ts),
        model_name=row.model_name,
        model_version=row.model_version,
        feature_hash=row.feature_hash,
        prediction=_finite(row.prediction),
        target=float(row.target),
        delta=float(row.delta),
        reason=row.reason,
        created_at=iso(row.created_at),
    )


def fill_out(row: Fill) -> s.FillOut:
    return s.FillOut(
        id=row.id,
        order_id=row.order_id,
        client_order_id=row.client_order_id,
        exchange_trade_id=row.exchange_trade_id,
        market=row.market,
        price=float(row.price),
        amount=float(row.amount),
        fee_cost=float(row.fee_cost),
        fee_currency=row.fee_currency,
        time=iso_ms(row.ts),
    )


def order_out(row: Order, decision: Decision | None, fills: Sequence[Fill], ledger_seq: int | None) -> s.OrderOut:
    return s.OrderOut(
        id=row.id,
        client_order_id=row.client_order_id,
        exchange_order_id=row.exchange_order_id,
        market=row.market,
        symbol=row.symbol,
        side=row.side,
        type=row.type,
        status=row.status,
        amount=float(row.amount),
        limit_price=_finite(row.limit_price),
        filled=float(row.filled),
        average_price=_finite(row.average_price),
        fee_cost=float(row.fee_cost),
        fee_currency=row.fee_currency,
        candle_time=iso_ms(row.candle_ts),
        created_at=iso(row.created_at),
        updated_at=iso(row.updated_at),
        last_error=row.last_error,
        decision_id=row.decision_id,
        decision=decision_out(decision) if decision is not None else None,
        fills=[fill_out(f) for f in fills],
        ledger_seq=ledger_seq,
    )


def _page(session: Session, query: Select[Any], model: Any, limit: int, before: int | None) -> tuple[list[Any], int]:
    """The rows of `query` (already filtered) with id < before, newest first, and the filtered total."""
    total = int(session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0)
    if before is not None:
        query = query.where(model.id < before)
    rows = list(session.scalars(query.order_by(model.id.desc()).limit(limit)))
    return rows, total


def _next(rows: Sequence[Any], limit: int) -> int | None:
    return rows[-1].id if len(rows) == limit else None


def _order_ledger_seqs(session: Session, orders: Sequence[Order]) -> dict[str, int]:
    """client order id -> seq of the newest ledger entry of kind "order" about it. Walks the "order" entries
    newest first (index on kind, seq) and stops once every order is found or the entries are older than the oldest
    order (a minute's slack): a page of recent orders reads a page of recent entries."""
    if not orders:
        return {}
    stamps = [int(o.created_at.timestamp() * 1000) for o in orders if o.created_at is not None]
    oldest = min(stamps) - 60_000 if stamps else 0
    wanted = {o.client_order_id for o in orders}
    found: dict[str, int] = {}
    query = (
        select(LedgerEntry.seq, LedgerEntry.ts, LedgerEntry.payload)
        .where(LedgerEntry.kind == "order")
        .order_by(LedgerEntry.seq.desc())
        .execution_options(yield_per=200)
    )
    for seq, ts, payload in session.execute(query):
        if len(found) == len(wanted) or ts < oldest:
            break
        coid = json.loads(payload).get("client_order_id")
        if coid in wanted:
            found.setdefault(coid, int(seq))
    return found


def orders_with_details(session: Session, orders: Sequence[Order]) -> list[s.OrderOut]:
    ids = [o.id for o in orders]
    fills: dict[int, list[Fill]] = defaultdict(list)
    if ids:
        for fill in session.scalars(select(Fill).where(Fill.order_id.in_(ids)).order_by(Fill.id)):
            fills[fill.order_id].append(fill)
    decision_ids = [o.decision_id for o in orders if o.decision_id is not None]
    decisions = (
        {d.id: d for d in session.scalars(select(Decision).where(Decision.id.in_(decision_ids)))}
        if decision_ids
        else {}
    )
    seqs = _order_ledger_seqs(session, orders)
    return [
        order_out(o, decisions.get(o.decision_id) if o.decision_id else None, fills[o.id], seqs.get(o.client_order_id))
        for o in orders
    ]


def orders_page(session: Session, q: s.OrderQuery, statuses: list[str] | None) -> s.OrderPage:
    query = select(Order)
    if q.market:
        query = query.where(Order.market == q.market)
    if statuses:
        query = query.where(Order.status.in_(statuses))
    if q.side:
        query = query.where(Order.side == q.side)
    rows, total = _page(session, query, Order, q.limit, q.before)
    return s.OrderPage(items=orders_with_details(session, rows), total=total, next_before=_next(rows, q.limit))


def one_order(session: Session, order_id: int) -> s.OrderOut | None:
    row = session.get(Order, order_id)
    return None if row is None else orders_with_details(session, [row])[0]


def fills_page(session: Session, q: s.PageQuery) -> s.FillPage:
    query = select(Fill)
    if q.market:
        query = query.where(Fill.market == q.market)
    rows, total = _page(session, query, Fill, q.limit, q.before)
    return s.FillPage(items=[fill_out(f) for f in rows], total=total, next_before=_next(rows, q.limit))


def decisions_page(session: Session, q: s.DecisionQuery) -> s.DecisionPage:
    query = select(Decision)
    if q.market:
        query = query.where(Decision.market == q.market)
    if q.orders_only:
        query = query.where(Decision.delta != 0)
    rows, total = _page(session, query, Decision, q.limit, q.before)
    return s.DecisionPage(items=[decision_out(d) for d in rows], total=total, next_before=_next(rows, q.limit))


def ledger_page(session: Session, q: s.LedgerQuery) -> s.LedgerPage:
    query = select(LedgerEntry)
    if q.kind:
        query = query.where(LedgerEntry.kind == q.kind)
    total = int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)
    if q.before is not None:
        query = query.where(LedgerEntry.seq < q.before)
    rows = list(session.scalars(query.order_by(LedgerEntry.seq.desc()).limit(q.limit)))
    items = [
        s.LedgerEntryOut(
            seq=r.seq, time=iso_ms(r.ts), kind=r.kind, payload=json.loads(r.payload), hash=r.hash, prev_hash=r.prev_hash
        )
        for r in rows
    ]
    return s.LedgerPage(items=items, total=total, next_before=rows[-1].seq if len(rows) == q.limit else None)


def ledger_verification(session: Session) -> s.LedgerVerifyOut:
    report = ledger.verify(session)
    checkpoint = session.scalar(select(LedgerCheckpoint).order_by(LedgerCheckpoint.size.desc()).limit(1))
    return s.LedgerVerifyOut(
        ok=report.ok,
        entries=report.entries,
        problem=report.problem,
        checkpoint_size=checkpoint.size if checkpoint else None,
        checkpoint_time=iso_ms(checkpoint.ts) if checkpoint else None,
    )


def control_out(snapshot: control.ControlSnapshot) -> s.ControlOut:
    return s.ControlOut(
        state=snapshot.state.value,
        reason=snapshot.reason,
        cancel_open=snapshot.cancel_open,
        updated_at=iso(snapshot.updated_at),
        updated_by=snapshot.updated_by,
    )


def parameters_out(parameters: Parameters) -> s.ParametersOut:
    return s.ParametersOut(
        values=parameters.values.model_dump(),
        defaults=parameters.defaults.model_dump(),
        parameter_schema=parameter_schema(),
        disabled_markets=list(parameters.disabled_markets),
        version=parameters.version,
        updated_at=iso(parameters.updated_at),
        updated_by=parameters.updated_by,
        reason=parameters.reason,
    )


# ----- overview -----------------------------------------------------------------------------------------------------


def market_overview(
    session: Session,
    market: Market,
    *,
    now_ms: int,
    enabled: bool,
    model: Mapping[str, Any],
    state: Mapping[str, Any],
) -> s.MarketOverview:
    key = str(market)
    first = session.scalar(
        select(EquitySnapshot)
        .where(EquitySnapshot.market == key)
        .order_by(EquitySnapshot.ts, EquitySnapshot.id)
        .limit(1)
    )
    last = session.scalar(
        select(EquitySnapshot)
        .where(EquitySnapshot.market == key)
        .order_by(EquitySnapshot.ts.desc(), EquitySnapshot.id.desc())
        .limit(1)
    )
    day_open = None
    if last is not None:
        day_open = session.scalar(
            select(EquitySnapshot)
            .where(EquitySnapshot.market == key, EquitySnapshot.ts >= last.ts - last.ts % DAY_MS)
            .order_by(EquitySnapshot.ts, EquitySnapshot.id)
            .limit(1)
        )
    position = session.get(Position, key)
    decision = session.scalar(
        select(Decision).where(Decision.market == key).order_by(Decision.candle_ts.desc()).limit(1)
    )
    orders = int(session.scalar(select(func.count(Order.id)).where(Order.market == key)) or 0)
    bar_ms = timeframe_ms(market.timeframe)
    last_ts = state.get("last_ts")
    if last_ts is None and decision is not None:
        last_ts = decision.candle_ts
    data_age = None if last_ts is None else max(0.0, (now_ms - (int(last_ts) + bar_ms)) / 1000)
    warnings: list[str] = []
    if model.get("problem"):
        warnings.append(f"model: {model['problem']}")
    if not enabled:
        warnings.append("disabled by an operator: decisions are recorded, no orders are sent")
    if data_age is not None and data_age > 2 * bar_ms / 1000:
        warnings.append(f"data is {data_age / 3600:.1f} h old")
    if decision is not None and decision.reason.startswith("blocked"):
        warnings.append(decision.reason)
    start_equity = float(first.equity) if first else None
    equity = float(last.equity) if last else None
    buy_hold = None
    if first is not None and last is not None and first.price and last.price:
        buy_hold = last.price / first.price - 1
    return s.MarketOverview(
        market=key,
        symbol=market.symbol,
        timeframe=market.timeframe,
        enabled=enabled,
        champion=s.ChampionOut(model=model.get("model"), version=model.get("version"), problem=model.get("problem")),
        position_units=float(position.units) if position else 0.0,
        position_value=float(last.position_value) if last else None,
        equity=equity,
        start_equity=start_equity,
        pnl_today=equity - float(day_open.equity) if equity is not None and day_open is not None else None,
        pnl_since_start=equity - start_equity if equity is not None and start_equity is not None else None,
        return_since_start=equity / start_equity - 1 if equity is not None and start_equity else None,
        buy_hold_since_start=buy_hold,
        last_candle_time=iso_ms(int(last_ts)) if last_ts is not None else None,
        data_age_s=data_age,
        last_decision=(
            s.LastDecisionOut(
                time=iso_ms(decision.candle_ts),
                prediction=_finite(decision.prediction),
                target=float(decision.target),
                reason=decision.reason,
                model_version=decision.model_version,
            )
            if decision is not None
            else None
        ),
        orders=orders,
        warnings=warnings,
    )


# ----- performance --------------------------------------------------------------------------------------------------


def _equity_rows(
    session: Session, markets: Sequence[str], limit: int
) -> list[tuple[int, int, str | None, float, float | None]]:
    """The newest `limit` snapshots of `markets` (an equal share each), oldest first: (id, ts, market, equity, price)
    columns, no ORM objects; one query per market on its (market, ts) index, merged here (no sort of the table)."""
    rows: list[tuple[int, int, str | None, float, float | None]] = []
    share = -(-limit // max(len(markets), 1))
    for market in markets:
        found = session.execute(
            select(
                EquitySnapshot.id, EquitySnapshot.ts, EquitySnapshot.market, EquitySnapshot.equity, EquitySnapshot.price
            )
            .where(EquitySnapshot.market == market)
            .order_by(EquitySnapshot.ts.desc(), EquitySnapshot.id.desc())
            .limit(share)
        ).all()
        rows += [tuple(r) for r in found]  # type: ignore[misc]
    rows.sort(key=lambda r: (r[1], r[0]))
    return rows


def _combined(
    rows: Sequence[tuple[int, int, str | None, float, float | None]],
) -> tuple[list[int], list[float], list[float]]:
    """(times, equity, prices) per time; several markets: their equities summed (each carried forward), no price."""
    markets = {r[2] for r in rows}
    if len(markets) <= 1:
        return [r[1] for r in rows], [float(r[3]) for r in rows], [float(r[4]) for r in rows if r[4]]
    latest: dict[str | None, float] = {}
    times: list[int] = []
    values: list[float] = []
    for _, ts, market, equity, _ in rows:
        latest[market] = float(equity)
        if len(latest) == len(markets):
            if times and times[-1] == ts:
                values[-1] = sum(latest.values())
            else:
                times.append(ts)
                values.append(sum(latest.values()))
    return times, values, []


def _ratios(equity: np.ndarray, bar_ms: int) -> tuple[float | None, float | None]:
    """Annualised Sharpe and Sortino of the per-snapshot returns (None under MIN_RATIO_SNAPSHOTS of them)."""
    if len(equity) <= MIN_RATIO_SNAPSHOTS:  # fewer returns make an annualised ratio noise, not a measurement
        return None, None
    returns = bar_returns(equity)
    per_year = 365 * DAY_MS / max(bar_ms, 1)
    std = float(returns.std(ddof=1))
    downside = returns[returns < 0]
    down = float(np.sqrt((downside**2).mean())) if len(downside) else 0.0
    mean = float(returns.mean())
    return (
        mean / std * math.sqrt(per_year) if std > 0 else None,
        mean / down * math.sqrt(per_year) if down > 0 else None,
    )


def performance(
    session: Session, market: str | None, limit: int, bar_ms: int, markets: Sequence[str] = ()
) -> s.PerformanceOut:
    """Equity and drawdown (at most MAX_CURVE_POINTS, evenly spaced, the last one kept), daily PnL and the ratios
    of the newest `limit` snapshots of `market`, or of `markets` together when it is None; the statistics use every
    snapshot, only the curve is thinned."""
    times, values, prices = _combined(_equity_rows(session, [market] if market is not None else markets, limit))
    equity = np.asarray(values, dtype="float64")
    peaks = np.maximum.accumulate(equity) if len(equity) else equity
    drawdown = np.where(peaks > 0, equity / np.where(peaks > 0, peaks, 1.0) - 1.0, 0.0)
    shown = np.unique(np.linspace(0, len(equity) - 1, min(len(equity), MAX_CURVE_POINTS)).round().astype(int))
    curve = [
        s.EquityPointOut.model_construct(time=iso_ms(times[i]), equity=float(equity[i]), drawdown=float(drawdown[i]))
        for i in shown.tolist()
    ]
    daily: dict[int, tuple[float, float]] = {}
    previous = values[0] if values else 0.0
    for ts, value in zip(times, values, strict=True):
        day = ts // DAY_MS
        start, _ = daily.get(day, (previous, previous))
        daily[day] = (start, value)
        previous = value
    sharpe, sortino = _ratios(equity, bar_ms)
    return s.PerformanceOut(
        market=market,
        equity=curve,
        daily=[s.DailyPnlOut(day=iso_ms(day * DAY_MS)[:10], pnl=end - start) for day, (start, end) in daily.items()],
        total_return=values[-1] / values[0] - 1 if len(values) > 1 and values[0] else None,
        buy_hold_return=prices[-1] / prices[0] - 1 if market is not None and len(prices) > 1 else None,
        sharpe=_finite(sharpe),
        sortino=_finite(sortino),
        max_drawdown=float(max_drawdown(equity)) if len(equity) > 1 else None,
        snapshots=len(values),
    )


# ----- chart -------------------------------------------------------------------------------------------------------


def chart_marks(session: Session, market: str, since_ms: int) -> tuple[list[s.TargetOut], list[s.ChartFillOut]]:
    decisions = session.execute(
        select(Decision.candle_ts, Decision.target, Decision.prediction)
        .where(Decision.market == market, Decision.candle_ts >= since_ms)
        .order_by(Decision.candle_ts, Decision.id)
    )
    targets: dict[int, s.TargetOut] = {}
    for ts, target, prediction in decisions:
        targets[ts // 1000] = s.TargetOut(time=ts // 1000, target=float(target), prediction=_finite(prediction))
    fills = session.execute(
        select(Fill.ts, Order.side, Fill.price, Fill.amount)
        .join(Order, Order.id == Fill.order_id)
        .where(Fill.market == market, Fill.ts >= since_ms)
        .order_by(Fill.ts, Fill.id)
    )
    return list(targets.values()), [
        s.ChartFillOut(time=ts // 1000, side=side, price=float(price), amount=float(amount))
        for ts, side, price, amount in fills
    ]


def candles_out(rows: Sequence[Sequence[Any]]) -> list[s.CandleOut]:
    out: dict[int, s.CandleOut] = {}
    for r in rows:
        out[int(r[0]) // 1000] = s.CandleOut(
            time=int(r[0]) // 1000,
            open=float(r[1]),
            high=float(r[2]),
            low=float(r[3]),
            close=float(r[4]),
            volume=float(r[5]),
        )
    return [out[k] for k in sorted(out)]
