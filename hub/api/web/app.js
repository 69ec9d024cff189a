// bupmesh hub web UI. Plain script, no build step, no third-party code.
//
// Login: the admin token lives in this tab's sessionStorage and goes only into an
// Authorization header (never a URL, where it would end up in logs and history).
// Live view: GET /api/manage/events is Server-Sent Events; EventSource cannot send a
// header, so the stream is read with fetch() and a ReadableStream reader. The hub sends
// a snapshot, then the current row of whatever changed; this page only renders.
// History: the live view carries only unfinished and recent tasks; older ones load on
// demand from GET /api/manage/tasks, a page at a time (its next_cursor), with filters.
// Safety: every value is written with textContent, never as HTML.
"use strict";

const TOKEN_KEY = "bupmesh.adminToken";
const MAX_RETRY_MS = 15000;
const ACTIVE = new Set(["pending", "assigned", "uploading"]);
const MAX_ENDED_TASKS = 200; // as hub/api/sse.py SNAPSHOT_ENDED_TASKS
const HISTORY_PAGE = 100;

const state = {
  agents: new Map(),
  tasks: new Map(),
  ips: [],
  history: [], // older tasks loaded on demand, newest first
  historyQuery: null, // the filters of the pages loaded, and the cursor of the next
  historyCursor: null,
  skewMs: 0, // hub clock minus ours, so "12 s ago" is right even if the clocks differ
  abort: null,
};

// ---------------------------------------------------------------- small helpers

const $ = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

