// Who may be an agent: ids claimed by two processes (with both addresses), ids waiting
// for approval or rejected (Approve, Reject, Clear), per-agent tokens (Create, shown
// once; Revoke) and the accounts each agent may use.
//
// Agent rows come with the live stream (snapshot and "agent" events carry approval,
// duplicate and allowed_accounts); tokens are read from the API when the page opens
// and after each change made from it. A viewer (read-only token) sees all of it
// without the buttons (body[data-role="viewer"], style.css).
import { act, api, notice } from "./api.js";
import { $, badge, button, cells, el, syncRows } from "./dom.js";
import { ago, fmtTime } from "./format.js";
import { t, word } from "./i18n.js";

let agents = new Map(); // agent id -> row as the live stream sends it
let tokens = [];

export function handle(name, data) {
  if (name === "snapshot") {
    agents = new Map(data.agents.map((a) => [a.agent_id, a]));
  } else if (name === "agent") {
    agents.set(data.agent_id, data);
  } else {
    return;
  }
  renderAgents();
}

export async function load() {
  try {
    tokens = (await api("GET", "/api/manage/agent-tokens")).tokens || [];
  } catch (err) {
    if (err.status !== 401 && err.status !== 404) notice(t("access.error", { message: err.message }), true);
    return;
  }
  renderTokens();
}

export function clear() {
  agents.clear();
  tokens = [];
  for (const id of ["access-pending-body", "access-tokens-body", "access-allow-body",
    "access-duplicates-list", "access-agent-ids"]) $(id).replaceChildren();
  $("access-duplicates").hidden = true;
  hideCreated();
}

export function render() {
  renderAgents();
  renderTokens();
}

// Relative times age on the page; the hub sends nothing for that.
export function tick() {
  renderDuplicates();
}

// ---------------------------------------------------------------- agents

function sorted() {
  return [...agents.values()].sort((a, b) => a.agent_id.localeCompare(b.agent_id));
}

function renderAgents() {
  const list = sorted();
  renderDuplicates();
  const waiting = list.filter((a) => a.approval && a.approval !== "approved");
  syncRows($("access-pending-body"), waiting, (a) => a.agent_id, makePendingRow, updatePendingRow,
    "access-pending-empty");
  const limited = list.filter((a) => Array.isArray(a.allowed_accounts));
  syncRows($("access-allow-body"), limited, (a) => a.agent_id, makeAllowRow, updateAllowRow,
    "access-allow-empty");
  $("access-agent-ids").replaceChildren(...list.map((a) => el("option", { value: a.agent_id })));
}

function renderDuplicates() {
  const dups = sorted().filter((a) => a.duplicate);
  $("access-duplicates").hidden = dups.length === 0;
  $("access-duplicates-list").replaceChildren(...dups.map((a) => el("li", {}, t("access.duplicate", {
    id: a.agent_id, live: a.duplicate.live_address || "?", refused: a.duplicate.refused_address || "?",
    attempts: a.duplicate.attempts, last: ago(a.duplicate.last_at),
  }))));
}

function makePendingRow(agent) {
  const tr = el("tr");
  const c = cells(tr, ["agent", "approval", "address", "reported", "seen", "actions"]);
  const id = agent.agent_id;
  const decide = (action) => async () => {
    const row = await act(t(`access.act.${action}`, { id }), "POST",
      `/api/manage/agents/${encodeURIComponent(id)}/${action}`);
    if (row) { agents.set(row.agent_id, row); renderAgents(); }
  };
  tr.buttons_ = {
    approve: button("", decide("approve"), { className: "act-approve" }),
    reject: button("", decide("reject"), { className: "act-reject danger" }),
    clear: button("", decide("clear"), { className: "act-clear" }),
  };
  c.actions.append(tr.buttons_.approve, tr.buttons_.reject, tr.buttons_.clear);
  return tr;
}

