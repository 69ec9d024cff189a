// Bilibili accounts: the list, and three ways to add one: a cookie string, biliup's
// cookies.json (read in the browser, sent as JSON), or a QR login that the hub runs
// against Bilibili's passport while this page shows the code and its live state.
import { act, api, notice } from "./api.js";
import { $, badge, button, cells, el, svg, syncRows } from "./dom.js";
import { fmtDuration, fmtTime } from "./format.js";
import { t, word } from "./i18n.js";

const POLL_MS = 1000; // the hub polls the passport at most once a second per login
let accounts = [];
let login = null; // the QR login on show: {login_id, url, modules, state, expiresAt, message, name}
let pollTimer = null;

export async function load() {
  try {
    accounts = (await api("GET", "/api/manage/accounts")).accounts;
  } catch (err) {
    if (err.status !== 401) notice(t("accounts.error", { message: err.message }), true);
    return;
  }
  render();
}

export function clear() {
  accounts = [];
  stopPolling();
  login = null;
  $("accounts-body").replaceChildren();
  $("qr-panel").hidden = true;
}

export function render() {
  syncRows($("accounts-body"), accounts, (a) => a.account_id, makeRow, updateRow, "accounts-empty");
  $("account-names").replaceChildren(...accounts.map((a) => el("option", { value: a.name })));
  renderQr();
}

// ---------------------------------------------------------------- the table

function makeRow(account) {
  const tr = el("tr");
  const c = cells(tr, ["name", "user", "valid", "checked", "keys", "actions"]);
  const id = account.account_id;
  tr.check_ = button("", async () => {
    if (await act(t("accounts.act.check", { name: account.name }), "POST", `/api/manage/accounts/${id}/check`)) await load();
  }, { className: "act-check" });
  tr.delete_ = button("", async () => {
    if (await act(t("accounts.act.delete", { name: account.name }), "DELETE", `/api/manage/accounts/${id}`)) await load();
  }, { className: "act-delete danger" });
  c.actions.append(tr.check_, tr.delete_);
  return tr;
}

function updateRow(tr, a) {
  const c = tr.cells_;
  c.name.textContent = a.name;
  c.user.textContent = [a.uname, a.mid ? `mid ${a.mid}` : ""].filter(Boolean).join(" · ") || "—";
  const validity = a.valid === true ? "valid" : a.valid === false ? "invalid" : "unchecked";
  badge(c.valid, validity, word("accounts.validity", validity));
  tr.dataset.valid = validity;
  c.checked.textContent = fmtTime(a.checked_at);
  c.keys.textContent = [t("accounts.cookies"), a.has_access_key ? t("accounts.accessKey") : "",
    a.has_refresh_token ? t("accounts.refreshToken") : ""].filter(Boolean).join(", ");
  tr.check_.textContent = t("accounts.check");
  tr.delete_.textContent = t("accounts.delete");
}

// ---------------------------------------------------------------- adding

async function add(body) {
  try {
    await api("POST", "/api/manage/accounts", body);
  } catch (err) {
    if (err.status !== 401) $("account-error").textContent = err.message;
    return false;
  }
  $("account-error").textContent = "";
  notice(t("accounts.added", { name: body.name }));
  await load();
  return true;
}

async function addCookies(event) {
  event.preventDefault();
  const ok = await add({ name: $("acc-cookie-name").value.trim(), cookies: $("acc-cookie-text").value.trim() });
  if (ok) event.target.reset();
}

async function addJson(event) {
  event.preventDefault();
  const file = $("acc-json-file").files[0];
  if (!file) return;
  let parsed;
  try {
    parsed = JSON.parse(await file.text());
  } catch {
    $("account-error").textContent = t("accounts.notJson", { file: file.name });
    return;
  }
  const ok = await add({ name: $("acc-json-name").value.trim(), cookies_json: parsed });
  if (ok) event.target.reset();
}

