// Agents, tasks and the IP risk table: rendered from the live stream's events only.
import { act, api } from "./api.js";
import { $, badge, button, cells, el, syncRows } from "./dom.js";
import { ago, basename, clock, fmtBytes, fmtDuration, fmtSpeed, fmtTime } from "./format.js";
import { t, word } from "./i18n.js";
import { evidenceText, forget } from "./verdicts.js";

const ACTIVE = new Set(["pending", "assigned", "uploading"]);
const MAX_ENDED_TASKS = 200; // as hub/api/sse.py SNAPSHOT_ENDED_TASKS

const state = { agents: new Map(), tasks: new Map(), ips: [] };

export function handle(name, data) {
  if (name === "snapshot") {
    state.agents = new Map(data.agents.map((a) => [a.agent_id, a]));
    state.tasks = new Map(data.tasks.map((x) => [x.task_id, x]));
    state.ips = data.ips;
    clock.skewMs = data.server_time * 1000 - Date.now();
    render();
  } else if (name === "agent") {
    state.agents.set(data.agent_id, data);
    renderAgents();
  } else if (name === "task") {
    state.tasks.set(data.task_id, data);
    renderTasks();
  } else if (name === "ips") {
    state.ips = data.ips;
    clock.skewMs = data.server_time * 1000 - Date.now();
    renderIps();
  }
}

export function render() {
  renderAgents(); renderTasks(); renderIps();
}

export function clear() {
  state.agents.clear(); state.tasks.clear(); state.ips = [];
  for (const id of ["agents-body", "tasks-body", "ips-body"]) $(id).replaceChildren();
}

// Relative times age on the page; the hub sends nothing for that.
export function tick() {
  for (const td of document.querySelectorAll("td.col-heartbeat")) td.textContent = ago(Number(td.dataset.time));
}

// ---------------------------------------------------------------- agents

function renderAgents() {
  const agents = [...state.agents.values()].sort((a, b) => a.agent_id.localeCompare(b.agent_id));
  const up = agents.filter((a) => a.status === "online" || a.status === "busy").length;
  $("agents-summary").textContent = t("agents.summary", { up, total: agents.length });
  syncRows($("agents-body"), agents, (a) => a.agent_id, makeAgentRow, updateAgentRow, "agents-empty");
}

function makeAgentRow(agent) {
  const tr = el("tr");
  const c = cells(tr, ["name", "status", "ip", "tags", "tasks", "success", "memory", "heartbeat", "actions"]);
  const id = agent.agent_id;
  const path = (action) => `/api/manage/agents/${encodeURIComponent(id)}/${action}`;
  const run = (action) => async () => {
    const row = await act(t(`agents.act.${action}`, { id }), "POST", path(action));
    if (row) { state.agents.set(row.agent_id, row); renderAgents(); }
  };
  tr.buttons_ = {
    drain: button("", run("drain"), { className: "act-drain" }),
    disable: button("", run("disable"), { className: "act-disable danger" }),
    enable: button("", run("enable"), { className: "act-enable" }),
  };
  c.actions.append(tr.buttons_.drain, tr.buttons_.disable, tr.buttons_.enable);
  return tr;
}

function updateAgentRow(tr, a) {
  const c = tr.cells_;
  c.name.textContent = a.agent_name && a.agent_name !== a.agent_id ? `${a.agent_name} (${a.agent_id})` : a.agent_id;
  badge(c.status, a.status, word("state", a.status));
  tr.dataset.status = a.status;
  showReach(c.ip, a);
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
  b.drain.textContent = t("agents.drain");
  b.disable.textContent = t("agents.disable");
  b.enable.textContent = t("agents.enable");
  b.enable.hidden = !(a.disabled || a.status === "draining");
  b.disable.hidden = a.disabled;
  b.drain.hidden = a.disabled || a.status === "draining";
}

// ---------------------------------------------------------------- tasks

function renderTasks() {
  let tasks = [...state.tasks.values()].sort((a, b) => (b.created_at || 0) - (a.created_at || 0));
  // A page left open for weeks keeps what the hub's snapshot keeps: every unfinished
  // task and the latest ended ones.
  let ended = 0;
  tasks = tasks.filter((x) => ACTIVE.has(x.status) || ++ended <= MAX_ENDED_TASKS);
  if (tasks.length < state.tasks.size) state.tasks = new Map(tasks.map((x) => [x.task_id, x]));
  const running = tasks.filter((x) => ACTIVE.has(x.status)).length;
  $("tasks-summary").textContent = t("tasks.summary", { running, shown: tasks.length });
  syncRows($("tasks-body"), tasks, (x) => x.task_id, makeTaskRow, updateTaskRow, "tasks-empty");
}

