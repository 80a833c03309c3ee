// Formatting helpers: numbers, percentages, ages and UTC times. Every function accepts null/undefined
// (the API uses null for "not known") and returns an em dash for it.

export const DASH = "—";

type Num = number | null | undefined;

function isNum(value: Num): value is number {
  return typeof value === "number" && Number.isFinite(value);
}

/** A number with a precision that suits its size: 12,345.67 · 12.345 · 0.001234. */
export function fmtNum(value: Num, digits?: number): string {
  if (!isNum(value)) return DASH;
  if (digits !== undefined) {
    return value.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
  }
  const abs = Math.abs(value);
  if (abs === 0) return "0";
  if (abs >= 1000) return value.toLocaleString("en-US", { maximumFractionDigits: 2 });
  if (abs >= 1) return value.toLocaleString("en-US", { maximumFractionDigits: 4 });
  // small numbers: 4 significant digits, never exponent notation
  return value.toLocaleString("en-US", { maximumSignificantDigits: 4 });
}

/** A price: fixed decimals for its size (20,616.76 · 1.2345 · 0.0001234), so a column lines up. */
export function fmtPrice(value: Num): string {
  if (!isNum(value)) return DASH;
  const abs = Math.abs(value);
  if (abs >= 1000) return fmtNum(value, 2);
  if (abs >= 1) return fmtNum(value, 4);
  if (abs === 0) return "0";
  return value.toLocaleString("en-US", { maximumSignificantDigits: 4 });
}

/** Money-like amount: two decimals with separators (quote currency). */
export function fmtMoney(value: Num): string {
  return isNum(value) ? fmtNum(value, 2) : DASH;
}

/** A signed number: +12.50 / −3.20. */
export function fmtSigned(value: Num, digits = 2): string {
  if (!isNum(value)) return DASH;
  const text = fmtNum(Math.abs(value), digits);
  if (value > 0) return `+${text}`;
  if (value < 0) return `−${text}`;
  return text;
}

/** A fraction as a percentage: 0.0123 -> "1.23%"; signed: "+1.23%". */
export function fmtPct(value: Num, options: { signed?: boolean; digits?: number } = {}): string {
  if (!isNum(value)) return DASH;
  const digits = options.digits ?? 2;
  const pct = value * 100;
  const text = `${Math.abs(pct).toFixed(digits)}%`;
  if (pct < 0 && Number(text.slice(0, -1)) !== 0) return `−${text}`;
  if (options.signed && pct > 0 && Number(text.slice(0, -1)) !== 0) return `+${text}`;
  return text;
}

/** A ratio such as Sharpe: two decimals. */
export function fmtRatio(value: Num): string {
  return isNum(value) ? value.toFixed(2) : DASH;
}

/** A duration in seconds: "12 s", "3 min", "2 h 5 min", "4 d". */
export function fmtDuration(seconds: Num): string {
  if (!isNum(seconds)) return DASH;
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  if (h < 24) {
    const rest = m % 60;
    return rest ? `${h} h ${rest} min` : `${h} h`;
  }
  const d = Math.floor(h / 24);
  const restH = h % 24;
  return restH && d < 7 ? `${d} d ${restH} h` : `${d} d`;
}

/** An age in seconds as relative text: "just now", "12 s ago", "3 min ago". */
export function fmtAge(seconds: Num): string {
  if (!isNum(seconds)) return DASH;
  if (seconds < 1) return "just now";
  return `${fmtDuration(seconds)} ago`;
}

/** Parse an ISO timestamp (or epoch seconds) to epoch milliseconds; null if not parseable. */
export function toMs(value: string | number | null | undefined): number | null {
  if (value === null || value === undefined || value === "") return null;
  if (typeof value === "number") return Number.isFinite(value) ? value * 1000 : null;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? null : ms;
}

/** Seconds from `value` until now (or `nowMs`). */
export function ageSeconds(value: string | number | null | undefined, nowMs: number = Date.now()): number | null {
  const ms = toMs(value);
  return ms === null ? null : Math.max(0, (nowMs - ms) / 1000);
}

function pad(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

/** "2022-09-01 13:00 UTC" (with seconds when asked). */
export function fmtTime(value: string | number | null | undefined, options: { seconds?: boolean } = {}): string {
  const ms = toMs(value);
  if (ms === null) return DASH;
  const d = new Date(ms);
  const date = `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
  const time = `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}${options.seconds ? `:${pad(d.getUTCSeconds())}` : ""}`;
  return `${date} ${time} UTC`;
}

/** A timestamp with its relative age: "2022-09-01 13:00 UTC (3 min ago)". */
export function fmtTimeAgo(value: string | null | undefined, nowMs: number = Date.now()): string {
  if (!value) return DASH;
  return `${fmtTime(value)} (${fmtAge(ageSeconds(value, nowMs))})`;
}

/** First characters of a hash/id, for tables. */
export function shortHash(value: string | null | undefined, length = 10): string {
  if (!value) return DASH;
  return value.length > length ? `${value.slice(0, length)}…` : value;
}

/** A timeframe such as "1m", "15m", "1h", "4h", "1d", "1w" in seconds (null if unknown). */
export function timeframeSeconds(timeframe: string): number | null {
  const match = /^(\d+)\s*([smhdwM])$/.exec(timeframe.trim());
  if (!match) return null;
  const n = Number(match[1]);
  const unit: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400, w: 604800, M: 2592000 };
  const factor = unit[match[2] ?? ""];
  return factor === undefined ? null : n * factor;
}

/** Freshness of data given its age and the bar length: ok, late (over one bar) or old (over two bars). */
export function freshness(ageS: Num, barS: number | null): "ok" | "late" | "old" | "unknown" {
  if (!isNum(ageS)) return "unknown";
  const bar = barS ?? 3600;
  if (ageS > 2 * bar) return "old";
  if (ageS > bar) return "late";
  return "ok";
}

/** Sign class for coloured numbers. */
export function signClass(value: Num): string {
  if (!isNum(value) || value === 0) return "";
  return value > 0 ? "pos" : "neg";
}

/** Compact one-line JSON. */
export function compactJson(value: unknown, max = 160): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? "";
  } catch {
    text = String(value);
  }
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** A value from a parameter form for display in a diff: numbers plainly, booleans as true/false. */
export function fmtValue(value: unknown): string {
  if (value === null || value === undefined) return "null";
  if (typeof value === "string") return value === "" ? '""' : value;
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  return JSON.stringify(value);
}
