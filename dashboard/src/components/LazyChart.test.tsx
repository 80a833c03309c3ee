import { render, screen } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { TimeChart, preloadCharts } from "./LazyChart";

// jsdom has no matchMedia, so the loaded chart says it cannot draw: that message shows the library's component ran.
describe("lazily loaded chart", () => {
  it("shows a placeholder while the library loads, then the chart", async () => {
    render(<TimeChart series={[]} testId="c1" />);
    expect(screen.getByTestId("c1")).toHaveAttribute("aria-busy", "true");
    expect(await screen.findByText(/Chart unavailable in this browser/)).toBeInTheDocument();
  });

  it("draws in the first render once the library has loaded (no suspended reveal to wait for)", async () => {
    await preloadCharts();
    render(<TimeChart series={[]} testId="c2" />);
    expect(screen.getByTestId("c2")).not.toHaveAttribute("aria-busy");
    expect(screen.getByTestId("c2")).toHaveTextContent(/Chart unavailable in this browser/);
  });
});
