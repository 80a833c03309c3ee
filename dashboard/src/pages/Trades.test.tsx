import { screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, describe, expect, it, vi } from "vitest";
import { saveSession } from "../api/client";
import { order, me, overview } from "../test/fixtures";
import { json, mockFetch, renderWithClient } from "../test/utils";
import { Trades } from "./Trades";

afterEach(() => {
  vi.unstubAllGlobals();
});

describe("Trades", () => {
  it("lists orders, expands details, filters and pages with next_before", async () => {
    const user = userEvent.setup();
    saveSession({ token: "t", role: "viewer" });
    const { calls } = mockFetch({
      "GET /api/v1/overview": overview,
      "GET /api/v1/me": me,
      "GET /api/v1/orders": (call) => {
        const q = new URLSearchParams(call.search);
        if (q.get("before") === "3") return json({ items: [order(2), order(1)], total: 4, next_before: null });
        return json({
          items: [order(4, { side: "sell", status: "PARTIALLY_FILLED", filled: 0.005 }), order(3)],
          total: 4,
          next_before: 3,
        });
      },
    });
    renderWithClient(<Trades />, { role: "viewer" });

    const table = await screen.findByTestId("orders-table");
    let rows = within(table).getAllByTestId("order-row");
    expect(rows.map((r) => r.getAttribute("data-order-id"))).toEqual(["4", "3"]);
    expect(screen.getByTestId("total")).toHaveTextContent("4 total");
    const first = within(rows[0]!);
    expect(first.getByText("sell")).toHaveClass("text-down");
    expect(first.getByText("PARTIALLY_FILLED")).toBeInTheDocument();
    expect(first.getByText("60,000.00")).toHaveClass("mono");
    expect(within(rows[1]!).getByText("buy")).toHaveClass("text-up");

    // expand: fills, decision, ledger seq, client order id
    await user.click(rows[0]!);
    const details = screen.getByTestId("order-details");
    expect(details).toHaveTextContent("cta-4-abc");
    expect(details).toHaveTextContent("trade-4");
    expect(within(details).getByTestId("order-ledger-seq")).toHaveTextContent("#904");
    expect(within(details).getByTestId("order-decision")).toHaveTextContent("cta-btc v7");
    expect(within(details).getByTestId("order-decision")).toHaveTextContent("ab12cd34ef56ab12cd34ef56ab12cd34");
    await user.click(rows[0]!);
    expect(screen.queryByTestId("order-details")).toBeNull();

    // older page via next_before, then back
    await user.click(screen.getByTestId("page-older"));
    await waitFor(() => expect(within(screen.getByTestId("orders-table")).getAllByTestId("order-row")[0]).toHaveAttribute("data-order-id", "2"));
    expect(calls.filter((c) => c.path === "/api/v1/orders").at(-1)?.search).toContain("before=3");
    expect(screen.getByTestId("page-older")).toBeDisabled();
    await user.click(screen.getByTestId("page-newer"));
    await waitFor(() => expect(within(screen.getByTestId("orders-table")).getAllByTestId("order-row")[0]).toHaveAttribute("data-order-id", "4"));

    // filters go into the query
    await waitFor(() => expect(within(screen.getByTestId("filter-market")).getAllByRole("option")).toHaveLength(3));
    await user.selectOptions(screen.getByTestId("filter-market"), "BTC/USDT");
    await user.selectOptions(screen.getByTestId("filter-status"), "FILLED");
    await user.selectOptions(screen.getByTestId("filter-side"), "sell");
    await waitFor(() => {
      const search = new URLSearchParams(calls.filter((c) => c.path === "/api/v1/orders").at(-1)?.search);
      expect(search.get("market")).toBe("BTC/USDT");
      expect(search.get("status")).toBe("FILLED");
      expect(search.get("side")).toBe("sell");
      expect(search.get("before")).toBeNull();
    });
    rows = within(screen.getByTestId("orders-table")).getAllByTestId("order-row");
    expect(rows.length).toBeGreaterThan(0);
  });
});
