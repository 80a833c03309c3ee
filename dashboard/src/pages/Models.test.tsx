import { screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, describe, expect, it, vi } from "vitest";
import { saveSession, type Schemas } from "../api/client";
import { json, mockFetch, renderWithClient } from "../test/utils";
import { Models, curveSeries, verdictTone } from "./Models";

afterEach(() => {
  vi.unstubAllGlobals();
});

const market: Schemas["MarketModelsOut"] = {
  market: "BTC/USDT",
  registered_name: "cta-btc",
  champion: { version: "7", run_id: "r7", family: "lightgbm", created_at: "2024-04-01T00:00:00+00:00", tags: { verdict: "champion" } },
  previous: { version: "6", run_id: "r6", family: "ridge", created_at: "2024-03-01T00:00:00+00:00", tags: {} },
  candidates: [
    { run_id: null, started_at: null, family: "lightgbm", version: "7", verdict: "champion", reasons: [], sharpe: 1.4, max_drawdown: -0.12, trades: null },
    { run_id: null, started_at: null, family: "mlp", version: "8", verdict: "failed", reasons: ["sharpe below 0.5", "drawdown"], sharpe: 0.2, max_drawdown: -0.4, trades: null },
  ],
  backtest_curve: [
    { time: "2024-01-01T00:00:00+00:00", value: 1 },
    { time: "2024-01-01T01:00:00+00:00", value: 1.01 },
  ],
  live_curve: [{ time: "2024-04-01T00:00:00+00:00", value: 1 }],
  backtest_return: 0.01,
  live_return: 0,
  gap: -0.01,
  problem: null,
};

describe("Models", () => {
  it("shows champion, previous, candidates with verdicts, and rolls back with a reason (operator)", async () => {
    const user = userEvent.setup();
    saveSession({ token: "op", role: "operator" });
    const { calls } = mockFetch({
      "GET /api/v1/models": { markets: [market] },
      "POST /api/v1/models/rollback": () => json({ market: "BTC/USDT", description: "champion v7 -> v6" }),
    });
    renderWithClient(<Models />, { role: "operator" });
    const section = await screen.findByTestId("models-market");
    expect(section).toHaveAttribute("data-market", "BTC/USDT");
    expect(within(section).getByTestId("champion-version")).toHaveTextContent("v7");
    expect(within(section).getByTestId("previous-version")).toHaveTextContent("v6");
    expect(within(section).getByTestId("gap")).toHaveTextContent("−1.00%");
    const verdicts = within(section).getAllByTestId("verdict");
    expect(verdicts[0]).toHaveClass("badge-info");
    expect(verdicts[1]).toHaveClass("badge-bad");
    expect(section).toHaveTextContent("sharpe below 0.5");

    await user.click(within(section).getByTestId("rollback-button"));
    await user.type(screen.getByTestId("rollback-reason"), "live drift");
    await user.click(screen.getByTestId("rollback-confirm"));
    await waitFor(() => expect(screen.getByTestId("rollback-done")).toHaveTextContent("champion v7 -> v6"));
    expect(calls.find((c) => c.method === "POST")?.body).toEqual({ market: "BTC/USDT", reason: "live drift" });
  });

  it("hides the rollback from a viewer", async () => {
    saveSession({ token: "v", role: "viewer" });
    mockFetch({ "GET /api/v1/models": { markets: [market] } });
    renderWithClient(<Models />, { role: "viewer" });
    await screen.findByTestId("models-market");
    expect(screen.queryByTestId("rollback-button")).toBeNull();
  });

  it("aligns both curves by bar and colours verdicts", () => {
    const [backtest, live] = curveSeries(market);
    expect(backtest?.data.map((p) => p.time)).toEqual([1, 2]);
    expect(live?.data).toHaveLength(1);
    expect(verdictTone("passed")).toBe("ok");
    expect(verdictTone("promotion_failed")).toBe("bad");
    expect(verdictTone("not gated")).toBe("muted");
  });
});
