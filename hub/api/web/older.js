// Older tasks, on demand: the live stream carries only unfinished and recent tasks (a
// hub keeps every task it ever ran), so older ones are read from GET /api/manage/tasks
// a page at a time, newest first, following its next_cursor; filters narrow the walk.
import { api, notice } from "./api.js";
import { $, syncRows } from "./dom.js";
import { t } from "./i18n.js";
import { makeTaskRow, updateTaskRow } from "./live.js";

const PAGE = 100;
const FILTERS = [["status", "older-status"], ["agent", "older-agent"],
  ["account", "older-account"], ["recording", "older-recording"]];

// query: the filters of the pages shown (null before the first Show); cursor: the next page's.
const state = { tasks: [], query: null, cursor: null, busy: false };

export function init() {
  $("older-form").addEventListener("submit", (event) => { event.preventDefault(); load(); });
  $("older-more").addEventListener("click", () => load({ more: true }));
}

function filters() {
  const q = new URLSearchParams({ limit: String(PAGE) });
  for (const [key, id] of FILTERS) {
    const value = $(id).value.trim();
    if (value) q.set(key, value);
  }
  return q;
}

export async function load({ more = false } = {}) {
  if (state.busy) return;
  if (!more) {
    state.query = filters();
    state.cursor = null;
    state.tasks = [];
  }
  const q = new URLSearchParams(state.query);
  if (more && state.cursor) q.set("cursor", state.cursor);
  state.busy = true;
  $("older-more").disabled = true;
  try {
    const data = await api("GET", `/api/manage/tasks?${q}`);
    const seen = new Set(state.tasks.map((x) => x.task_id));
    state.tasks.push(...data.tasks.filter((x) => !seen.has(x.task_id)));
    state.cursor = data.next_cursor || null;
  } catch (err) {
    if (err.status !== 401) notice(t("older.error", { message: err.message }), true);
  } finally {
    state.busy = false;
    $("older-more").disabled = false;
  }
  render();
}

export function render() {
  const more = Boolean(state.cursor);
  $("older-more").hidden = !more;
  $("older-summary").textContent = state.query
    ? t(more ? "older.summaryMore" : "older.summary", { shown: state.tasks.length }) : "";
  $("older-empty").textContent = t(state.query ? "older.none" : "older.empty");
  syncRows($("older-body"), state.tasks, (x) => x.task_id, makeTaskRow, updateTaskRow, "older-empty");
}

export function clear() {
  state.tasks = []; state.query = null; state.cursor = null;
  $("older-body").replaceChildren();
  for (const [, id] of FILTERS) $(id).value = "";
}
