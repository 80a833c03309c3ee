// `TimeChart` loaded on demand: TradingView Lightweight Charts™ is a chunk of its own. A chart page asks for it as
// soon as it renders (`preloadCharts`), so the library loads while the page's data is fetched, not after.
import { Suspense, lazy, type ComponentProps } from "react";
import type { TimeChart as TimeChartImpl } from "./Charts";

let loading: Promise<typeof import("./Charts")> | null = null;

/** Start loading the chart library (once); a chart page calls it when it renders. */
export function preloadCharts(): Promise<typeof import("./Charts")> {
  loading ??= import("./Charts");
  return loading;
}

const Loaded = lazy(() => preloadCharts().then((m) => ({ default: m.TimeChart })));

export function TimeChart(props: ComponentProps<typeof TimeChartImpl>) {
  return (
    <Suspense
      fallback={<div className="chart-box" style={{ height: props.height ?? 360 }} data-testid={props.testId} aria-busy="true" />}
    >
      <Loaded {...props} />
    </Suspense>
  );
}
