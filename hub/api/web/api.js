// The admin API: the token, one call, and the notice line that reports actions.
//
// The admin token lives in this tab's sessionStorage and goes only into an
// Authorization header (never a URL, where it would end up in logs and history).
import { $ } from "./dom.js";
import { t } from "./i18n.js";

const TOKEN_KEY = "bupmesh.adminToken";
let unauthorized = () => {};

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

// What to do when the hub refuses the token (main.js logs out).
export function onUnauthorized(handler) {
  unauthorized = handler;
}

export function refused() {
  unauthorized(t("login.refused"));
}

export async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${token()}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, cache: "no-store",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let payload = null;
  try { payload = await response.json(); } catch { /* not JSON: use the status */ }
  if (response.status === 401) {
    refused();
    throw new ApiError(401, "unauthorized");
  }
  if (!response.ok || !payload || payload.code !== 0) {
    throw new ApiError(response.status, payload?.message || `HTTP ${response.status}`);
  }
  return payload.data;
}

export function notice(text, isError = false) {
  const node = $("notice");
  node.textContent = text;
  node.classList.toggle("error", isError);
}

// Run one admin action and say how it went in the notice line; null when it failed.
export async function act(label, method, path, body) {
  try {
    const data = await api(method, path, body);
    notice(t("notice.done", { label }));
    return data;
  } catch (err) {
    if (err.status !== 401) notice(t("notice.failed", { label, message: err.message }), true);
    return null;
  }
}