function showTab(name) {
  for (const tab of ["cookies", "json", "qr"]) {
    $(`acc-pane-${tab}`).hidden = tab !== name;
    $(`acc-tab-${tab}`).setAttribute("aria-selected", String(tab === name));
  }
  $("account-error").textContent = "";
}

// ---------------------------------------------------------------- QR login

async function startQr(event) {
  event.preventDefault();
  stopPolling();
  const name = $("acc-qr-name").value.trim();
  let started;
  try {
    started = await api("POST", "/api/manage/accounts/qr-login", name ? { name } : undefined);
  } catch (err) {
    if (err.status !== 401) $("account-error").textContent = err.message;
    return;
  }
  $("account-error").textContent = "";
  login = { ...started, state: "waiting", expiresAt: Date.now() + started.expires_in * 1000 };
  renderQr();
  pollTimer = setInterval(pollQr, POLL_MS);
}

async function pollQr() {
  if (!login) return stopPolling();
  const id = login.login_id;
  let status;
  try {
    status = await api("GET", `/api/manage/accounts/qr-login/${encodeURIComponent(id)}`);
  } catch (err) {
    if (err.status === 401) return stopPolling();
    status = { state: login.state, message: err.message };
  }
  if (!login || login.login_id !== id) return;
  Object.assign(login, status);
  if (status.expires_in !== undefined) login.expiresAt = Date.now() + status.expires_in * 1000;
  if (!["waiting", "scanned"].includes(login.state)) {
    stopPolling();
    if (login.state === "done") {
      notice(t("accounts.added", { name: login.name }));
      await load();
    }
  }
  renderQr();
}

function stopPolling() {
  if (pollTimer !== null) clearInterval(pollTimer);
  pollTimer = null;
}

function renderQr() {
  const panel = $("qr-panel");
  panel.hidden = !login;
  if (!login) return;
  panel.dataset.state = login.state;
  const open = login.state === "waiting" || login.state === "scanned";
  if ($("qr-code").dataset.loginId !== login.login_id) {
    $("qr-code").replaceChildren(drawQr(login.modules || []));
    $("qr-code").dataset.loginId = login.login_id;
  }
  $("qr-code").hidden = !open;
  $("qr-url").textContent = login.url;
  $("qr-url-line").hidden = !open;
  const text = word("qr.state", login.state);
  $("qr-state").textContent = login.state === "done" ? t("qr.state.doneAs", { name: login.name })
    : login.message ? `${text} (${login.message})` : text;
  $("qr-state").dataset.state = login.state;
  $("qr-expires").textContent = open
    ? t("qr.expiresIn", { d: fmtDuration(Math.max(0, (login.expiresAt - Date.now()) / 1000)) }) : "";
}

// The hub sends the code's modules (rows of "1" dark, "0" light); drawn with a quiet zone.
function drawQr(rows) {
  const size = rows.length;
  const quiet = 4;
  const code = svg("svg", { viewBox: `0 0 ${size + 2 * quiet} ${size + 2 * quiet}`, class: "qr",
    role: "img", "aria-label": t("qr.alt"), "shape-rendering": "crispEdges" },
  svg("rect", { width: size + 2 * quiet, height: size + 2 * quiet, class: "qr-light" }));
  rows.forEach((row, y) => {
    for (let x = 0; x < row.length; x += 1) {
      if (row[x] === "1") code.append(svg("rect", { x: x + quiet, y: y + quiet, width: 1, height: 1, class: "qr-dark" }));
    }
  });
  return code;
}

export function tick() {
  if (login && (login.state === "waiting" || login.state === "scanned")) renderQr();
}

export function init() {
  for (const tab of ["cookies", "json", "qr"]) $(`acc-tab-${tab}`).addEventListener("click", () => showTab(tab));
  $("acc-cookie-form").addEventListener("submit", addCookies);
  $("acc-json-form").addEventListener("submit", addJson);
  $("acc-qr-form").addEventListener("submit", startQr);
  showTab("cookies");
}
