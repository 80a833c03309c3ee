import { screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, describe, expect, it, vi } from "vitest";
import { saveSession } from "../api/client";
import { control, overview, parameters } from "../test/fixtures";
import { json, mockFetch, renderWithClient } from "../test/utils";
import { Controls } from "./Controls";

afterEach(() => {
  vi.unstubAllGlobals();
});

describe("Controls", () => {
  it("halts with a reason and cancel-open, and shows the server's error", async () => {
    const user = userEvent.setup();
    saveSession({ token: "op", role: "operator" });
    const { calls } = mockFetch({
      "GET /api/v1/overview": overview,
      "GET /api/v1/control": control,
      "GET /api/v1/parameters": parameters,
      "POST /api/v1/control": (call) => {
        const body = call.body as { state: string; reason: string; cancel_open: boolean };
        if (!body.reason) return json({ error: "reason: String should have at least 1 character", field: "reason" }, 400);
        return json({ ...control, state: body.state, reason: body.reason, cancel_open: body.cancel_open, worker_notified: true });
      },
    });
    renderWithClient(<Controls />, { role: "operator" });
    await screen.findByTestId("control-state");
    expect(screen.queryByTestId("operator-only")).toBeNull();

    await user.click(screen.getByTestId("halt-button")); // no reason: the server says so
    expect(await screen.findByTestId("control-error")).toHaveTextContent("reason: String should have at least 1 character");

    await user.type(screen.getByTestId("control-reason"), "exchange maintenance");
    await user.click(screen.getByTestId("cancel-open"));
    await user.click(screen.getByTestId("halt-button"));
    await waitFor(() => expect(screen.getByTestId("control-done")).toHaveTextContent("HALTED"));
    expect(screen.queryByTestId("control-error")).toBeNull();
    const posts = calls.filter((c) => c.method === "POST");
    expect(posts.at(-1)?.body).toEqual({ state: "HALTED", reason: "exchange maintenance", cancel_open: true });
  });

  it("disables a market with a reason", async () => {
    const user = userEvent.setup();
    saveSession({ token: "op", role: "operator" });
    let current = parameters;
    const { calls } = mockFetch({
      "GET /api/v1/overview": overview,
      "GET /api/v1/control": control,
      "GET /api/v1/parameters": () => json(current),
      "PUT /api/v1/markets/enabled": () => {
        current = { ...parameters, disabled_markets: ["BTC/USDT"], version: 4 };
        return json({ parameters: current, changes: [{ field: "markets.BTC/USDT.enabled", old: true, new: false }], ledger_seq: 77 });
      },
    });
    renderWithClient(<Controls />, { role: "operator" });
    const toggles = await screen.findAllByTestId("market-toggle");
    const btc = toggles.find((t) => t.getAttribute("data-market") === "BTC/USDT")!;
    expect(btc).toHaveAttribute("aria-checked", "true");
    await user.click(btc);
    await user.type(screen.getByTestId("market-reason"), "delisting");
    await user.click(screen.getByTestId("market-confirm"));
    await waitFor(() =>
      expect(screen.getAllByTestId("market-toggle").find((t) => t.getAttribute("data-market") === "BTC/USDT")).toHaveAttribute("aria-checked", "false"),
    );
    expect(calls.find((c) => c.method === "PUT")?.body).toEqual({ market: "BTC/USDT", enabled: false, reason: "delisting" });
  });

  it("is read-only for a viewer, with a notice", async () => {
    saveSession({ token: "v", role: "viewer" });
    mockFetch({
      "GET /api/v1/overview": overview,
      "GET /api/v1/control": control,
      "GET /api/v1/parameters": parameters,
    });
    renderWithClient(<Controls />, { role: "viewer" });
    expect(screen.getByTestId("operator-only")).toHaveTextContent("Changes need the operator token");
    await screen.findByTestId("control-state");
    for (const id of ["control-reason", "halt-button", "reduce-button", "resume-button", "cancel-open"]) {
      expect(screen.getByTestId(id)).toBeDisabled();
    }
    const form = await screen.findByTestId("param-form");
    expect(within(form).getByTestId("param-limits.max_position")).toHaveValue(0.8);
    expect(within(form).getByTestId("param-limits.max_position")).toBeDisabled();
    expect(within(form).getByTestId("param-apply")).toBeDisabled();
    for (const toggle of await screen.findAllByTestId("market-toggle")) expect(toggle).toBeDisabled();
  });
});
