// Recordings and their submission, pushed by the live stream (event "recordings" after
// each snapshot, then "recording" for each one that changes); Refresh reads the API.
import { act, api, notice } from "./api.js";
import { $, badge, button, cells, el, syncRows } from "./dom.js";
import { fmtTime } from "./format.js";
import { t, word } from "./i18n.js";
import { showHistory } from "./retention.js";

const rows = new Map(); // recording id -> row as GET /api/manage/recordings shows it

export function handle(name, data) {
  if (name === "recordings") {
    rows.clear();
    for (const r of data.recordings) rows.set(r.recording_id, r);
  } else if (name === "recording") {
    rows.set(data.recording_id, data);
  } else {
    return;
  }
  render();
}

export async function refresh() {
  try {
    const data = await api("GET", "/api/manage/recordings");
    rows.clear();
    for (const r of data.recordings || []) rows.set(r.recording_id, r);
  } catch (err) {
    // 404: this hub has no recordings API; anything else is worth saying.
    if (err.status !== 404 && err.status !== 401) notice(t("recordings.error", { message: err.message }), true);
  }
  render();
}

export function clear() {
  rows.clear();
  $("recordings-body").replaceChildren();
}

export function render() {
  const list = [...rows.values()].sort((a, b) => b.recording_id - a.recording_id);
  syncRows($("recordings-body"), list, (r) => r.recording_id, makeRow, updateRow, "recordings-empty");
}

function makeRow(rec) {
  const tr = el("tr");
  const c = cells(tr, ["id", "room", "title", "started", "parts", "submission", "archive", "actions"]);
  const id = rec.recording_id;
  tr.submit_ = button("", async () => {
    const row = await act(t("recordings.act.submit", { id }), "POST", `/api/manage/recordings/${encodeURIComponent(id)}/submit`);
    if (row) handle("recording", row);
  }, { className: "act-submit" });
  tr.history_ = button("", () => showHistory(id), { className: "act-history" });
  c.actions.append(tr.submit_, tr.history_);
  return tr;
}

function updateRow(tr, r) {
  const c = tr.cells_;
  c.id.textContent = String(r.recording_id);
  c.room.textContent = [r.room_id, r.streamer].filter(Boolean).join(" · ") || "—";
  c.title.textContent = r.title || "—";
  c.started.textContent = fmtTime(r.started_at);
  const parts = r.parts || [];
  const uploaded = parts.filter((p) => p.upload_state === "uploaded").length;
  c.parts.textContent = t("recordings.parts", { uploaded, total: parts.length });
  tr.dataset.state = r.state;
  badge(c.submission, r.state, word("state", r.state));
  if (r.bvid) c.submission.append(" ", el("span", { className: "bvid" }, r.bvid));
  const why = r.error_message || (r.waiting_for ? word("waiting", r.waiting_for) : "");
  if (why) c.submission.append(el("div", { className: "why" }, why));
  tr.submit_.textContent = t("recordings.submit");
  tr.history_.textContent = t("recordings.history");
  tr.submit_.hidden = !(r.state === "waiting" || r.state === "failed") || Boolean(r.bvid);
  updateArchiveCell(c.archive, r);
}

// The archive a recording became: a link, the parts it holds, its collection, and its
// review (a rejection with Bilibili's reason).
function updateArchiveCell(td, r) {
  const children = [];
  if (r.archive_url) {
    children.push(el("a", { href: r.archive_url, target: "_blank", rel: "noopener noreferrer",
      className: "archive-link" }, r.bvid || `av${r.aid}`));
  } else {
    children.push("—");
  }
  const total = Array.isArray(r.parts) ? r.parts.length : 0;
  if (r.aid && total && r.parts_archived !== undefined && r.parts_archived < total) {
    const pending = total - r.parts_archived - (r.parts_kept_out || 0);
    const text = pending > 0 ? t("archive.partsPending", { n: r.parts_archived, total, pending })
      : t("archive.parts", { n: r.parts_archived, total });
    children.push(" ", el("span", { className: "archive-parts" }, text));
  }
  const review = r.review || {};
  if (review.state) {
    const shown = review.state === "pending" && review.state_code === -40 ? "scheduled" : review.state;
    const tag = el("span", { className: `badge badge-review-${review.state} archive-review`, dataset: { review: shown } },
      word("review", shown));
    if (review.reason) tag.title = review.reason;
    children.push(" ", tag);
    if (review.state === "rejected" && review.reason) {
      children.push(el("span", { className: "archive-reason error" }, ` ${review.reason}`));
    }
  }
  const season = r.season || {};
  if (season.state === "failed") {
    children.push(el("span", { className: "archive-season error", title: season.error || "" }, ` ${t("archive.seasonFailed")}`));
  }
  td.replaceChildren(...children);
}
