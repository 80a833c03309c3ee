// react-query hooks for every API v1 route. Query keys start with a root the stream invalidates (stream.ts).
import { keepPreviousData, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { ApiError, api, unwrap, type Schemas } from "./client";
import { usePollInterval } from "./live";

export const PAGE_SIZE = 50;

export const keys = {
  me: ["me"] as const,
  overview: ["overview"] as const,
  orders: (filter: OrderFilter) => ["orders", filter] as const,
  fills: (market: string | null, before: number | null) => ["fills", { market, before }] as const,
  decisions: (market: string | null, before: number | null) => ["decisions", { market, before }] as const,
  chart: (market: string, limit: number) => ["chart", market, limit] as const,
  performance: (market: string | null) => ["performance", market] as const,
  models: ["models"] as const,
  quality: ["quality"] as const,
  control: ["control"] as const,
  parameters: ["parameters"] as const,
  ledger: (kind: string | null, before: number | null) => ["ledger", "entries", { kind, before }] as const,
  ledgerVerify: ["ledger", "verify"] as const,
};

export interface OrderFilter {
  market: string | null;
  status: string | null;
  side: "buy" | "sell" | null;
  before: number | null;
  limit?: number;
}

export function useMe(enabled = true) {
  return useQuery({
    queryKey: keys.me,
    queryFn: async () => unwrap(await api.GET("/api/v1/me")),
    enabled,
    staleTime: 60_000,
  });
}

export function useOverview() {
  const refetchInterval = usePollInterval();
  return useQuery({
    queryKey: keys.overview,
    queryFn: async () => unwrap(await api.GET("/api/v1/overview")),
    refetchInterval,
  });
}

export function useOrders(filter: OrderFilter) {
  const refetchInterval = usePollInterval();
  return useQuery({
    queryKey: keys.orders(filter),
    queryFn: async () =>
      unwrap(
        await api.GET("/api/v1/orders", {
          params: {
            query: {
              limit: filter.limit ?? PAGE_SIZE,
              before: filter.before,
              market: filter.market,
              status: filter.status,
              side: filter.side,
            },
          },
        }),
      ),
    placeholderData: keepPreviousData,
    refetchInterval,
  });
}

export function useDecisions(market: string | null, before: number | null, ordersOnly = false) {
  const refetchInterval = usePollInterval();
  return useQuery({
    queryKey: [...keys.decisions(market, before), ordersOnly],
    queryFn: async () =>
      unwrap(
        await api.GET("/api/v1/decisions", {
          params: { query: { limit: PAGE_SIZE, before, market, orders_only: ordersOnly } },
        }),
      ),
    placeholderData: keepPreviousData,
    refetchInterval,
  });
}

export function useChart(market: string | null, limit = 300) {
  const refetchInterval = usePollInterval();
  return useQuery({
    queryKey: keys.chart(market ?? "", limit),
    queryFn: async () => unwrap(await api.GET("/api/v1/chart", { params: { query: { market: market ?? "", limit } } })),
    enabled: market !== null && market !== "",
    refetchInterval,
  });
}

export function usePerformance(market: string | null) {
  const refetchInterval = usePollInterval();
  return useQuery({
    queryKey: keys.performance(market),
    queryFn: async () => unwrap(await api.GET("/api/v1/performance", { params: { query: { market } } })),
    placeholderData: keepPreviousData,
    refetchInterval,
  });
}

export function useModels() {
  const refetchInterval = usePollInterval();
  return useQuery({
    queryKey: keys.models,
    queryFn: async () => unwrap(await api.GET("/api/v1/models")),
    // models change rarely and are not on the stream: poll slowly whatever the stream does
    refetchInterval: refetchInterval === false ? 60_000 : refetchInterval,
  });
}

export function useQuality() {
  const refetchInterval = usePollInterval();
  return useQuery({
    queryKey: keys.quality,
    queryFn: async () => unwrap(await api.GET("/api/v1/quality")),
    refetchInterval: refetchInterval === false ? 60_000 : refetchInterval,
  });
}

export function useControl() {
  const refetchInterval = usePollInterval();
  return useQuery({
    queryKey: keys.control,
    queryFn: async () => unwrap(await api.GET("/api/v1/control")),
    refetchInterval,
  });
}

export function useParameters() {
  const refetchInterval = usePollInterval();
  return useQuery({
    queryKey: keys.parameters,
    queryFn: async () => unwrap(await api.GET("/api/v1/parameters")),
    refetchInterval,
  });
}

export function useLedger(kind: string | null, before: number | null) {
  const refetchInterval = usePollInterval();
  return useQuery({
    queryKey: keys.ledger(kind, before),
    queryFn: async () =>
      unwrap(await api.GET("/api/v1/ledger", { params: { query: { limit: PAGE_SIZE, before, kind } } })),
    placeholderData: keepPreviousData,
    refetchInterval,
  });
}

export function useLedgerVerify() {
  const refetchInterval = usePollInterval();
  return useQuery({
    queryKey: keys.ledgerVerify,
    queryFn: async () => unwrap(await api.GET("/api/v1/ledger/verify")),
    refetchInterval: refetchInterval === false ? 30_000 : refetchInterval,
  });
}

// ----- changes (operator) -----------------------------------------------------------------------------------------

export function useSetControl() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: async (body: Schemas["ControlIn"]) => unwrap(await api.POST("/api/v1/control", { body })),
    onSuccess: (data) => {
      queryClient.setQueryData<Schemas["ControlOut"]>(keys.control, {
        state: data.state,
        reason: data.reason,
        cancel_open: data.cancel_open,
        updated_at: data.updated_at,
        updated_by: data.updated_by,
      });
      void queryClient.invalidateQueries({ queryKey: keys.control });
      void queryClient.invalidateQueries({ queryKey: keys.overview });
      void queryClient.invalidateQueries({ queryKey: ["ledger"] });
    },
  });
}

export function useSetParameters() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: async (body: Schemas["ParametersIn"]) => unwrap(await api.PUT("/api/v1/parameters", { body })),
    onError: (error) => {
      // 409: the edit was made on an older version; fetch the current one so "Reload" has it
      if (error instanceof ApiError && error.status === 409) void queryClient.invalidateQueries({ queryKey: keys.parameters });
    },
    onSuccess: (data) => {
      queryClient.setQueryData(keys.parameters, data.parameters);
      void queryClient.invalidateQueries({ queryKey: keys.parameters });
      void queryClient.invalidateQueries({ queryKey: keys.overview });
      void queryClient.invalidateQueries({ queryKey: ["ledger"] });
    },
  });
}

export function useSetMarketEnabled() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: async (body: Schemas["MarketEnabledIn"]) =>
      unwrap(await api.PUT("/api/v1/markets/enabled", { body })),
    onSuccess: (data) => {
      queryClient.setQueryData(keys.parameters, data.parameters);
      void queryClient.invalidateQueries({ queryKey: keys.parameters });
      void queryClient.invalidateQueries({ queryKey: keys.overview });
      void queryClient.invalidateQueries({ queryKey: ["ledger"] });
    },
  });
}

export function useRollback() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: async (body: Schemas["RollbackIn"]) => unwrap(await api.POST("/api/v1/models/rollback", { body })),
    onSuccess: () => {
      void queryClient.invalidateQueries({ queryKey: keys.models });
      void queryClient.invalidateQueries({ queryKey: keys.overview });
    },
  });
}

/** Market names, from the overview (for the select boxes). */
/** The markets the worker serves (from /me: known at once, without waiting for the overview's figures). */
export function useMarkets(): string[] {
  const me = useMe();
  return me.data?.markets ?? [];
}
