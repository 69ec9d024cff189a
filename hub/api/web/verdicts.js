// Bilibili's verdicts: the captchas Bilibili asked for (Mark solved), each account's
// standing with risk control (Release) and the limits the hub learned from refusals
// (Forget). They come with the IP table over the live stream (snapshot and "ips"
// events): every ledger event sends them, so a button's effect shows without asking;
// Refresh reads them from the API.
import { act, api, notice } from "./api.js";
import { $, badge, button, cells, el, syncRows } from "./dom.js";
import { fmtTime } from "./format.js";
import { t, word } from "./i18n.js";

let verdicts = null;

export function handle(name, data) {
  if ((name === "snapshot" || name === "ips") && data.verdicts) {
    verdicts = data.verdicts;
    render();
  }
}

export function clear() {
  verdicts = null;
  for (const id of ["captchas-body", "standing-body", "learned-body"]) $(id).replaceChildren();
}

export function render() {
  if (!verdicts) return;
  syncRows($("captchas-body"), verdicts.captchas || [], (c) => c.voucher, makeCaptchaRow, updateCaptchaRow, "captchas-empty");
  syncRows($("standing-body"), verdicts.accounts || [], (a) => a.account_id, makeStandingRow, updateStandingRow, "standing-empty");
  syncRows($("learned-body"), verdicts.learned || [], (l) => `${l.scope}:${l.subject}`, makeLearnedRow, updateLearnedRow, "learned-empty");
}

export async function refresh() {
  try {
    const [captchas, learned, accounts] = await Promise.all([
      api("GET", "/api/manage/captchas").then((d) => (d.captchas || []).filter((c) => c.open)),
      api("GET", "/api/manage/risk/learned").then((d) => d.learned || []),
      api("GET", "/api/manage/accounts").then((d) => Promise.all((d.accounts || []).map((a) =>
        api("GET", `/api/manage/accounts/${encodeURIComponent(a.account_id)}/risk`).catch(() => null)))),
    ]);
    verdicts = { captchas, learned, accounts: accounts.filter(Boolean) };
    render();
  } catch (err) {
    if (err.status !== 401) notice(t("verdicts.error", { message: err.message }), true);
  }
}

export function evidenceText(evidence) {
  return (evidence || []).map((e) => t("verdicts.evidence", {
    time: fmtTime(e.time), kind: e.kind, ip: e.ip, agent: e.agent_id, starts: e.starts_last_hour,
  })).join("\n");
}

export async function forget(scope, subject) {
  const body = subject == null ? { scope } : { scope, subject };
  await act(t("verdicts.act.forget", { what: `${scope} ${subject ?? ""}`.trim() }), "POST", "/api/manage/risk/forget", body);
}

function makeCaptchaRow(captcha) {
  const tr = el("tr");
  const c = cells(tr, ["voucher", "ip", "account", "since", "refusals", "actions"]);
  const voucher = captcha.voucher;
  tr.solved_ = button("", () => act(t("verdicts.act.solved", { voucher }), "POST",
    `/api/manage/captchas/${encodeURIComponent(voucher)}/solved`), { className: "act-solved" });
  c.actions.append(tr.solved_);
  return tr;
}

function updateCaptchaRow(tr, captcha) {
  const c = tr.cells_;
  c.voucher.textContent = captcha.voucher;
  c.ip.textContent = captcha.ip || "—";
  c.account.textContent = captcha.account || "—";
  c.since.textContent = fmtTime(captcha.raised_at);
  c.refusals.textContent = String(captcha.refusals || 1);
  tr.solved_.textContent = t("verdicts.solved");
}

function makeStandingRow(account) {
  const tr = el("tr");
  const c = cells(tr, ["name", "state", "uploads", "submits", "actions"]);
  const id = account.account_id;
  tr.release_ = button("", () => act(t("verdicts.act.release", { name: account.name }), "POST",
    `/api/manage/accounts/${encodeURIComponent(id)}/risk/release`), { className: "act-release" });
  c.actions.append(tr.release_);
  return tr;
}

function updateStandingRow(tr, a) {
  const c = tr.cells_;
  c.name.textContent = `${a.name} (mid ${a.mid ?? "—"})`;
  badge(c.state, a.state, word("standing", a.state));
  c.state.title = a.penalised ? a.penalty : (a.suspected ? t("verdicts.suspected") : "");
  const side = (s) => t("verdicts.counts", { hour: s.last_hour ?? 0, day: s.last_day ?? 0 }) + (s.fit ? "" : `: ${s.reason}`);
  c.uploads.textContent = side(a.preupload || {});
  c.submits.textContent = side(a.submit || {});
  tr.release_.textContent = t("verdicts.release");
  tr.release_.hidden = !(a.state === "penalised" || a.state === "cooling" || a.suspected);
}

function makeLearnedRow(limit) {
  const tr = el("tr");
  const c = cells(tr, ["scope", "cap", "evidence", "fades", "actions"]);
  const subject = limit.scope === "mesh" ? null : limit.subject;
  tr.forget_ = button("", () => forget(limit.scope, subject), { className: "act-forget" });
  c.actions.append(tr.forget_);
  return tr;
}

function updateLearnedRow(tr, l) {
  const c = tr.cells_;
  c.scope.textContent = l.scope === "mesh" ? t("verdicts.mesh") : `${word("verdicts.scope", l.scope)} ${l.subject}`;
  c.cap.textContent = String(l.hourly_cap);
  c.evidence.textContent = t("verdicts.answers", { n: (l.evidence || []).length });
  c.evidence.title = evidenceText(l.evidence);
  c.fades.textContent = fmtTime(l.decays_at);
  tr.forget_.textContent = t("verdicts.forget");
}
