import { screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, describe, expect, it, vi } from "vitest";
import { saveSession, type Schemas } from "../api/client";
import { json, mockFetch, renderWithClient } from "../test/utils";
import { Ledger } from "./Ledger";

afterEach(() => {
  vi.unstubAllGlobals();
});

function entry(seq: number, kind = "order"): Schemas["LedgerEntryOut"] {
  return {
    seq,
    time: "2024-05-01T13:00:00+00:00",
    kind,
    payload: { market: "BTC/USDT", seq },
    hash: `${seq}`.padStart(64, "a"),
    prev_hash: `${seq - 1}`.padStart(64, "a"),
  };
}

describe("Ledger", () => {
  it("shows the verification, the entries, expands a payload and filters by kind", async () => {
    const user = userEvent.setup();
    saveSession({ token: "t", role: "viewer" });
    const { calls } = mockFetch({
      "GET /api/v1/ledger/verify": { ok: true, entries: 120, problem: null, checkpoint_size: 100, checkpoint_time: "2024-05-01T12:00:00+00:00" },
      "GET /api/v1/ledger": (call) => {
        const kind = new URLSearchParams(call.search).get("kind");
        return json({ items: kind ? [entry(5, kind)] : [entry(120), entry(119, "control")], total: kind ? 1 : 120, next_before: kind ? null : 119 });
      },
    });
    renderWithClient(<Ledger />, { role: "viewer" });
    await waitFor(() => expect(screen.getByTestId("ledger-status")).toHaveTextContent("verified"));
    expect(screen.getByTestId("ledger-status")).toHaveAttribute("data-ok", "true");
    const table = await screen.findByTestId("ledger-table");
    const rows = within(table).getAllByTestId("ledger-row");
    expect(rows).toHaveLength(2);
    expect(rows[0]).toHaveTextContent('{"market":"BTC/USDT","seq":120}');
    await user.click(rows[0]!);
    expect(screen.getByTestId("ledger-details")).toHaveTextContent('"seq": 120');
    expect(screen.getByTestId("page-older")).toBeEnabled();

    await user.type(screen.getByTestId("filter-kind"), "control");
    await waitFor(() => expect(new URLSearchParams(calls.at(-1)?.search).get("kind")).toBe("control"));
    await waitFor(() => expect(within(screen.getByTestId("ledger-table")).getAllByTestId("ledger-row")).toHaveLength(1));
  });

  it("says what is wrong when the chain does not verify", async () => {
    saveSession({ token: "t", role: "viewer" });
    mockFetch({
      "GET /api/v1/ledger/verify": { ok: false, entries: 50, problem: "entry 17: hash mismatch", checkpoint_size: null, checkpoint_time: null },
      "GET /api/v1/ledger": { items: [], total: 0, next_before: null },
    });
    renderWithClient(<Ledger />, { role: "viewer" });
    await waitFor(() => expect(screen.getByTestId("ledger-status")).toHaveTextContent("entry 17: hash mismatch"));
    expect(screen.getByTestId("ledger-status")).toHaveAttribute("data-ok", "false");
  });
});