export function makeTaskRow(task) {
  const tr = el("tr");
  const c = cells(tr, ["id", "file", "agent", "status", "progress", "speed", "eta", "retries", "actions"]);
  const id = task.task_id;
  tr.bar_ = el("progress", { max: 100, value: 0 });
  tr.pct_ = el("span", { className: "pct" });
  c.progress.append(tr.bar_, tr.pct_);
  tr.buttons_ = {
    logs: button("", () => showLogs(id), { className: "act-logs" }),
    cancel: button("", () => act(t("tasks.act.cancel", { id }), "POST", "/api/manage/cancel-task", { task_id: id }), { className: "act-cancel danger" }),
    retry: button("", () => act(t("tasks.act.retry", { id }), "POST", "/api/manage/retry-task", { task_id: id }), { className: "act-retry" }),
  };
  c.actions.append(tr.buttons_.logs, tr.buttons_.cancel, tr.buttons_.retry);
  return tr;
}

export function updateTaskRow(tr, x) {
  const c = tr.cells_;
  c.id.textContent = x.task_id.replace(/^task-/, "").slice(0, 8);
  c.id.title = x.task_id;
  c.file.textContent = basename(x.file_path);
  c.file.title = x.file_path || "";
  c.agent.textContent = x.agent_id || "—";
  badge(c.status, x.status, word("state", x.status));
  tr.dataset.status = x.status;
  // Hover the status: why it failed, or why no agent takes it yet.
  const waiting = Object.entries(x.waiting_for || {}).map(([agent, why]) => `${agent}: ${why}`);
  c.status.title = x.error_message && x.status !== "completed" ? `${x.error_kind || "error"}: ${x.error_message}`
    : waiting.length ? t("tasks.waitingFor", { list: waiting.join("; ") }) : "";
  const pct = x.total_bytes ? Math.min(100, (100 * x.uploaded_bytes) / x.total_bytes) : 0;
  tr.bar_.value = pct;
  tr.bar_.dataset.progress = pct.toFixed(2);
  tr.pct_.textContent = t("tasks.pct", { pct: pct.toFixed(1), total: fmtBytes(x.total_bytes) });
  const moving = x.status === "uploading";
  c.speed.textContent = moving ? fmtSpeed(x.upload_speed) : "—";
  c.eta.textContent = moving ? fmtDuration(x.eta_seconds) : "—";
  c.retries.textContent = String(x.retry_count || 0);
  const b = tr.buttons_;
  b.logs.textContent = t("tasks.log");
  b.cancel.textContent = t("tasks.cancel");
  b.retry.textContent = t("tasks.retry");
  b.cancel.hidden = !ACTIVE.has(x.status);
  b.retry.hidden = !(x.status === "failed" || x.status === "cancelled");
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

// ---------------------------------------------------------------- IPs

function renderIps() {
  syncRows($("ips-body"), state.ips, (r) => r.ip, makeIpRow, updateIpRow, "ips-empty");
}

function makeIpRow(row) {
  const tr = el("tr");
  const c = cells(tr, ["ip", "state", "agents", "active", "hour", "outcomes", "events", "learned", "until", "actions"]);
  const ip = row.ip;
  tr.enable_ = button("", async () => {
    const updated = await act(t("ips.act.reenable", { ip }), "POST", `/api/manage/ips/${encodeURIComponent(ip)}/enable`);
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
  badge(c.state, r.state, word("state", r.state));
  c.state.title = r.reason || "";
  c.agents.textContent = (r.agents || []).join(", ") || "—";
  c.active.textContent = String(r.active_tasks || 0);
  c.hour.textContent = String(r.uploads_last_hour ?? 0);
  c.outcomes.textContent = `${r.uploads_ok || 0} / ${r.uploads_failed || 0}`;
  c.events.textContent = String((r.events || []).length);
  showIpLearned(c.learned, r);
  c.until.textContent = r.disabled ? t("ips.untilReenabled") : r.cooldown_until ? fmtTime(r.cooldown_until) : "—";
  tr.enable_.textContent = t("ips.reenable");
  tr.enable_.hidden = !(r.disabled || r.cooldown_until);
}

// The egress Bilibili sees (the risk ledger's key) and the address the stream comes from.
function showReach(td, a) {
  const egress = a.egress_ip || a.risk_ip || a.ip_address || "—";
  td.textContent = a.link_address && a.link_address !== egress ? t("agents.via", { egress, link: a.link_address }) : egress;
  const line = a.line ? t("agents.line", { line: a.line, speed: a.line_bps ? fmtSpeed(a.line_bps) : "—" }) : "";
  td.title = t(a.egress_ip ? "agents.egressKnown" : "agents.egressUnknown", {
    reported: a.ip_address || "—", link: a.link_address || "—",
  }) + line;
}

// The hourly cap learned from Bilibili's refusals on this IP (or for every IP), with Forget.
function showIpLearned(td, r) {
  td.replaceChildren();
  td.title = "";
  if (r.learned_hourly_cap == null) {
    td.textContent = "—";
    return;
  }
  const own = r.learned;
  td.append(t(own ? "ips.learnedOwn" : "ips.learnedMesh", { cap: r.learned_hourly_cap }));
  if (own) {
    td.title = evidenceText(own.evidence);
    td.append(" ", button(t("verdicts.forget"), () => forget("ip", r.ip), { className: "act-forget-ip" }));
  }
}
