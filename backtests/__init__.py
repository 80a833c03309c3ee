"""Backtests: the vectorized engine, backtrader, metrics and the promotion gate (built in the backtest issue)."""
