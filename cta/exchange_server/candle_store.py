"""Real candles held in memory as numpy arrays, served only once closed on the replay clock.

File names understood in a data directory:
- `binance_<BASEQUOTE>_<tf>.csv[.gz]`, e.g. `binance_BTCUSDT_1h.csv.gz` -> BTC/USDT, market id BTCUSDT;
- `<BASE>_<QUOTE>-<tf>.csv[.gz]` or `.parquet`, e.g. `ETH_USDT-1m.parquet`.
Columns: `timestamp` (or `ts`) = open time in UTC epoch ms, then open, high, low, close, volume.

A file is served as it is, or refused: a missing or non-numeric value, a repeated open time, or open times
that are not epoch milliseconds (seconds, say) stop the server with an error naming the file and line,
because serving them would mean silently dropping or choosing rows (and orders cannot fill at NaN). Any
other oddity (a high below the close, a zero price, a 10x spike) is served unchanged, for the ingestion
gate to quarantine. Rows are served in time order.

Besides per-timeframe series, each symbol has an execution *tape*: the finest candles available for
every stretch of time (a coarser candle is used only where no finer one overlaps it). Order matching
reads the tape, so fills follow the most detailed real prices the server holds.
"""

from __future__ import annotations

import bisect
import logging
import re
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from cta.candles import timestamp_units, wrong_unit_note
from cta.errors import ConfigError
from cta.timeframes import TIMEFRAME_MS, timeframe_ms

logger = logging.getLogger(__name__)

KNOWN_QUOTES: tuple[str, ...] = ("USDT", "USDC", "BUSD", "FDUSD", "BTC", "ETH", "BNB", "EUR", "USD", "TRY")

_BINANCE_NAME = re.compile(r"^binance_(?P<market>[A-Z0-9]+)_(?P<tf>[0-9]+[mhdwM])\.csv(?:\.gz)?$")
_PAIR_NAME = re.compile(r"^(?P<base>[A-Z0-9]+)_(?P<quote>[A-Z0-9]+)-(?P<tf>[0-9]+[mhdwM])\.(?:csv|csv\.gz|parquet)$")

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def split_market_id(market_id: str) -> tuple[str, str]:
    """'BTCUSDT' -> ('BTC', 'USDT') using KNOWN_QUOTES (longest matching suffix wins); ValueError if none."""
    for quote in sorted(KNOWN_QUOTES, key=len, reverse=True):
        if market_id.endswith(quote) and len(market_id) > len(quote):
            return market_id[: -len(quote)], quote
    raise ValueError(f"cannot split market id {market_id!r}: no known quote asset ({', '.join(KNOWN_QUOTES)})")


def parse_candle_file_name(name: str) -> tuple[str, str, str] | None:
    """(base, quote, timeframe) for a candle file name, None for any other file."""
    match = _BINANCE_NAME.match(name)
    if match:
        base, quote = split_market_id(match["market"])
        return base, quote, match["tf"]
    match = _PAIR_NAME.match(name)
    if match:
        return match["base"], match["quote"], match["tf"]
    return None


@dataclass(frozen=True)
class Bar:
    """One candle of the execution tape; close_ms = open_ms + timeframe length."""

    open_ms: int
    close_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(frozen=True)
class CandleSeries:
    """Sorted, de-duplicated candles of one (symbol, timeframe)."""

    symbol: str
    timeframe: str
    ts: IntArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray

    @property
    def tf_ms(self) -> int:
        return timeframe_ms(self.timeframe)

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    @classmethod
    def from_frame(
        cls, symbol: str, timeframe: str, frame: pd.DataFrame, where: Callable[[int], str] | None = None
    ) -> CandleSeries:
        """Build from a frame with `ts` or `timestamp` and OHLCV columns, served as they are: ConfigError
        naming the row (`where(i)` says where row i came from, e.g. "BTC_USDT-1h.csv line 7") for a missing or
        non-numeric value, a repeated open time, or open times that are not epoch milliseconds."""
        timeframe_ms(timeframe)  # ConfigError for an unknown timeframe
        data = frame.rename(columns={"timestamp": "ts"}).reset_index(drop=True)
        where = where or (lambda i: f"{symbol} {timeframe} row {i + 1}")
        missing = [c for c in _COLUMNS if c not in data.columns]
        if missing:
            raise ConfigError("data_dir", symbol, f"candles for {timeframe} lack columns {missing}")
        data = _servable(data.loc[:, list(_COLUMNS)], where)
        data = data.sort_values("ts", kind="stable")
        return cls(
            symbol=symbol,
            timeframe=timeframe,
            ts=data["ts"].to_numpy(dtype=np.int64),
            open=data["open"].to_numpy(dtype=np.float64),
            high=data["high"].to_numpy(dtype=np.float64),
            low=data["low"].to_numpy(dtype=np.float64),
            close=data["close"].to_numpy(dtype=np.float64),
            volume=data["volume"].to_numpy(dtype=np.float64),
        )

    def closed_count(self, now_ms: int) -> int:
        """How many candles have closed (open + length <= now)."""
        return int(np.searchsorted(self.ts, now_ms - self.tf_ms, side="right"))

    def select(self, now_ms: int, start_ms: int | None, end_ms: int | None, limit: int) -> range:
        """Indices Binance's klines would return: closed candles, open time in [start, end], `limit` of
        them from start (or the newest ones when no start is given)."""
        hi = self.closed_count(now_ms)
        if end_ms is not None:
            hi = min(hi, int(np.searchsorted(self.ts, end_ms, side="right")))
        if start_ms is not None:
            lo = int(np.searchsorted(self.ts, start_ms, side="left"))
            return range(lo, max(lo, min(hi, lo + limit)))
        return range(max(0, hi - limit), hi)


