"""The error hierarchy. Each class says how a caller should react.

- ConfigError: fix the configuration; never retried.
- DataValidationError: the data is bad; stop the flow, nothing downstream runs.
- TemporaryExchangeError: network trouble, 5xx, rate limit; a read may be retried.
- ExchangeError: the exchange refused for a reason a retry will not fix (unknown symbol, bad key).
- OrderRejected: the exchange rejected an order.
- ModelUnavailable: no usable model; keep the last good one or trade nothing.
"""

from __future__ import annotations


class CTAError(Exception):
    """Base of every error CTA raises on purpose. The CLI prints its message as the one-line reason."""


class ConfigError(CTAError):
    def __init__(self, field: str, value: object, problem: str) -> None:
        self.field = field
        self.value = value
        self.problem = problem
        # a whole section (a check across its fields) is named, not printed
        shown = f"{field}" if isinstance(value, dict) else f"{field}={value!r}"
        super().__init__(f"invalid config: {shown}: {problem.removeprefix('Value error, ')}")


class DataValidationError(CTAError):
    pass


class ExchangeError(CTAError):
    pass


class TemporaryExchangeError(ExchangeError):
    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class OrderRejected(ExchangeError):
    pass


class ModelUnavailable(CTAError):
    pass


class LakeCorruptionError(DataValidationError):
    """A lake partition does not match its manifest (data file missing, unreadable or changed since it was
    written): nothing may use it. Names the partition (market, month) and the file."""

    def __init__(self, market: str, month: str, file: str, problem: str) -> None:
        self.market = market
        self.month = month
        self.file = file
        self.problem = problem
        super().__init__(f"corrupt lake partition {market} {month} ({file}): {problem}")


class FeatureTableCorruptionError(DataValidationError):
    """A feature table (Feast's offline source) does not match its manifest, or a Parquet file under the
    feature-table directory is not a table CTA wrote: nothing may read it. Names the file. The table is derived
    data: `cta features build` rebuilds it from the verified lake."""

    def __init__(self, file: str, problem: str) -> None:
        self.file = file
        self.problem = problem
        super().__init__(f"corrupt feature table {file}: {problem}; `cta features build` rebuilds it from the lake")


class OnlineStoreError(CTAError):
    """The online feature store cannot be used (e.g. its SQLite file is damaged). Names the store."""
