import { screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, describe, expect, it, vi } from "vitest";
import { saveSession } from "../api/client";
import { parameters } from "../test/fixtures";
import { json, mockFetch, renderWithClient } from "../test/utils";
import { ParameterForm } from "./ParameterForm";

afterEach(() => {
  vi.unstubAllGlobals();
});

describe("ParameterForm (generated from the JSON Schema)", () => {
  it("renders one input per field, grouped, prefilled, with bounds and the default when different", () => {
    renderWithClient(<ParameterForm parameters={parameters} canOperate />);
    expect(screen.getByTestId("param-section-limits")).toBeInTheDocument();
    expect(screen.getByTestId("param-section-risk")).toBeInTheDocument();

    const maxPosition = screen.getByTestId("param-limits.max_position") as HTMLInputElement;
    expect(maxPosition.type).toBe("number");
    expect(maxPosition.value).toBe("0.8");
    expect(maxPosition).toHaveAttribute("max", "1");
    expect(screen.getByTestId("param-limits.max_position-bounds")).toHaveTextContent("0 < x ≤ 1");
    expect(screen.getByTestId("param-limits.max_position-default")).toHaveTextContent("default 1");
    expect(screen.getByLabelText(/^Max Position limits/)).toBe(maxPosition);

    const allowShort = screen.getByTestId("param-limits.allow_short") as HTMLInputElement;
    expect(allowShort.type).toBe("checkbox");
    expect(allowShort.checked).toBe(true);

    expect(screen.getByTestId("param-risk.max_order_notional")).toHaveValue(20000);
    expect(screen.getByTestId("param-risk.max_order_notional-bounds")).toHaveTextContent("x > 0");
    expect(screen.queryByTestId("param-risk.max_order_notional-default")).toBeNull(); // same as in force
    expect(screen.getByText(/Limits the serving worker checks/)).toBeInTheDocument(); // section description

    expect(screen.getByTestId("param-apply")).toBeDisabled();
    expect(screen.getByTestId("param-diff")).toHaveTextContent("No changes.");
  });

  it("shows the diff as old → new and sends only the changed fields, numbers as numbers", async () => {
    const user = userEvent.setup();
    saveSession({ token: "op-token", role: "operator" });
    const after = {
      ...parameters,
      values: { ...parameters.values, limits: { max_position: 0.5, min_trade: 0.05, allow_short: false } },
      version: 4,
    };
    const { calls } = mockFetch({
      "PUT /api/v1/parameters": () =>
        json({
          parameters: after,
          changes: [
            { field: "limits.max_position", old: 0.8, new: 0.5 },
            { field: "limits.allow_short", old: true, new: false },
          ],
          ledger_seq: 1234,
        }),
      "GET /api/v1/parameters": after,
    });
    renderWithClient(<ParameterForm parameters={parameters} canOperate />);

    const maxPosition = screen.getByTestId("param-limits.max_position");
    await user.clear(maxPosition);
    await user.type(maxPosition, "0.5");
    await user.click(screen.getByTestId("param-limits.allow_short"));

    const diff = screen.getByTestId("param-diff");
    expect(within(diff).getAllByTestId("param-diff-item").map((li) => li.textContent)).toEqual([
      "limits.max_position: 0.8 → 0.5",
      "limits.allow_short: true → false",
    ]);
    expect(screen.getByTestId("param-apply")).toBeEnabled();

    await user.type(screen.getByTestId("param-reason"), "less risk");
    await user.click(screen.getByTestId("param-apply"));

    await waitFor(() => expect(screen.getByTestId("param-saved")).toHaveTextContent("ledger seq 1234"));
    const put = calls.find((c) => c.method === "PUT");
    expect(put?.path).toBe("/api/v1/parameters");
    expect(put?.body).toEqual({ changes: { "limits.max_position": 0.5, "limits.allow_short": false }, reason: "less risk", version: 3 });
    expect(put?.headers.get("Authorization")).toBe("Bearer op-token");
    expect(put?.headers.get("Content-Type")).toMatch(/application\/json/);
    // the form now shows the saved values and no pending change
    expect(screen.getByTestId("param-limits.max_position")).toHaveValue(0.5);
    expect(screen.getByTestId("param-apply")).toBeDisabled();
  });

  it("lets the server decide on bounds and highlights the field its error names", async () => {
    const user = userEvent.setup();
    saveSession({ token: "op-token", role: "operator" });
    const { calls } = mockFetch({
      "PUT /api/v1/parameters": () =>
        json({ error: "limits.max_position: Input should be less than or equal to 1 (got 2.0)", field: "limits.max_position" }, 400),
    });
    renderWithClient(<ParameterForm parameters={parameters} canOperate />);
    const maxPosition = screen.getByTestId("param-limits.max_position");
    await user.clear(maxPosition);
    await user.type(maxPosition, "2");
    expect(screen.getByTestId("param-limits.max_position-bounds")).toHaveTextContent(/outside the bounds/);
    await user.type(screen.getByTestId("param-reason"), "try");
    await user.click(screen.getByTestId("param-apply")); // not blocked client-side

    const error = await screen.findByTestId("param-error");
    expect(error).toHaveTextContent("Input should be less than or equal to 1");
    expect(error).toHaveAttribute("data-field", "limits.max_position");
    expect(screen.getByTestId("param-limits.max_position")).toHaveAttribute("aria-invalid", "true");
    expect(screen.getByTestId("param-limits.max_position")).toHaveClass("invalid");
    expect(calls.filter((c) => c.method === "PUT")[0]?.body).toMatchObject({ changes: { "limits.max_position": 2 } });
  });

  it("is read-only for a viewer", () => {
    renderWithClient(<ParameterForm parameters={parameters} canOperate={false} />, { role: "viewer" });
    expect(screen.getByTestId("param-limits.max_position")).toBeDisabled();
    expect(screen.getByTestId("param-limits.allow_short")).toBeDisabled();
    expect(screen.getByTestId("param-reason")).toBeDisabled();
    expect(screen.getByTestId("param-apply")).toBeDisabled();
  });
});
