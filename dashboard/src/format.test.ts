import { describe, expect, it } from "vitest";
import { fmtAge, fmtDuration, fmtMoney, fmtNum, fmtPct, fmtPrice, fmtSigned, fmtTime, freshness, shortHash, timeframeSeconds, compactJson } from "./format";

describe("format", () => {
  it("formats numbers with sensible precision", () => {
    expect(fmtNum(12345.678)).toBe("12,345.68");
    expect(fmtNum(12.3456789)).toBe("12.3457");
    expect(fmtNum(0.00123456)).toBe("0.001235");
    expect(fmtNum(0)).toBe("0");
    expect(fmtNum(null)).toBe("—");
    expect(fmtNum(Number.NaN)).toBe("—");
    expect(fmtMoney(1234.5)).toBe("1,234.50");
    expect(fmtSigned(-3.2)).toBe("−3.20");
    expect(fmtSigned(3.2)).toBe("+3.20");
  });

  it("formats percentages from fractions", () => {
    expect(fmtPct(0.0123)).toBe("1.23%");
    expect(fmtPct(0.0123, { signed: true })).toBe("+1.23%");
    expect(fmtPct(-0.5)).toBe("−50.00%");
    expect(fmtPct(-0.00001)).toBe("0.00%");
    expect(fmtPct(undefined)).toBe("—");
  });

  it("formats ages and durations", () => {
    expect(fmtAge(0.4)).toBe("just now");
    expect(fmtAge(12)).toBe("12 s ago");
    expect(fmtAge(180)).toBe("3 min ago");
    expect(fmtDuration(3 * 3600 + 5 * 60)).toBe("3 h 5 min");
    expect(fmtDuration(2 * 86400 + 3600)).toBe("2 d 1 h");
  });

  it("formats times in UTC", () => {
    expect(fmtTime("2022-09-01T13:00:00+00:00")).toBe("2022-09-01 13:00 UTC");
    expect(fmtTime("2022-09-01T15:00:00+02:00")).toBe("2022-09-01 13:00 UTC");
    expect(fmtTime(1662037200)).toBe("2022-09-01 13:00 UTC");
    expect(fmtTime("2022-09-01T13:00:09Z", { seconds: true })).toBe("2022-09-01 13:00:09 UTC");
    expect(fmtTime(null)).toBe("—");
    expect(fmtTime("garbage")).toBe("—");
  });

  it("knows timeframes and freshness", () => {
    expect(timeframeSeconds("1h")).toBe(3600);
    expect(timeframeSeconds("15m")).toBe(900);
    expect(timeframeSeconds("1d")).toBe(86400);
    expect(timeframeSeconds("weird")).toBeNull();
    expect(freshness(100, 3600)).toBe("ok");
    expect(freshness(4000, 3600)).toBe("late");
    expect(freshness(8000, 3600)).toBe("old");
    expect(freshness(null, 3600)).toBe("unknown");
  });

  it("shortens hashes and JSON", () => {
    expect(shortHash("0123456789abcdef", 6)).toBe("012345…");
    expect(compactJson({ a: 1, b: [1, 2] })).toBe('{"a":1,"b":[1,2]}');
    expect(compactJson({ long: "x".repeat(50) }, 20)).toHaveLength(20);
  });
});

describe("fmtPrice", () => {
  it("keeps a column's decimals aligned", () => {
    expect(fmtPrice(20769.5)).toBe("20,769.50");
    expect(fmtPrice(1.5)).toBe("1.5000");
    expect(fmtPrice(0.000123456)).toBe("0.0001235");
    expect(fmtPrice(null)).toBe("—");
  });
});