_COLUMNS = ("ts", "open", "high", "low", "close", "volume")


def _servable(data: pd.DataFrame, where: Callable[[int], str]) -> pd.DataFrame:
    """`data` with numeric dtypes, or ConfigError naming the first row the server cannot serve as it is."""

    def refuse(row: int, problem: str, count: int) -> ConfigError:
        more = f" ({count - 1} more rows like it)" if count > 1 else ""
        return ConfigError(
            "data_dir", where(row), f"{problem}{more}; the local exchange serves candle files as they are, fix the file"
        )

    numeric = data.apply(lambda c: c if pd.api.types.is_numeric_dtype(c) else pd.to_numeric(c, errors="coerce"))
    for column in _COLUMNS:
        bad = np.flatnonzero(numeric[column].isna().to_numpy())
        if bad.size:
            value = data[column].iloc[bad[0]]
            problem = "missing (empty or NaN)" if pd.isna(value) else f"not a number ({str(value)[:40]!r})"
            raise refuse(int(bad[0]), f"{column} {problem}", bad.size)
    ts = numeric["ts"].to_numpy(dtype=np.float64)
    bad = np.flatnonzero(ts != np.round(ts))
    if bad.size:
        raise refuse(int(bad[0]), f"open time {ts[bad[0]]!r} is not a whole number of milliseconds", bad.size)
    ts_int = numeric["ts"].astype("int64")
    bad = np.flatnonzero(timestamp_units(ts_int) != "ms")
    if bad.size:
        first = int(ts_int.iloc[bad[0]])
        note = wrong_unit_note(first) or f"{first} is not a time between 2000 and 2100 in epoch milliseconds"
        raise refuse(int(bad[0]), f"open time {note}", bad.size)
    repeated = np.flatnonzero(ts_int.duplicated(keep="first").to_numpy())
    if repeated.size:
        row = int(repeated[0])
        earlier = int(np.flatnonzero(ts_int.to_numpy() == ts_int.iloc[row])[0])
        raise refuse(row, f"open time {int(ts_int.iloc[row])} repeated (first at {where(earlier)})", repeated.size)
    return numeric.astype({"ts": "int64", **dict.fromkeys(_COLUMNS[1:], "float64")})


@dataclass(frozen=True)
class _Tape:
    open_ms: IntArray
    close_ms: IntArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray

    def bar(self, i: int) -> Bar:
        return Bar(
            int(self.open_ms[i]),
            int(self.close_ms[i]),
            float(self.open[i]),
            float(self.high[i]),
            float(self.low[i]),
            float(self.close[i]),
            float(self.volume[i]),
        )


def _build_tape(series: Iterable[CandleSeries]) -> _Tape:
    """Finest-first union of candles; a coarser candle is kept only if it overlaps no kept candle."""
    starts = np.empty(0, dtype=np.int64)
    ends = np.empty(0, dtype=np.int64)
    cols: list[FloatArray] = [np.empty(0, dtype=np.float64) for _ in range(5)]
    for s in sorted(series, key=lambda s: s.tf_ms):
        cand_start = s.ts
        cand_end = s.ts + s.tf_ms
        if starts.size:
            idx = np.searchsorted(starts, cand_end, side="left") - 1
            overlaps = (idx >= 0) & (ends[np.clip(idx, 0, None)] > cand_start)
            keep = ~overlaps
        else:
            keep = np.ones(len(s), dtype=bool)
        starts = np.concatenate([starts, cand_start[keep]])
        ends = np.concatenate([ends, cand_end[keep]])
        for j, arr in enumerate((s.open, s.high, s.low, s.close, s.volume)):
            cols[j] = np.concatenate([cols[j], arr[keep]])
        order = np.argsort(starts, kind="stable")
        starts, ends = starts[order], ends[order]
        cols = [c[order] for c in cols]
    return _Tape(starts, ends, cols[0], cols[1], cols[2], cols[3], cols[4])


