// Numbers, sizes, durations and times as the page shows them, in the page's language.
import { lang, t } from "./i18n.js";

export const clock = { skewMs: 0 }; // hub clock minus ours: "12 s ago" is right either way

export function hubNow() {
  return (Date.now() + clock.skewMs) / 1000;
}

export function fmtBytes(n) {
  if (n == null || !isFinite(n)) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function fmtSpeed(bps) {
  return bps > 0 && isFinite(bps) ? `${fmtBytes(bps)}/s` : "—";
}

export function fmtDuration(s) {
  if (s == null || !isFinite(s) || s < 0) return "—";
  s = Math.round(s);
  if (s < 60) return t("time.s", { s });
  if (s < 3600) return t("time.ms", { m: Math.floor(s / 60), s: s % 60 });
  return t("time.hm", { h: Math.floor(s / 3600), m: Math.floor((s % 3600) / 60) });
}

export function fmtTime(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString(lang()) : "—";
}

export function fmtClock(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString(lang(), { hour: "2-digit", minute: "2-digit" });
}

export function ago(seconds) {
  if (!seconds) return t("time.never");
  return t("time.ago", { d: fmtDuration(Math.max(0, hubNow() - seconds)) });
}

export function basename(path) {
  return (path || "").split(/[\\/]/).pop() || path || "";
}
