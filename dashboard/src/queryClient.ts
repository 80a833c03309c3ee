import { QueryClient } from "@tanstack/react-query";
import { ApiError } from "./api/client";

/** Client errors (4xx) are not retried: the server said what was wrong. */
export function makeQueryClient(): QueryClient {
  return new QueryClient({
    defaultOptions: {
      queries: {
        staleTime: 2_000,
        retry: (failureCount, error) => !(error instanceof ApiError && error.status < 500) && failureCount < 2,
        refetchOnWindowFocus: true,
      },
      mutations: { retry: false },
    },
  });
}
