// The stream's state in the header: Live / Connecting… / Stale — last update 12 s ago. It re-renders every second
// so it never freezes silently: the seconds since the last event are always counting.
import { useLive } from "../api/live";
import type { LiveSnapshot } from "../api/stream";
import { fmtDuration } from "../format";
import { useNow } from "../hooks";

export function liveText(snapshot: LiveSnapshot, now: number): string {
  const since = snapshot.lastEventAt === null ? null : Math.max(0, (now - snapshot.lastEventAt) / 1000);
  switch (snapshot.state) {
    case "live":
      return since === null ? "Live" : `Live · ${fmtDuration(since)}`;
    case "connecting":
      return "Connecting…";
    case "stale":
      return since === null ? "Stale — no update yet" : `Stale — last update ${fmtDuration(since)} ago`;
  }
}

export function LiveIndicatorView({ snapshot, now }: { snapshot: LiveSnapshot; now: number }) {
  const text = liveText(snapshot, now);
  const title =
    snapshot.state === "stale"
      ? `${snapshot.problem ?? "not connected"}${snapshot.retryInMs !== null ? ` · retrying in ${Math.round(snapshot.retryInMs / 1000)} s` : ""} · polling every 5 s meanwhile`
      : snapshot.state === "live"
        ? "Receiving server-sent events (heartbeat every 10 s)"
        : "Opening the event stream";
  return (
    <span className={`live live-${snapshot.state}`} data-testid="live-indicator" data-state={snapshot.state} title={title} role="status">
      <span className="live-dot" aria-hidden="true" />
      {text}
    </span>
  );
}

export function LiveIndicator() {
  const snapshot = useLive();
  const now = useNow(1000);
  return <LiveIndicatorView snapshot={snapshot} now={now} />;
}
