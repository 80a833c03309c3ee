// Test helpers: a fetch mock routing by method + path, JSON responses, and a render with a fresh QueryClient.
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { render } from "@testing-library/react";
import type { ReactElement } from "react";
import { vi } from "vitest";
import type { Role } from "../api/client";
import { RoleContext } from "../role";

export function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
}

export interface Call {
  method: string;
  path: string;
  search: string;
  headers: Headers;
  body: unknown;
}

type Handler = (call: Call) => Response | Promise<Response>;

/** Replace global fetch: `routes["GET /api/v1/me"]` answers; every call is recorded. Unknown routes: 404. */
export function mockFetch(routes: Record<string, Handler | object>) {
  const calls: Call[] = [];
  const fn = vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
    const request = input instanceof Request ? input : new Request(String(input), init);
    const url = new URL(request.url, window.location.href);
    const text = request.method === "GET" || request.method === "HEAD" ? "" : await request.clone().text();
    const call: Call = {
      method: request.method,
      path: url.pathname,
      search: url.search,
      headers: request.headers,
      body: text ? (JSON.parse(text) as unknown) : undefined,
    };
    calls.push(call);
    const route = routes[`${call.method} ${call.path}`];
    if (route === undefined) return json({ error: "not found", field: null }, 404);
    if (typeof route === "function") return (route as Handler)(call);
    return json(route);
  });
  vi.stubGlobal("fetch", fn);
  return { fn, calls };
}

export function makeTestClient(): QueryClient {
  return new QueryClient({
    defaultOptions: { queries: { retry: false, gcTime: Infinity }, mutations: { retry: false } },
  });
}

export function renderWithClient(ui: ReactElement, options: { role?: Role; client?: QueryClient } = {}) {
  const client = options.client ?? makeTestClient();
  const result = render(
    <QueryClientProvider client={client}>
      <RoleContext.Provider value={options.role ?? "operator"}>{ui}</RoleContext.Provider>
    </QueryClientProvider>,
  );
  return { ...result, client };
}
