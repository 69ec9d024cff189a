// bupmesh hub web UI: the "Agent access" section (loaded after app.js, whose helpers
// it uses: api, act, el, cells, syncRows, badge, button, ago, fmtTime, notice, state).
"use strict";

// Who may be an agent: ids claimed by two processes, ids waiting for approval (or
// rejected), per-agent tokens and account allowlists. Agent rows come with the live
// view (approval, duplicate, allowed_accounts); tokens are read from the API. A viewer
// (read-only token) sees all of it without the buttons (body[data-role="viewer"]).

async function startAccess() {
  try {
    const who = await api("GET", "/api/manage/whoami");
    document.body.dataset.role = who.role;
    $("role").textContent = who.role === "viewer" ? "read-only" : "";
    $("role").hidden = who.role !== "viewer";
  } catch { /* 401 logs out; an older hub has no whoami: act as admin */ }
  loadTokens();
}

function stopAccess() {
  delete document.body.dataset.role;
  $("role").hidden = true;
  for (const id of ["access-pending-body", "access-tokens-body", "access-accounts-body",
                    "access-duplicates-list"]) $(id).replaceChildren();
  $("access-duplicates").hidden = true;
  $("token-created").hidden = true;
  $("token-created-value").value = "";
}

function renderAccess() {
  const agents = [...state.agents.values()].sort((a, b) => a.agent_id.localeCompare(b.agent_id));
  const dups = agents.filter((a) => a.duplicate);
  $("access-duplicates").hidden = dups.length === 0;
  $("access-duplicates-list").replaceChildren(...dups.map((a) => el("li", {},
    `${a.agent_id}: connected from ${a.duplicate.live_address || "?"}, a second process ` +
    `refused from ${a.duplicate.refused_address || "?"} (${a.duplicate.attempts} tries, ` +
    `last ${ago(a.duplicate.last_at)})`)));
  const waiting = agents.filter((a) => a.approval && a.approval !== "approved");
  syncRows($("access-pending-body"), waiting, (a) => a.agent_id, makePendingRow, updatePendingRow,
    "access-pending-empty");
  const limited = agents.filter((a) => Array.isArray(a.allowed_accounts));
  syncRows($("access-accounts-body"), limited, (a) => a.agent_id, makeAccountsRow, updateAccountsRow,
    "access-accounts-empty");
  $("access-agent-ids").replaceChildren(...agents.map((a) => el("option", { value: a.agent_id })));
}

function makePendingRow(agent) {
  const tr = el("tr");
  const c = cells(tr, ["agent", "approval", "address", "reported", "seen", "actions"]);
  const id = agent.agent_id;
  const decide = (action) => async () => {
    const row = await act(`${action} ${id}`, "POST",
      `/api/manage/agents/${encodeURIComponent(id)}/${action}`);
    if (row) { state.agents.set(row.agent_id, row); renderAgents(); renderAccess(); }
  };
  tr.buttons_ = {
    approve: button("Approve", decide("approve"), { className: "act-approve" }),
    reject: button("Reject", decide("reject"), { className: "act-reject danger" }),
    clear: button("Clear", decide("clear"), { className: "act-clear" }),
  };
  c.actions.append(tr.buttons_.approve, tr.buttons_.reject, tr.buttons_.clear);
  return tr;
}

function updatePendingRow(tr, a) {
  const c = tr.cells_;
  c.agent.textContent = a.agent_name && a.agent_name !== a.agent_id ? `${a.agent_name} (${a.agent_id})` : a.agent_id;
  badge(c.approval, a.approval);
  c.address.textContent = [a.peer_address, a.ip_address].filter(Boolean)
    .filter((v, i, all) => all.indexOf(v) === i).join(" / ") || "—";
  const tags = Object.entries(a.tags || {}).map(([k, v]) => `${k}=${v}`).join(", ");
  c.reported.textContent = [`${a.max_concurrent_uploads} slots`, a.storage_type,
    a.bandwidth_mbps ? `${a.bandwidth_mbps} Mbps` : "", tags].filter(Boolean).join(", ");
  c.seen.textContent = a.session_id ? "connected" : ago(a.last_heartbeat);
  tr.buttons_.approve.hidden = a.approval === "approved";
  tr.buttons_.reject.hidden = a.approval === "rejected";
  tr.buttons_.clear.hidden = a.approval !== "rejected";
}

function makeAccountsRow() {
  const tr = el("tr");
  cells(tr, ["agent", "accounts", "source"]);
  return tr;
}

function updateAccountsRow(tr, a) {
  const c = tr.cells_;
  c.agent.textContent = a.agent_id;
  c.accounts.textContent = a.allowed_accounts.join(", ") || "no account";
  c.source.textContent = a.accounts_from_config ? "hub config" : "API";
}

async function loadTokens() {
  let tokens = [];
  try {
    tokens = (await api("GET", "/api/manage/agent-tokens")).tokens || [];
  } catch (err) {
    if (err.status !== 401 && err.status !== 404) notice(`agent tokens: ${err.message}`, true);
  }
  syncRows($("access-tokens-body"), tokens, (t) => t.token_id, makeTokenRow, updateTokenRow,
    "access-tokens-empty");
}

function makeTokenRow(token) {
  const tr = el("tr");
  const c = cells(tr, ["token", "agent", "state", "created", "expires", "used", "actions"]);
  const id = token.token_id;
  tr.revoke_ = button("Revoke", async () => {
    if (await act(`revoke token ${id}`, "POST",
      `/api/manage/agent-tokens/${encodeURIComponent(id)}/revoke`) !== null) loadTokens();
  }, { className: "act-revoke danger" });
  c.actions.append(tr.revoke_);
  return tr;
}

function updateTokenRow(tr, t) {
  const c = tr.cells_;
  c.token.textContent = t.token_id;
  c.agent.textContent = t.agent_id;
  badge(c.state, t.state);
  c.created.textContent = fmtTime(t.created_at);
  c.expires.textContent = t.expires_at ? fmtTime(t.expires_at) : "never";
  c.used.textContent = t.last_used_at ? fmtTime(t.last_used_at) : "—";
  tr.revoke_.hidden = t.state !== "active";
}

async function createToken(event) {
  event.preventDefault();
  const agentId = $("token-agent").value.trim();
  const expires = $("token-expires").value.trim();
  const body = { agent_id: agentId };
  if (expires) body.expires = /^\d+(\.\d+)?$/.test(expires) ? Number(expires) : expires;
  const created = await act(`token for ${agentId}`, "POST", "/api/manage/agent-tokens", body);
  if (!created) return;
  $("token-created-agent").textContent = created.agent_id;
  $("token-created-value").value = created.token;
  $("token-created").hidden = false;
  $("token-created-value").select();
  $("token-form").reset();
  loadTokens();
}

async function setAccounts(accounts) {
  const agentId = $("accounts-agent").value.trim();
  if (!agentId) return;
  const done = await act(`accounts of ${agentId}`, "PUT",
    `/api/manage/agents/${encodeURIComponent(agentId)}/accounts`, { accounts });
  if (done) {
    const row = state.agents.get(agentId);
    if (row) { state.agents.set(agentId, { ...row, allowed_accounts: done.allowed_accounts }); renderAccess(); }
  }
}

function bindAccess() {
  $("token-form").addEventListener("submit", createToken);
  $("token-created-done").addEventListener("click", () => {
    $("token-created-value").value = "";
    $("token-created").hidden = true;
  });
  $("accounts-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setAccounts($("accounts-names").value.split(",").map((v) => v.trim()).filter(Boolean));
  });
  $("accounts-all").addEventListener("click", () => setAccounts(null));
}
