import { render, screen, within } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { overview } from "../test/fixtures";
import { OverviewView } from "./Overview";

const NOW = Date.parse("2024-05-01T13:10:05Z");

describe("Overview", () => {
  it("renders the header stats and the not-ready reasons", () => {
    render(<OverviewView data={overview} now={NOW} />);
    const summary = screen.getByTestId("overview-summary");
    expect(within(summary).getByTestId("mode")).toHaveTextContent("paper");
    expect(summary).toHaveTextContent("binance");
    expect(within(summary).getByTestId("ready")).toHaveTextContent("not ready");
    expect(screen.getByTestId("not-ready-reasons")).toHaveTextContent("ETH/USDT: no champion");
  });

  it("renders one card per market with its numbers", () => {
    render(<OverviewView data={overview} now={NOW} />);
    const cards = screen.getAllByTestId("market-card");
    expect(cards.map((c) => c.getAttribute("data-market"))).toEqual(["BTC/USDT", "ETH/USDT"]);

    const btc = within(cards[0]!);
    expect(btc.getByTestId("champion")).toHaveTextContent("cta-btc v7");
    expect(btc.getByTestId("market-enabled")).toHaveTextContent("enabled");
    expect(btc.getByTestId("market-trading-state")).toHaveTextContent("RUNNING");
    expect(btc.getByTestId("position")).toHaveTextContent("0.125");
    expect(btc.getByTestId("position")).toHaveTextContent("7,500.50 value");
    expect(btc.getByTestId("equity")).toHaveTextContent("10,250.25");
    expect(btc.getByTestId("pnl-today")).toHaveTextContent("+120.50");
    expect(btc.getByTestId("pnl-since-start")).toHaveTextContent("+250.25");
    expect(btc.getByTestId("pnl-since-start")).toHaveTextContent("+2.50%");
    expect(btc.getByTestId("buy-hold")).toHaveTextContent("−3.12%");
    expect(btc.getByTestId("orders-count")).toHaveTextContent("42");
    expect(btc.getByTestId("data-freshness")).toHaveAttribute("data-freshness", "ok");
    expect(btc.getByTestId("data-freshness")).toHaveTextContent("10 min old");
    const decision = btc.getByTestId("last-decision");
    expect(decision).toHaveTextContent("2024-05-01 13:00 UTC");
    expect(decision).toHaveTextContent("10 min ago");
    expect(decision).toHaveTextContent("prediction 0.0042 → target 0.75");
    expect(decision).toHaveTextContent("signal above threshold");
    expect(btc.getByTestId("warnings")).toHaveTextContent("fee rate unknown");
  });

  it("shows a missing champion, a disabled market and old data in red", () => {
    render(<OverviewView data={overview} now={NOW} />);
    const eth = within(screen.getAllByTestId("market-card")[1]!);
    expect(eth.getByTestId("champion")).toHaveTextContent("no champion registered");
    expect(eth.getByTestId("market-enabled")).toHaveTextContent("disabled");
    expect(eth.getByTestId("data-freshness")).toHaveAttribute("data-freshness", "old");
    expect(eth.getByTestId("data-freshness")).toHaveClass("fresh-old");
    expect(eth.getByTestId("equity")).toHaveTextContent("—");
    expect(eth.getByTestId("last-decision")).toHaveTextContent("none yet");
    expect(eth.queryByTestId("warnings")).toBeNull();
  });
});
