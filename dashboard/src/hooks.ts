// Small hooks: hash routing, a ticking clock, keyset pagination.
import { useCallback, useEffect, useState } from "react";

export const PAGES = ["overview", "trades", "chart", "performance", "models", "quality", "controls", "ledger"] as const;
export type Page = (typeof PAGES)[number];

export function pageFromHash(hash: string): Page {
  const name = hash.replace(/^#\/?/, "").split(/[/?]/)[0] ?? "";
  return (PAGES as readonly string[]).includes(name) ? (name as Page) : "overview";
}

/** The page named by `location.hash` (#/overview, #/trades …), following hashchange. */
export function useHashRoute(): Page {
  const [page, setPage] = useState<Page>(() => pageFromHash(window.location.hash));
  useEffect(() => {
    const update = () => setPage(pageFromHash(window.location.hash));
    window.addEventListener("hashchange", update);
    update();
    return () => window.removeEventListener("hashchange", update);
  }, []);
  return page;
}

/** Epoch ms, re-rendering every `intervalMs`. */
export function useNow(intervalMs = 1000): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), intervalMs);
    return () => clearInterval(timer);
  }, [intervalMs]);
  return now;
}

/** Keyset pagination state: the `before` cursor in use and the ones before it (for "Newer"). */
export function useKeyset(resetOn: string) {
  const [stack, setStack] = useState<(number | null)[]>([null]);
  const [lastReset, setLastReset] = useState(resetOn);
  let current = stack;
  if (lastReset !== resetOn) {
    // a filter changed: back to the newest page (state adjusted during render, React's documented pattern)
    current = [null];
    setLastReset(resetOn);
    setStack(current);
  }
  const before = current[current.length - 1] ?? null;
  const older = useCallback((next: number | null) => {
    if (next !== null) setStack((s) => [...s, next]);
  }, []);
  const newer = useCallback(() => setStack((s) => (s.length > 1 ? s.slice(0, -1) : s)), []);
  return { before, page: current.length, hasNewer: current.length > 1, older, newer };
}

/** `value`, once it has stopped changing for `delayMs` (for text filters). */
export function useDebounced<T>(value: T, delayMs = 300): T {
  const [settled, setSettled] = useState(value);
  useEffect(() => {
    const timer = setTimeout(() => setSettled(value), delayMs);
    return () => clearTimeout(timer);
  }, [value, delayMs]);
  return settled;
}
