// The API client (openapi-fetch over the generated `paths`), the session (token + role in sessionStorage)
// and the 401 handling: any 401 on a request made with the session's token logs the user out.
import createClient, { type Middleware } from "openapi-fetch";
import type { components, paths } from "./schema";

export type Schemas = components["schemas"];
export type Role = Schemas["MeOut"]["role"];
export type ErrorOut = Schemas["ErrorOut"];

export const TOKEN_KEY = "cta.token";
export const ROLE_KEY = "cta.role";

export interface Session {
  token: string;
  role: Role;
}

function storage(): Storage | null {
  try {
    return globalThis.sessionStorage ?? null;
  } catch {
    return null; // storage blocked: the session lives only in memory
  }
}

let memoryToken: string | null = null;

export function getToken(): string | null {
  return storage()?.getItem(TOKEN_KEY) ?? memoryToken;
}

export function loadSession(): Session | null {
  const token = getToken();
  if (!token) return null;
  const role = storage()?.getItem(ROLE_KEY);
  return { token, role: role === "operator" ? "operator" : "viewer" };
}

export function saveSession(session: Session): void {
  memoryToken = session.token;
  const store = storage();
  store?.setItem(TOKEN_KEY, session.token);
  store?.setItem(ROLE_KEY, session.role);
}

export function clearSession(): void {
  memoryToken = null;
  const store = storage();
  store?.removeItem(TOKEN_KEY);
  store?.removeItem(ROLE_KEY);
}

// ----- 401: log out ---------------------------------------------------------------------------------------------

type UnauthorizedListener = (message: string) => void;
const unauthorizedListeners = new Set<UnauthorizedListener>();

export function onUnauthorized(listener: UnauthorizedListener): () => void {
  unauthorizedListeners.add(listener);
  return () => unauthorizedListeners.delete(listener);
}

/** Called on a 401 for the session's token: forget it and tell the app (back to the login page). */
export function signalUnauthorized(message = "Your session ended: the token was refused (401). Log in again."): void {
  if (!getToken()) return;
  clearSession();
  for (const listener of [...unauthorizedListeners]) listener(message);
}

// ----- errors ---------------------------------------------------------------------------------------------------

/** An API error: the HTTP status and the server's `{error, field}`. */
export class ApiError extends Error {
  readonly status: number;
  readonly field: string | null;

  constructor(status: number, message: string, field: string | null = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.field = field;
  }
}

function isErrorOut(value: unknown): value is ErrorOut {
  return typeof value === "object" && value !== null && typeof (value as { error?: unknown }).error === "string";
}

/** Turn an openapi-fetch result into its data, or throw ApiError with the server's message and field. */
export function unwrap<T>(result: { data?: T; error?: unknown; response: Response }): T {
  const { data, error, response } = result;
  if (response.ok && data !== undefined) return data;
  if (isErrorOut(error)) throw new ApiError(response.status, error.error, error.field ?? null);
  const text = typeof error === "string" && error ? error : response.statusText || "request failed";
  throw new ApiError(response.status, `${response.status}: ${text}`);
}

export function errorMessage(error: unknown): string {
  if (error instanceof ApiError) return error.message;
  if (error instanceof Error) return error.message;
  return String(error);
}

// ----- the client -----------------------------------------------------------------------------------------------

const authMiddleware: Middleware = {
  onRequest({ request }) {
    const token = getToken();
    if (token && !request.headers.has("Authorization")) {
      request.headers.set("Authorization", `Bearer ${token}`);
    }
    return request;
  },
  onResponse({ request, response }) {
    const token = getToken();
    if (response.status === 401 && token && request.headers.get("Authorization") === `Bearer ${token}`) {
      signalUnauthorized();
    }
    return undefined;
  },
};

/** Same origin: the backend serves the app and the API. `fetch` is looked up at call time (tests replace it). */
export const api = createClient<paths>({
  baseUrl: "",
  fetch: (input: Request) => globalThis.fetch(input),
});
api.use(authMiddleware);

/** Check a token: GET /api/v1/me with it (before it is stored). */
export async function checkToken(token: string): Promise<Schemas["MeOut"]> {
  const result = await api.GET("/api/v1/me", { headers: { Authorization: `Bearer ${token}` } });
  if (result.response.status === 401) throw new ApiError(401, "That token was refused.");
  return unwrap(result);
}
