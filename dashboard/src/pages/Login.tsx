// The login page: a token, checked with GET /api/v1/me before it is kept (sessionStorage, key cta.token).
import { useState, type FormEvent } from "react";
import { ApiError, checkToken, saveSession, type Session } from "../api/client";

export function Login({ onLogin, notice }: { onLogin: (session: Session) => void; notice?: string | null }) {
  const [token, setToken] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(event: FormEvent) {
    event.preventDefault();
    const value = token.trim();
    if (!value) {
      setError("Enter the viewer or operator token.");
      return;
    }
    setBusy(true);
    setError(null);
    try {
      const me = await checkToken(value);
      const session: Session = { token: value, role: me.role };
      saveSession(session);
      onLogin(session);
    } catch (err) {
      if (err instanceof ApiError) {
        setError(err.status === 401 ? "That token was refused (401): check it and try again." : `${err.message} (HTTP ${err.status})`);
      } else {
        setError(`Cannot reach the server: ${err instanceof Error ? err.message : String(err)}`);
      }
    } finally {
      setBusy(false);
    }
  }

  const message = error ?? notice ?? null;
  return (
    <div className="login">
      <form className="login-card" onSubmit={submit} noValidate>
        <div className="brand brand-large">
          <span className="brand-mark" aria-hidden="true" />
          CTA
        </div>
        <p className="muted">Trading dashboard. Sign in with the viewer or operator API token.</p>
        <label className="field">
          <span>API token</span>
          <input
            type="password"
            autoComplete="current-password"
            autoFocus
            value={token}
            onChange={(event) => setToken(event.target.value)}
            data-testid="token-input"
            placeholder="Bearer token"
            spellCheck={false}
          />
        </label>
        <button type="submit" className="btn btn-primary btn-block" disabled={busy} data-testid="login-button">
          {busy ? "Checking…" : "Log in"}
        </button>
        <p className={`login-error ${message ? "" : "hidden"}`} role="alert" data-testid="login-error">
          {message ?? ""}
        </p>
        <p className="muted small">The token is kept in this tab only (sessionStorage) and sent as a Bearer header.</p>
      </form>
    </div>
  );
}
