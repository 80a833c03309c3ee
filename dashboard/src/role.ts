// The session's role, for pages that offer changes (operator) or show them read-only (viewer).
import { createContext, useContext } from "react";
import type { Role } from "./api/client";

export const RoleContext = createContext<Role>("viewer");

export function useRole(): Role {
  return useContext(RoleContext);
}

export function useCanOperate(): boolean {
  return useRole() === "operator";
}