function updatePendingRow(tr, a) {
  const c = tr.cells_;
  c.agent.textContent = a.agent_name && a.agent_name !== a.agent_id ? `${a.agent_name} (${a.agent_id})` : a.agent_id;
  badge(c.approval, a.approval, word("access.approval", a.approval));
  tr.dataset.approval = a.approval;
  c.address.textContent = [...new Set([a.peer_address, a.ip_address].filter(Boolean))].join(" / ") || "—";
  const tags = Object.entries(a.tags || {}).map(([k, v]) => `${k}=${v}`).join(", ");
  c.reported.textContent = [t("access.slots", { n: a.max_concurrent_uploads }), a.storage_type,
    a.bandwidth_mbps ? `${a.bandwidth_mbps} Mbps` : "", tags].filter(Boolean).join(", ");
  c.seen.textContent = a.session_id ? t("access.connected") : ago(a.last_heartbeat);
  const b = tr.buttons_;
  b.approve.textContent = t("access.approve");
  b.reject.textContent = t("access.reject");
  b.clear.textContent = t("access.clear");
  b.approve.hidden = a.approval === "approved";
  b.reject.hidden = a.approval === "rejected";
  b.clear.hidden = a.approval !== "rejected";
}

function makeAllowRow() {
  const tr = el("tr");
  cells(tr, ["agent", "accounts", "source"]);
  return tr;
}

function updateAllowRow(tr, a) {
  const c = tr.cells_;
  c.agent.textContent = a.agent_id;
  c.accounts.textContent = a.allowed_accounts.join(", ") || t("access.noAccount");
  c.source.textContent = t(a.accounts_from_config ? "access.fromConfig" : "access.fromApi");
}

async function setAccounts(accounts) {
  const agentId = $("allow-agent").value.trim();
  if (!agentId) return;
  const done = await act(t("access.act.accounts", { id: agentId }), "PUT",
    `/api/manage/agents/${encodeURIComponent(agentId)}/accounts`, { accounts });
  if (!done) return;
  const row = agents.get(agentId);
  if (row) { agents.set(agentId, { ...row, allowed_accounts: done.allowed_accounts }); renderAgents(); }
}

// ---------------------------------------------------------------- tokens

function renderTokens() {
  syncRows($("access-tokens-body"), tokens, (x) => x.token_id, makeTokenRow, updateTokenRow,
    "access-tokens-empty");
  if (!$("token-created").hidden) showCreated($("token-created").dataset.agent);
}

function makeTokenRow(token) {
  const tr = el("tr");
  const c = cells(tr, ["token", "agent", "state", "created", "expires", "used", "actions"]);
  const id = token.token_id;
  tr.revoke_ = button("", async () => {
    if (await act(t("access.act.revoke", { id }), "POST",
      `/api/manage/agent-tokens/${encodeURIComponent(id)}/revoke`) !== null) load();
  }, { className: "act-revoke danger" });
  c.actions.append(tr.revoke_);
  return tr;
}

function updateTokenRow(tr, x) {
  const c = tr.cells_;
  c.token.textContent = x.token_id;
  c.agent.textContent = x.agent_id;
  badge(c.state, x.state, word("access.tokenState", x.state));
  tr.dataset.state = x.state;
  c.created.textContent = fmtTime(x.created_at);
  c.expires.textContent = x.expires_at ? fmtTime(x.expires_at) : t("access.never");
  c.used.textContent = fmtTime(x.last_used_at);
  tr.revoke_.textContent = t("access.revoke");
  tr.revoke_.hidden = x.state !== "active";
}

async function createToken(event) {
  event.preventDefault();
  const agentId = $("token-agent").value.trim();
  const expires = $("token-expires").value.trim();
  const body = { agent_id: agentId };
  if (expires) body.expires = /^\d+(\.\d+)?$/.test(expires) ? Number(expires) : expires;
  const created = await act(t("access.act.create", { id: agentId }), "POST", "/api/manage/agent-tokens", body);
  if (!created) return;
  // Shown this once: the hub keeps only its hash.
  $("token-created-value").value = created.token;
  showCreated(created.agent_id);
  $("token-created-value").select();
  event.target.reset();
  load();
}

function showCreated(agentId) {
  const box = $("token-created");
  box.dataset.agent = agentId;
  $("token-created-text").textContent = t("access.createdOnce", { id: agentId });
  box.hidden = false;
}

function hideCreated() {
  $("token-created-value").value = "";
  $("token-created").hidden = true;
}

export function init() {
  $("token-form").addEventListener("submit", createToken);
  $("token-created-done").addEventListener("click", hideCreated);
  $("allow-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setAccounts($("allow-names").value.split(",").map((v) => v.trim()).filter(Boolean));
  });
  $("allow-all").addEventListener("click", () => setAccounts(null));
}
