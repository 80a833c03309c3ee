// The app: the login page without a session; with one, the shell (header, navigation, live stream) and the page.
import { useQueryClient } from "@tanstack/react-query";
import { Suspense, useCallback, useEffect, useState, type ReactNode } from "react";
import { clearSession, loadSession, onUnauthorized, saveSession, type Session } from "./api/client";
import { LiveProvider } from "./api/live";
import { useControl, useMe } from "./api/queries";
import { LiveIndicator } from "./components/LiveIndicator";
import { Badge, Loading, TradingStateBadge } from "./components/ui";
import { PAGES, useHashRoute, type Page } from "./hooks";
import { Controls } from "./pages/Controls";
import { Ledger } from "./pages/Ledger";
import { Login } from "./pages/Login";
import { Overview } from "./pages/Overview";
import { Quality } from "./pages/Quality";
import { Trades } from "./pages/Trades";
import { RoleContext } from "./role";

// the pages with charts load lightweight-charts on first visit (a separate chunk): the login and the tables stay light
import { Chart } from "./pages/Chart";
import { Models } from "./pages/Models";
import { Performance } from "./pages/Performance";

const LABELS: Record<Page, string> = {
  overview: "Overview",
  trades: "Trades",
  chart: "Chart",
  performance: "Performance",
  models: "Models",
  quality: "Data quality",
  controls: "Controls",
  ledger: "Ledger",
};

function PageView({ page }: { page: Page }): ReactNode {
  switch (page) {
    case "overview":
      return <Overview />;
    case "trades":
      return <Trades />;
    case "chart":
      return <Chart />;
    case "performance":
      return <Performance />;
    case "models":
      return <Models />;
    case "quality":
      return <Quality />;
    case "controls":
      return <Controls />;
    case "ledger":
      return <Ledger />;
  }
}

function Shell({ session, onLogout, onRole }: { session: Session; onLogout: () => void; onRole: (role: Session["role"]) => void }) {
  const page = useHashRoute();
  const control = useControl();
  const me = useMe();
  const role = me.data?.role ?? session.role;

  useEffect(() => {
    if (me.data && me.data.role !== session.role) onRole(me.data.role);
  }, [me.data, session.role, onRole]);

  useEffect(() => {
    document.title = `CTA · ${LABELS[page]}`;
  }, [page]);

  return (
    <RoleContext.Provider value={role}>
      <div className="app">
        <header className="topbar">
          <div className="topbar-row">
            <a className="brand" href="#/overview" aria-label="CTA home">
              <span className="brand-mark" aria-hidden="true" />
              CTA
            </a>
            <div className="topbar-status">
              <span className="status-item">
                <span className="muted small">Trading</span>
                <TradingStateBadge state={control.data?.state} testId="trading-state" />
              </span>
              <LiveIndicator />
              <Badge tone={role === "operator" ? "warn" : "info"} testId="role-badge" title="Your token's role">
                {role}
              </Badge>
              <button type="button" className="btn btn-ghost" onClick={onLogout} data-testid="logout-button">
                Log out
              </button>
            </div>
          </div>
          <nav className="nav" aria-label="Pages">
            {PAGES.map((name) => (
              <a
                key={name}
                href={`#/${name}`}
                className={name === page ? "active" : undefined}
                aria-current={name === page ? "page" : undefined}
                data-testid={`nav-${name}`}
              >
                {LABELS[name]}
              </a>
            ))}
          </nav>
        </header>
        <main className="content">
          <Suspense fallback={<Loading what="Loading the page" />}>
            <PageView page={page} />
          </Suspense>
        </main>
        <footer className="footer muted small">
          CTA dashboard · API v1 · times in UTC ·{" "}
          <a href="https://www.tradingview.com/" target="_blank" rel="noopener noreferrer">
            Charts by TradingView Lightweight Charts™
          </a>
        </footer>
      </div>
    </RoleContext.Provider>
  );
}

export function App() {
  const queryClient = useQueryClient();
  const [session, setSession] = useState<Session | null>(() => loadSession());
  const [notice, setNotice] = useState<string | null>(null);

  useEffect(
    () =>
      onUnauthorized((message) => {
        setSession(null);
        setNotice(message);
        queryClient.clear();
      }),
    [queryClient],
  );

  const logout = useCallback(() => {
    clearSession();
    queryClient.clear();
    setNotice("Logged out.");
    setSession(null);
  }, [queryClient]);

  const login = useCallback(
    (next: Session) => {
      queryClient.clear();
      setNotice(null);
      setSession(next);
    },
    [queryClient],
  );

  const updateRole = useCallback((role: Session["role"]) => {
    setSession((current) => {
      if (!current) return current;
      const next = { ...current, role };
      saveSession(next);
      return next;
    });
  }, []);

  if (!session) return <Login onLogin={login} notice={notice} />;
  return (
    <LiveProvider token={session.token}>
      <Shell session={session} onLogout={logout} onRole={updateRole} />
    </LiveProvider>
  );
}
