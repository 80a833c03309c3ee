import "@testing-library/jest-dom/vitest";
import { cleanup } from "@testing-library/react";
import { afterEach } from "vitest";

// jsdom has no fetch of its own: Node's Request refuses relative URLs ("/api/v1/me"), which a browser resolves
// against the page. Resolve them against jsdom's location, as the browser would.
const NodeRequest = globalThis.Request;
class PageRequest extends NodeRequest {
  constructor(input: RequestInfo | URL, init?: RequestInit) {
    super(typeof input === "string" && input.startsWith("/") ? new URL(input, window.location.href) : input, init);
  }
}
globalThis.Request = PageRequest as typeof Request;

afterEach(() => {
  cleanup();
  sessionStorage.clear();
  window.location.hash = "";
});