class CandleStore:
    """All loaded candles, keyed by (symbol 'BASE/QUOTE', timeframe)."""

    def __init__(self, series: Iterable[CandleSeries]) -> None:
        self._series: dict[tuple[str, str], CandleSeries] = {}
        for s in series:
            if len(s) == 0:
                continue
            self._series[(s.symbol, s.timeframe)] = s
        if not self._series:
            raise ConfigError("data_dir", None, "no candles to serve")
        self._symbols = sorted({sym for sym, _ in self._series})
        self._by_market_id = {market_id(sym): sym for sym in self._symbols}
        self._tapes = {
            sym: _build_tape(s for (ssym, _), s in self._series.items() if ssym == sym) for sym in self._symbols
        }

    @classmethod
    def from_frames(cls, frames: Mapping[tuple[str, str], pd.DataFrame]) -> CandleStore:
        """From in-memory frames keyed by (symbol, timeframe); handy for tests."""
        return cls(CandleSeries.from_frame(sym, tf, frame) for (sym, tf), frame in frames.items())

    @classmethod
    def load_dir(cls, directory: Path) -> CandleStore:
        """Load every candle file in `directory` (see module doc); ConfigError if there is none."""
        if not directory.is_dir():
            raise ConfigError("data_dir", str(directory), "not a directory")
        frames: dict[tuple[str, str], list[pd.DataFrame]] = {}
        origins: dict[tuple[str, str], list[tuple[int, Path]]] = {}  # (first row, file) of each part
        for path in sorted(directory.iterdir()):
            parsed = parse_candle_file_name(path.name)
            if parsed is None:
                continue
            base, quote, tf = parsed
            if tf not in TIMEFRAME_MS:
                raise ConfigError("data_dir", str(path), f"unsupported timeframe {tf!r}")
            frame = _read_candle_file(path)
            parts = frames.setdefault((f"{base}/{quote}", tf), [])
            origins.setdefault((f"{base}/{quote}", tf), []).append((sum(len(f) for f in parts), path))
            parts.append(frame)
            logger.debug("loaded %d candles from %s", len(frame), path)
        if not frames:
            raise ConfigError(
                "data_dir",
                str(directory),
                "no candle files (expected binance_<BASEQUOTE>_<tf>.csv[.gz] "
                "or <BASE>_<QUOTE>-<tf>.csv[.gz] / .parquet)",
            )
        return cls(
            CandleSeries.from_frame(sym, tf, pd.concat(parts, ignore_index=True), _locator(origins[(sym, tf)]))
            for (sym, tf), parts in frames.items()
        )

    @property
    def symbols(self) -> list[str]:
        return list(self._symbols)

    def timeframes(self, symbol: str) -> list[str]:
        return sorted((tf for sym, tf in self._series if sym == symbol), key=timeframe_ms)

    def symbol_for_market_id(self, market: str) -> str | None:
        return self._by_market_id.get(market)

    def series(self, symbol: str, timeframe: str) -> CandleSeries | None:
        return self._series.get((symbol, timeframe))

    def all_series(self) -> list[CandleSeries]:
        return [self._series[k] for k in sorted(self._series)]

    @property
    def first_open_ms(self) -> int:
        return min(int(s.ts[0]) for s in self._series.values())

    @property
    def last_close_ms(self) -> int:
        return max(int(s.ts[-1]) + s.tf_ms for s in self._series.values())

    def price_at(self, symbol: str, now_ms: int) -> float | None:
        """Open of the tape candle containing now, else the close of the last closed one, else None."""
        tape = self._tapes[symbol]
        i = int(np.searchsorted(tape.open_ms, now_ms, side="right")) - 1
        if i < 0:
            return None
        if now_ms < int(tape.close_ms[i]):
            return float(tape.open[i])
        return float(tape.close[i])

    def bars_closed_between(self, symbol: str, after_ms: int, until_ms: int) -> list[Bar]:
        """Tape candles with after_ms < close <= until_ms, oldest first."""
        tape = self._tapes[symbol]
        lo = int(np.searchsorted(tape.close_ms, after_ms, side="right"))
        hi = int(np.searchsorted(tape.close_ms, until_ms, side="right"))
        return [tape.bar(i) for i in range(lo, hi)]


def _locator(parts: list[tuple[int, Path]]) -> Callable[[int], str]:
    """Row i of the concatenated files -> "<file> line N" (CSV: line 1 is the header) or "<file> row N"."""

    def where(i: int) -> str:
        start, path = parts[bisect.bisect_right([s for s, _ in parts], i) - 1]
        return f"{path} row {i - start + 1}" if path.suffix == ".parquet" else f"{path} line {i - start + 2}"

    return where


def _read_candle_file(path: Path) -> pd.DataFrame:
    """A candle file's rows as stored (a column with text in it stays text, to be named by the checks)."""
    try:
        # "", "NaN", "null"... become missing values; text stays text. `timestamp` is renamed per file, so
        # files that name the column differently still line up when a market's files are joined.
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        return frame.rename(columns={"timestamp": "ts"})
    except (OSError, ValueError, EOFError, zlib.error) as e:  # unreadable, a truncated gzip, not CSV/Parquet
        raise ConfigError("data_dir", str(path), f"unreadable candle file ({type(e).__name__}: {e})") from None


def market_id(symbol: str) -> str:
    """'BTC/USDT' -> 'BTCUSDT'."""
    return symbol.replace("/", "")


def base_quote(symbol: str) -> tuple[str, str]:
    base, _, quote = symbol.partition("/")
    return base, quote
