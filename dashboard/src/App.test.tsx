import { QueryClientProvider } from "@tanstack/react-query";
import { render, screen, waitFor } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, describe, expect, it, vi } from "vitest";
import { App } from "./App";
import { ROLE_KEY, TOKEN_KEY } from "./api/client";
import { control, order, overview } from "./test/fixtures";
import { json, makeTestClient, mockFetch, type Call } from "./test/utils";

function openStream(call: Call): Response {
  void call;
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      const hello = { kind: "hello", id: null, market: null, data: { retry_ms: 1000 }, server_time: "2024-05-01T13:10:00+00:00" };
      controller.enqueue(new TextEncoder().encode(`event: hello\ndata: ${JSON.stringify(hello)}\n\n`));
    },
  });
  return new Response(body, { status: 200, headers: { "Content-Type": "text/event-stream" } });
}

function backend(tokens: Record<string, "viewer" | "operator">) {
  const role = (call: Call) => tokens[(call.headers.get("Authorization") ?? "").replace(/^Bearer /, "")];
  const guarded = (answer: (call: Call) => Response) => (call: Call) =>
    role(call) ? answer(call) : json({ error: "missing or wrong token", field: null }, 401);
  return mockFetch({
    "GET /api/v1/me": guarded((call) => json({ role: role(call), can_operate: role(call) === "operator", markets: [] })),
    "GET /api/v1/overview": guarded(() => json(overview)),
    "GET /api/v1/control": guarded(() => json(control)),
    "GET /api/v1/orders": guarded(() => json({ items: [order(2), order(1)], total: 2, next_before: null })),
    "GET /api/v1/stream": guarded(openStream),
  });
}

function renderApp() {
  return render(
    <QueryClientProvider client={makeTestClient()}>
      <App />
    </QueryClientProvider>,
  );
}

afterEach(() => {
  vi.unstubAllGlobals();
});

describe("login flow", () => {
  it("refuses a wrong token with a message and keeps nothing", async () => {
    const user = userEvent.setup();
    const { calls } = backend({ good: "operator" });
    renderApp();
    expect(screen.getByTestId("token-input")).toHaveAttribute("type", "password");
    await user.type(screen.getByTestId("token-input"), "wrong");
    await user.click(screen.getByTestId("login-button"));
    await waitFor(() => expect(screen.getByTestId("login-error")).toHaveTextContent(/refused/));
    expect(calls[0]?.path).toBe("/api/v1/me");
    expect(calls[0]?.headers.get("Authorization")).toBe("Bearer wrong");
    expect(sessionStorage.getItem(TOKEN_KEY)).toBeNull();
    expect(screen.queryByTestId("role-badge")).toBeNull();
  });

  it("logs in, stores the token and role, shows the shell, goes live, and logs out", async () => {
    const user = userEvent.setup();
    const { calls } = backend({ good: "operator" });
    renderApp();
    await user.type(screen.getByTestId("token-input"), "good");
    await user.click(screen.getByTestId("login-button"));

    expect(await screen.findByTestId("role-badge")).toHaveTextContent(/^operator$/);
    expect(sessionStorage.getItem(TOKEN_KEY)).toBe("good");
    expect(sessionStorage.getItem(ROLE_KEY)).toBe("operator");
    await waitFor(() => expect(screen.getByTestId("trading-state")).toHaveTextContent("RUNNING"));
    await waitFor(() => expect(screen.getByTestId("live-indicator")).toHaveAttribute("data-state", "live"));
    for (const page of ["overview", "trades", "chart", "performance", "models", "quality", "controls", "ledger"]) {
      expect(screen.getByTestId(`nav-${page}`)).toHaveAttribute("href", `#/${page}`);
    }
    expect(await screen.findAllByTestId("market-card")).toHaveLength(2);
    // every API call after login carries the stored token
    const after = calls.filter((c) => c.path !== "/api/v1/me" || c.headers.get("Authorization") === "Bearer good");
    expect(after.every((c) => c.headers.get("Authorization") === "Bearer good")).toBe(true);
    expect(calls.some((c) => c.path === "/api/v1/stream")).toBe(true);

    await user.click(screen.getByTestId("logout-button"));
    expect(await screen.findByTestId("token-input")).toBeInTheDocument();
    expect(sessionStorage.getItem(TOKEN_KEY)).toBeNull();
  });

  it("shows the viewer role", async () => {
    const user = userEvent.setup();
    backend({ look: "viewer" });
    renderApp();
    await user.type(screen.getByTestId("token-input"), "look");
    await user.click(screen.getByTestId("login-button"));
    expect(await screen.findByTestId("role-badge")).toHaveTextContent(/^viewer$/);
  });

  it("a 401 later logs the user out, back to the login page with a message", async () => {
    sessionStorage.setItem(TOKEN_KEY, "expired");
    sessionStorage.setItem(ROLE_KEY, "operator");
    backend({ good: "operator" });
    renderApp();
    await waitFor(() => expect(screen.getByTestId("login-error")).toHaveTextContent(/401/));
    expect(screen.getByTestId("token-input")).toBeInTheDocument();
    expect(sessionStorage.getItem(TOKEN_KEY)).toBeNull();
  });

  it("navigates with hash routes", async () => {
    const user = userEvent.setup();
    sessionStorage.setItem(TOKEN_KEY, "good");
    sessionStorage.setItem(ROLE_KEY, "operator");
    backend({ good: "operator" });
    renderApp();
    await screen.findAllByTestId("market-card");
    await user.click(screen.getByTestId("nav-trades"));
    await waitFor(() => expect(window.location.hash).toBe("#/trades"));
    expect(await screen.findByTestId("orders-table")).toBeInTheDocument();
    expect(screen.getByTestId("nav-trades")).toHaveAttribute("aria-current", "page");
  });
});