function fmtBytes(n) {
  if (n == null || !isFinite(n)) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

function fmtSpeed(bps) {
  return bps > 0 && isFinite(bps) ? `${fmtBytes(bps)}/s` : "—";
}

function fmtDuration(s) {
  if (s == null || !isFinite(s) || s < 0) return "—";
  s = Math.round(s);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} m ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} m`;
}

function fmtTime(t) {
  return t ? new Date(t * 1000).toLocaleString() : "—";
}

function ago(t) {
  if (!t) return "never";
  const seconds = (Date.now() + state.skewMs) / 1000 - t;
  return `${fmtDuration(Math.max(0, seconds))} ago`;
}

function basename(path) {
  return (path || "").split(/[\\/]/).pop() || path || "";
}

function notice(text, isError = false) {
  const node = $("notice");
  node.textContent = text;
  node.classList.toggle("error", isError);
}

function setLive(kind, text) {
  const node = $("live");
  node.dataset.state = kind;
  node.textContent = text;
}

// ---------------------------------------------------------------- admin API

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${token()}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, cache: "no-store",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let payload = null;
  try { payload = await response.json(); } catch { /* not JSON: use the status */ }
  if (response.status === 401) {
    logout("The hub refused the admin token; log in again.");
    throw new ApiError(401, "unauthorized");
  }
  if (!response.ok || !payload || payload.code !== 0) {
    throw new ApiError(response.status, payload?.message || `HTTP ${response.status}`);
  }
  return payload.data;
}

async function act(label, method, path, body) {
  try {
    const data = await api(method, path, body);
    notice(`${label}: done`);
    return data;
  } catch (err) {
    if (err.status !== 401) notice(`${label}: ${err.message}`, true);
    return null;
  }
}

// ---------------------------------------------------------------- live stream

async function follow(signal) {
  let failures = 0;
  while (!signal.aborted && token()) {
    setLive("connecting", failures ? "reconnecting…" : "connecting…");
    try {
      const response = await fetch("/api/manage/events", {
        headers: { Authorization: `Bearer ${token()}`, Accept: "text/event-stream" },
        cache: "no-store", signal,
      });
      if (response.status === 401) {
        logout("The hub refused the admin token; log in again.");
        return;
      }
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      await readEvents(response.body, (name, data) => { failures = 0; onEvent(name, data); });
    } catch (err) {
      if (signal.aborted) return;
    }
    failures += 1;
    if (state.live !== "stopped") setLive("off", "disconnected");
    await sleep(Math.min(MAX_RETRY_MS, 500 * 2 ** Math.min(failures, 5)), signal);
  }
}

// Parse text/event-stream: events are separated by a blank line; "event:" names one,
// "data:" lines carry its JSON; lines starting with ":" are keep-alive comments.
async function readEvents(body, handle) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let gap;
    while ((gap = /\r?\n\r?\n/.exec(buffer)) !== null) {
      const block = buffer.slice(0, gap.index);
      buffer = buffer.slice(gap.index + gap[0].length);
      let name = "message";
      const data = [];
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") name = text;
        else if (field === "data") data.push(text);
      }
      if (data.length) handle(name, JSON.parse(data.join("\n")));
    }
  }
}

function onEvent(name, data) {
  if (name === "snapshot") {
    state.agents = new Map(data.agents.map((a) => [a.agent_id, a]));
    state.tasks = new Map(data.tasks.map((t) => [t.task_id, t]));
    state.ips = data.ips;
    state.skewMs = data.server_time * 1000 - Date.now();
    state.live = "live";
    setLive("live", "live");
    renderAgents(); renderTasks(); renderIps();
  } else if (name === "agent") {
    state.agents.set(data.agent_id, data);
    renderAgents();
  } else if (name === "task") {
    state.tasks.set(data.task_id, data);
    renderTasks();
  } else if (name === "ips") {
    state.ips = data.ips;
    state.skewMs = data.server_time * 1000 - Date.now();
    renderIps();
  } else if (name === "shutdown") {
    state.live = "stopped";
    setLive("off", "hub stopped");
  }
}

// ---------------------------------------------------------------- tables

// Keep one <tr> per key and update its cells in place: a progress bar stays the same
// element as it moves, and a button is never swapped out from under a click.
function syncRows(tbody, items, keyOf, make, update, emptyId) {
  const rows = new Map([...tbody.children].map((tr) => [tr.dataset.key, tr]));
  items.forEach((item, index) => {
    const key = String(keyOf(item));
    let tr = rows.get(key);
    if (!tr) {
      tr = make(item);
      tr.dataset.key = key;
    }
    rows.delete(key);
    update(tr, item);
    if (tbody.children[index] !== tr) tbody.insertBefore(tr, tbody.children[index] || null);
  });
  for (const stale of rows.values()) stale.remove();
  $(emptyId).hidden = items.length > 0;
}

function cells(tr, names) {
  tr.cells_ = {};
  for (const name of names) {
    const td = el("td", { className: `col-${name}` });
    tr.cells_[name] = td;
    tr.append(td);
  }
  return tr.cells_;
}

function badge(td, text) {
  td.replaceChildren(el("span", { className: `badge badge-${text}` }, text));
}

function button(label, onClick, extra = {}) {
  return el("button", { type: "button", textContent: label, onclick: onClick, ...extra });
}

function renderAgents() {
  const agents = [...state.agents.values()].sort((a, b) => a.agent_id.localeCompare(b.agent_id));
  const up = agents.filter((a) => a.status === "online" || a.status === "busy").length;
  $("agents-summary").textContent = `${up} of ${agents.length} online`;
  syncRows($("agents-body"), agents, (a) => a.agent_id, makeAgentRow, updateAgentRow, "agents-empty");
}

function makeAgentRow(agent) {
  const tr = el("tr");
  const c = cells(tr, ["name", "status", "ip", "tags", "tasks", "success", "memory", "heartbeat", "actions"]);
  const id = agent.agent_id;
  const path = (action) => `/api/manage/agents/${encodeURIComponent(id)}/${action}`;
  const run = (action) => async () => {
    const row = await act(`${action} ${id}`, "POST", path(action));
    if (row) { state.agents.set(row.agent_id, row); renderAgents(); }
  };
  tr.buttons_ = {
    drain: button("Drain", run("drain"), { className: "act-drain" }),
    disable: button("Disable", run("disable"), { className: "act-disable danger" }),
    enable: button("Enable", run("enable"), { className: "act-enable" }),
  };
  c.actions.append(tr.buttons_.drain, tr.buttons_.disable, tr.buttons_.enable);
  return tr;
}

function updateAgentRow(tr, a) {
  const c = tr.cells_;
  c.name.textContent = a.agent_name && a.agent_name !== a.agent_id ? `${a.agent_name} (${a.agent_id})` : a.agent_id;
  badge(c.status, a.status);
  tr.dataset.status = a.status;
  c.ip.textContent = a.ip_address || "—";
  c.tags.textContent = Object.entries(a.tags || {}).map(([k, v]) => `${k}=${v}`).join(", ") || "—";
  c.tasks.textContent = `${a.current_tasks} / ${a.max_concurrent_uploads}`;
  // Completed (kept across hub restarts) over offered (counted since the hub started).
  const offered = Math.max(a.total_tasks || 0, a.tasks_completed || 0);
  c.success.textContent = offered ? `${Math.round((100 * a.tasks_completed) / offered)}% (${a.tasks_completed}/${offered})` : "—";
  c.memory.textContent = a.memory_usage_mb ? `${a.memory_usage_mb} MB` : "—";
  c.heartbeat.dataset.time = a.last_heartbeat || "";
  c.heartbeat.textContent = ago(a.last_heartbeat);
  c.heartbeat.title = fmtTime(a.last_heartbeat);
  const b = tr.buttons_;
  b.enable.hidden = !(a.disabled || a.status === "draining");
  b.disable.hidden = a.disabled;
  b.drain.hidden = a.disabled || a.status === "draining";
}

function renderTasks() {
  let tasks = [...state.tasks.values()].sort((a, b) => (b.created_at || 0) - (a.created_at || 0));
  // A page left open for weeks keeps what the hub's snapshot keeps: every unfinished
  // task and the latest ended ones.
  let ended = 0;
  tasks = tasks.filter((t) => ACTIVE.has(t.status) || ++ended <= MAX_ENDED_TASKS);
  if (tasks.length < state.tasks.size) state.tasks = new Map(tasks.map((t) => [t.task_id, t]));
  const running = tasks.filter((t) => ACTIVE.has(t.status)).length;
  $("tasks-summary").textContent = `${running} running or waiting, ${tasks.length} shown`;
  syncRows($("tasks-body"), tasks, (t) => t.task_id, makeTaskRow, updateTaskRow, "tasks-empty");
}

function makeTaskRow(task) {
  const tr = el("tr");
  const c = cells(tr, ["id", "file", "agent", "status", "progress", "speed", "eta", "retries", "actions"]);
  const id = task.task_id;
  tr.bar_ = el("progress", { max: 100, value: 0 });
  tr.pct_ = el("span", { className: "pct" });
  c.progress.append(tr.bar_, tr.pct_);
  tr.buttons_ = {
    logs: button("Log", () => showLogs(id), { className: "act-logs" }),
    cancel: button("Cancel", () => act(`cancel ${id}`, "POST", "/api/manage/cancel-task", { task_id: id }), { className: "act-cancel danger" }),
    retry: button("Retry", () => act(`retry ${id}`, "POST", "/api/manage/retry-task", { task_id: id }), { className: "act-retry" }),
  };
  c.actions.append(tr.buttons_.logs, tr.buttons_.cancel, tr.buttons_.retry);
  return tr;
}

function updateTaskRow(tr, t) {
  const c = tr.cells_;
  c.id.textContent = t.task_id.replace(/^task-/, "").slice(0, 8);
  c.id.title = t.task_id;
  c.file.textContent = basename(t.file_path);
  c.file.title = t.file_path || "";
  c.agent.textContent = t.agent_id || "—";
  badge(c.status, t.status);
  tr.dataset.status = t.status;
  // Hover the status: why it failed, or why no agent takes it yet.
  const waiting = Object.entries(t.waiting_for || {}).map(([agent, why]) => `${agent}: ${why}`);
  c.status.title = t.error_message && t.status !== "completed" ? `${t.error_kind || "error"}: ${t.error_message}`
    : waiting.length ? `waiting for: ${waiting.join("; ")}` : "";
  const pct = t.total_bytes ? Math.min(100, (100 * t.uploaded_bytes) / t.total_bytes) : 0;
  tr.bar_.value = pct;
  tr.bar_.dataset.progress = pct.toFixed(2);
  tr.pct_.textContent = `${pct.toFixed(1)}% of ${fmtBytes(t.total_bytes)}`;
  const moving = t.status === "uploading";
  c.speed.textContent = moving ? fmtSpeed(t.upload_speed) : "—";
  c.eta.textContent = moving ? fmtDuration(t.eta_seconds) : "—";
  c.retries.textContent = String(t.retry_count || 0);
  tr.buttons_.cancel.hidden = !ACTIVE.has(t.status);
  tr.buttons_.retry.hidden = !(t.status === "failed" || t.status === "cancelled");
}

// ---------------------------------------------------------------- history (paged)

function historyFilters() {
  const q = new URLSearchParams({ limit: String(HISTORY_PAGE) });
  for (const [key, id] of [["status", "history-status"], ["agent", "history-agent"],
    ["account", "history-account"], ["recording", "history-recording"]]) {
    const value = $(id).value.trim();
    if (value) q.set(key, value);
  }
  return q;
}

async function loadHistory(more = false) {
  if (!more) {
    state.historyQuery = historyFilters();
    state.historyCursor = null;
    state.history = [];
  }
  const q = new URLSearchParams(state.historyQuery);
  if (more && state.historyCursor) q.set("cursor", state.historyCursor);
  $("history-more").disabled = true;
  try {
    const data = await api("GET", `/api/manage/tasks?${q}`);
    state.history.push(...data.tasks);
    state.historyCursor = data.next_cursor || null;
  } catch (err) {
    notice(`Task history: ${err.message}`, true);
  } finally {
    $("history-more").disabled = false;
  }
  renderHistory();
}

function renderHistory() {
  const more = Boolean(state.historyCursor);
  $("history-more").hidden = !more;
  $("history-summary").textContent = state.historyQuery
    ? `${state.history.length} shown${more ? ", more on demand" : ""}` : "";
  syncRows($("history-body"), state.history, (t) => t.task_id, makeTaskRow, updateTaskRow, "history-empty");
}

function renderIps() {
  syncRows($("ips-body"), state.ips, (r) => r.ip, makeIpRow, updateIpRow, "ips-empty");
}

function makeIpRow(row) {
  const tr = el("tr");
  const c = cells(tr, ["ip", "state", "agents", "active", "hour", "outcomes", "events", "until", "actions"]);
  const ip = row.ip;
  tr.enable_ = button("Re-enable", async () => {
    const updated = await act(`re-enable ${ip}`, "POST", `/api/manage/ips/${encodeURIComponent(ip)}/enable`);
    if (updated) {
      state.ips = state.ips.map((r) => (r.ip === updated.ip ? updated : r));
      renderIps();
    }
  }, { className: "act-reenable" });
  c.actions.append(tr.enable_);
  return tr;
}

function updateIpRow(tr, r) {
  const c = tr.cells_;
  c.ip.textContent = r.ip;
  badge(c.state, r.state);
  if (r.reason) c.state.title = r.reason;
  c.agents.textContent = (r.agents || []).join(", ") || "—";
  c.active.textContent = String(r.active_tasks || 0);
  c.hour.textContent = String(r.uploads_last_hour ?? 0);
  c.outcomes.textContent = `${r.uploads_ok || 0} / ${r.uploads_failed || 0}`;
  c.events.textContent = String((r.events || []).length);
  c.until.textContent = r.disabled ? "until re-enabled" : r.cooldown_until ? fmtTime(r.cooldown_until) : "—";
  tr.enable_.hidden = !(r.disabled || r.cooldown_until);
}

// ---------------------------------------------------------------- recordings and logs

async function loadRecordings() {
  let rows = [];
  try {
    const data = await api("GET", "/api/manage/recordings");
    rows = Array.isArray(data) ? data : (data?.recordings || []);
  } catch (err) {
    // 404: this hub has no recordings API; anything else is worth saying.
    if (err.status !== 404 && err.status !== 401) notice(`recordings: ${err.message}`, true);
  }
  syncRows($("recordings-body"), rows, (r) => r.id ?? r.recording_id, makeRecordingRow, updateRecordingRow, "recordings-empty");
}

function makeRecordingRow(rec) {
  const tr = el("tr");
  const c = cells(tr, ["id", "room", "title", "started", "parts", "submission", "actions"]);
  const id = rec.id ?? rec.recording_id;
  tr.submit_ = button("Submit", async () => {
    if (await act(`submit recording ${id}`, "POST", `/api/manage/recordings/${encodeURIComponent(id)}/submit`) !== null) {
      loadRecordings();
    }
  }, { className: "act-submit" });
  c.actions.append(tr.submit_);
  return tr;
}

function updateRecordingRow(tr, r) {
  const c = tr.cells_;
  c.id.textContent = String(r.id ?? r.recording_id);
  c.room.textContent = [r.room_id, r.streamer].filter(Boolean).join(" · ") || "—";
  c.title.textContent = r.title || "—";
  c.started.textContent = fmtTime(r.started_at);
  const parts = Array.isArray(r.parts) ? r.parts.length : (r.part_count ?? "—");
  c.parts.textContent = String(parts);
  const submitted = r.bvid || r.aid;
  c.submission.textContent = submitted ? `${r.submit_state || "submitted"} ${r.bvid || r.aid}` : (r.submit_state || "—");
  if (r.submit_error) c.submission.title = r.submit_error;
  tr.submit_.hidden = Boolean(submitted) || r.submit_state === "submitting" || r.submit_state === "submitted";
}

async function showLogs(taskId) {
  const dialog = $("logs-dialog");
  $("logs-task").textContent = taskId;
  $("logs-body").replaceChildren();
  try {
    const data = await api("GET", `/api/manage/tasks/${encodeURIComponent(taskId)}/logs`);
    $("logs-body").replaceChildren(...(data.logs || []).map((l) => el("tr", {},
      el("td", {}, fmtTime(l.created_at)), el("td", {}, l.event_type || ""),
      el("td", {}, l.agent_id || "—"), el("td", {}, l.ip_address || "—"),
      el("td", {}, l.message || ""))));
  } catch (err) {
    if (err.status === 401) return;
    $("logs-body").replaceChildren(el("tr", {}, el("td", { colSpan: 5, className: "error" }, err.message)));
  }
  if (!dialog.open) dialog.showModal();
}

// ---------------------------------------------------------------- login / session

function showApp(on) {
  $("login-section").hidden = on;
  $("app").hidden = !on;
  $("nav").hidden = !on;
  $("live").hidden = !on;
  $("logout").hidden = !on;
}

function start() {
  showApp(true);
  notice("");
  state.abort?.abort();
  state.abort = new AbortController();
  follow(state.abort.signal);
  loadRecordings();
}

function logout(message = "") {
  sessionStorage.removeItem(TOKEN_KEY);
  state.abort?.abort();
  state.abort = null;
  state.agents.clear(); state.tasks.clear(); state.ips = [];
  state.history = []; state.historyQuery = null; state.historyCursor = null;
  for (const id of ["agents-body", "tasks-body", "ips-body", "recordings-body", "history-body"]) $(id).replaceChildren();
  showApp(false);
  $("login-error").textContent = message;
  $("token").value = "";
  $("token").focus();
}

async function login(event) {
  event.preventDefault();
  const candidate = $("token").value.trim();
  if (!candidate) return;
  $("login-error").textContent = "";
  let response;
  try {
    response = await fetch("/api/manage/agents", {
      headers: { Authorization: `Bearer ${candidate}` }, cache: "no-store",
    });
  } catch {
    $("login-error").textContent = "The hub did not answer.";
    return;
  }
  if (response.status === 401) {
    $("login-error").textContent = "Wrong admin token.";
    return;
  }
  if (!response.ok) {
    $("login-error").textContent = `The hub answered HTTP ${response.status}.`;
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, candidate);
  $("token").value = "";
  start();
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", () => logout());
  $("recordings-refresh").addEventListener("click", loadRecordings);
  $("history-form").addEventListener("submit", (event) => { event.preventDefault(); loadHistory(); });
  $("history-more").addEventListener("click", () => loadHistory(true));
  // Relative times age on the page; the hub sends nothing for that.
  setInterval(() => {
    for (const td of document.querySelectorAll("td.col-heartbeat")) td.textContent = ago(Number(td.dataset.time));
  }, 1000);
  if (token()) start(); else showApp(false);
});
