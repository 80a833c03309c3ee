// `TimeChart` loaded on demand: TradingView Lightweight Charts™ is a chunk of its own. A chart page asks for it as
// soon as it renders (`preloadCharts`), so the library loads while the page's data is fetched, not after.
//
// No React.lazy/Suspense here on purpose: React holds back the reveal of a suspended boundary for up to 300 ms
// after its fallback was shown (its fallback throttle), which cost every chart page ~350 ms between its data
// arriving and its chart drawn. The loaded module is kept instead, and a chart rendered after it has loaded
// (the usual case: the library arrives before the data) is drawn in the same render.
import { useEffect, useState, type ComponentProps } from "react";
import type { TimeChart as TimeChartImpl } from "./Charts";

type ChartsModule = typeof import("./Charts");

let loading: Promise<ChartsModule> | null = null;
let loaded: ChartsModule | null = null;

/** Start loading the chart library (once); a chart page calls it when it renders. */
export function preloadCharts(): Promise<ChartsModule> {
  loading ??= import("./Charts").then((module) => {
    loaded = module;
    return module;
  });
  return loading;
}

export function TimeChart(props: ComponentProps<typeof TimeChartImpl>) {
  const [charts, setCharts] = useState<ChartsModule | null>(loaded);
  const [failed, setFailed] = useState<string | null>(null);
  useEffect(() => {
    if (charts) return undefined;
    let live = true;
    preloadCharts().then(
      (module) => live && setCharts(module),
      (error: unknown) => live && setFailed(error instanceof Error ? error.message : String(error)),
    );
    return () => {
      live = false;
    };
  }, [charts]);
  const height = props.height ?? 360;
  if (charts) return <charts.TimeChart {...props} />;
  if (failed) {
    return (
      <div className="chart-failed" style={{ height }} data-testid={props.testId}>
        The chart library did not load: {failed}
      </div>
    );
  }
  return <div className="chart-box" style={{ height }} data-testid={props.testId} aria-busy="true" />;
}
