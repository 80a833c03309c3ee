// The live stream as React state: one LiveStream per logged-in session, its events turned into react-query
// invalidations (batched), and hooks for the indicator and the polling fallback.
import { useQueryClient, type QueryClient } from "@tanstack/react-query";
import { createContext, useContext, useEffect, useMemo, useSyncExternalStore, type ReactNode } from "react";
import { getToken, signalUnauthorized } from "./client";
import { INVALIDATES, LiveStream, type LiveSnapshot, type LiveState, type StreamEvent } from "./stream";

/** While the stream is not live, queries poll this often. */
export const FALLBACK_POLL_MS = 5000;

/** Collects the query roots that events make stale and invalidates them together (bursts cost one refetch). */
export function createInvalidator(queryClient: QueryClient, delayMs = 100) {
  const pending = new Set<string>();
  let timer: ReturnType<typeof setTimeout> | null = null;
  const flush = () => {
    timer = null;
    const roots = [...pending];
    pending.clear();
    for (const root of roots) void queryClient.invalidateQueries({ queryKey: [root] });
  };
  return {
    event(event: StreamEvent) {
      const roots = INVALIDATES[event.kind];
      if (roots.length === 0) return;
      for (const root of roots) pending.add(root);
      if (timer === null) timer = setTimeout(flush, delayMs);
    },
    all() {
      void queryClient.invalidateQueries();
    },
    cancel() {
      if (timer !== null) clearTimeout(timer);
      timer = null;
      pending.clear();
    },
  };
}

interface LiveStore {
  getSnapshot: () => LiveSnapshot;
  subscribe: (listener: () => void) => () => void;
}

const idle: LiveSnapshot = { state: "connecting", lastEventAt: null, problem: null, retryInMs: null };
const idleStore: LiveStore = { getSnapshot: () => idle, subscribe: () => () => undefined };

const LiveContext = createContext<LiveStore>(idleStore);

/** Opens the stream for the session whose token is `token` (re-opened when it changes). */
export function LiveProvider({ token, children, store }: { token: string; children: ReactNode; store?: LiveStore }) {
  const queryClient = useQueryClient();
  const stream = useMemo(() => {
    if (store) return null;
    const invalidator = createInvalidator(queryClient);
    const live = new LiveStream({
      getToken: () => getToken() ?? token,
      onEvent: (event) => invalidator.event(event),
      onResync: () => invalidator.all(),
      onUnauthorized: () => signalUnauthorized(),
    });
    return { live, invalidator };
  }, [queryClient, token, store]);

  useEffect(() => {
    if (!stream) return undefined;
    stream.live.start();
    return () => {
      stream.live.stop();
      stream.invalidator.cancel();
    };
  }, [stream]);

  const value: LiveStore = store ?? stream?.live ?? idleStore;
  return <LiveContext.Provider value={value}>{children}</LiveContext.Provider>;
}

/** The whole snapshot (re-renders on every event: for the indicator). */
export function useLive(): LiveSnapshot {
  const store = useContext(LiveContext);
  return useSyncExternalStore(store.subscribe, store.getSnapshot, store.getSnapshot);
}

/** Only the state (re-renders when it changes). */
export function useLiveState(): LiveState {
  const store = useContext(LiveContext);
  const get = () => store.getSnapshot().state;
  return useSyncExternalStore(store.subscribe, get, get);
}

/** refetchInterval for queries: none while live (the stream invalidates), 5 s otherwise. */
export function usePollInterval(): number | false {
  return useLiveState() === "live" ? false : FALLBACK_POLL_MS;
}
