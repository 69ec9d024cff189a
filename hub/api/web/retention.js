// Retention: what the hub did with recorders' files after upload (deleted, moved, kept
// and why), what still waits, and the free space of the recorder directories, from
// GET /api/manage/retention. Read when the page opens, on Refresh, and shortly after a
// recording changes on the live stream (retention acts on recordings and notes it in
// their history), so the page never polls.
import { api, notice } from "./api.js";
import { $, badge, cells, el, syncRows } from "./dom.js";
import { basename, fmtBytes, fmtTime } from "./format.js";
import { t, word } from "./i18n.js";

const SETTLE_MS = 1000; // one read for a burst of recording changes
let overview = null;
let available = true;
let timer = null;

export async function load() {
  const storage = loadStorage();
  try {
    overview = await api("GET", "/api/manage/retention");
    available = true;
  } catch (err) {
    if (err.status === 401) return;
    available = err.status !== 404; // a hub without retention: the section stays hidden
    if (available) notice(t("retention.error", { message: err.message }), true);
  }
  render();
  await storage;
}

// Whether the hub's own data directory is full (new work is refused with 507 meanwhile).
async function loadStorage() {
  let storage = null;
  try {
    storage = await api("GET", "/api/manage/storage");
  } catch (err) {
    if (err.status !== 404 && err.status !== 401) notice(t("storage.error", { message: err.message }), true);
  }
  const alarm = $("storage-alarm");
  alarm.hidden = !storage?.full;
  alarm.textContent = storage?.full ? t("storage.full", {
    dir: storage.directory, free: fmtBytes(storage.free_bytes || 0), writes: storage.waiting_writes ?? 0,
  }) : "";
}

export function handle(name) {
  if (name !== "recording" || !available) return; // a recording changed: retention may have acted
  if (timer === null) timer = setTimeout(() => { timer = null; load(); }, SETTLE_MS);
}

export function clear() {
  overview = null;
  if (timer !== null) clearTimeout(timer);
  timer = null;
  $("retention-body").replaceChildren();
}

export function render() {
  $("retention").hidden = !available;
  $("nav-retention").hidden = !available;
  if (!overview) return;
  const rule = overview.rule || {};
  $("retention-rule").textContent = (rule.trigger === "never" ? t("retention.ruleNever") : t("retention.rule", {
    trigger: word("room.value", rule.trigger), action: word("room.value", rule.action),
    days: rule.delay_days ?? 0,
  })) + (rule.dry_run ? ` · ${t("retention.dryRun")}` : "") + " " + t("retention.perRoom");
  const roomRules = Object.values(overview.rooms || {}).filter((r) => r.trigger !== "never").length;
  $("retention-summary").textContent = roomRules ? t("retention.roomRules", { n: roomRules }) : "";
  const waiting = Object.entries(overview.pending_bytes || {}).filter(([, n]) => n > 0);
  $("retention-waiting").textContent = waiting.length
    ? t("retention.waiting", { list: waiting.map(([stage, n]) => `${word("retention.stage", stage)} ${fmtBytes(n)}`).join(", ") }) : "";
  $("retention-totals").replaceChildren(...Object.entries(overview.totals || {}).map(([state, x]) =>
    el("span", { className: "chip", dataset: { state } },
      `${word("retention.state", state)}: ${t("retention.files", { n: x.files })}, ${fmtBytes(x.bytes)}`)));
  $("retention-disks").replaceChildren(...(overview.disks || []).map((d) =>
    el("span", { className: `chip${d.low ? " low" : ""}`, dataset: { low: String(d.low) } },
      `${d.path}: ${t("retention.free", { free: fmtBytes(d.free_bytes) })}${d.low ? ` · ${t("retention.low")}` : ""}`)));
  syncRows($("retention-body"), overview.files || [], (f) => f.part_id, makeRow, updateRow, "retention-empty");
}

function makeRow() {
  const tr = el("tr");
  cells(tr, ["time", "recording", "file", "size", "state", "action", "note"]);
  return tr;
}

function updateRow(tr, f) {
  const c = tr.cells_;
  c.time.textContent = fmtTime(f.updated_at);
  c.recording.textContent = `#${f.recording_id} · ${f.room_id}`;
  c.file.textContent = basename(f.path);
  c.file.title = f.path;
  c.size.textContent = fmtBytes(f.size);
  badge(c.state, f.state, word("retention.state", f.state));
  tr.dataset.state = f.state;
  tr.dataset.action = f.action || "";
  c.action.textContent = f.action ? word("room.value", f.action) + (f.destination ? ` → ${f.destination}` : "") : "—";
  c.note.textContent = f.note || "";
}

// A recording's own history (what the hub did with it and refused to do), in a dialog.
export async function showHistory(recordingId) {
  const dialog = $("history-dialog");
  $("history-recording").textContent = `#${recordingId}`;
  $("history-body").replaceChildren();
  try {
    const data = await api("GET", `/api/manage/recordings/${encodeURIComponent(recordingId)}/history`);
    $("history-body").replaceChildren(...(data.history || []).map((h) => el("tr", { dataset: { kind: h.kind } },
      el("td", {}, fmtTime(h.at)), el("td", {}, word("history.kind", h.kind)), el("td", {}, h.message || ""))));
  } catch (err) {
    if (err.status === 401) return;
    $("history-body").replaceChildren(el("tr", {}, el("td", { colSpan: 3, className: "error" }, err.message)));
  }
  if (!dialog.open) dialog.showModal();
}
