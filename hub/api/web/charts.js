// Charts drawn by hand in SVG (no library, nothing fetched): each agent's throughput over
// the last hour, and each IP's uploads and risk events over the last 24 hours. The data is
// the hub's bucketed history (event "history", hub/core/history.py), pushed every few
// seconds over the live stream.
import { $, el, svg } from "./dom.js";
import { fmtClock, fmtSpeed } from "./format.js";
import { t } from "./i18n.js";

const WIDTH = 720;
const PALETTE = 8; // .series-0 ... .series-7 in style.css
let history = null;

export function handle(name, data) {
  if (name !== "history") return;
  history = data;
  render();
}

export function clear() {
  history = null;
  $("chart-throughput").replaceChildren();
  $("chart-ips").replaceChildren();
}

export function render() {
  if (!history) return;
  drawThroughput(history.throughput, history.server_time);
  drawIps(history.ips);
}

// A round figure at or above ``value`` for the top of an axis: 1, 2 or 5 times 10^n.
function niceMax(value) {
  if (!(value > 0)) return 1;
  const step = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 5, 10].map((m) => m * step).find((v) => v >= value);
}

function drawThroughput(data, now) {
  const root = $("chart-throughput");
  const n = Math.max(0, ...Object.values(data.agents).map((v) => v.length));
  const width = data.bucket_seconds;
  const lastStart = data.start + (n - 1) * width;
  // Bytes per bucket -> bytes per second; the current bucket has only run so long.
  const series = Object.entries(data.agents).sort(([a], [b]) => a.localeCompare(b)).map(([agent, values]) => ({
    agent,
    rates: values.map((v, i) => v / (i === n - 1 ? Math.max(1, Math.min(width, now - lastStart)) : width)),
  }));
  if (!series.length) {
    root.replaceChildren(el("p", { className: "empty" }, t("charts.noThroughput")));
    return;
  }
  const H = 200, left = 84, right = 12, top = 10, bottom = 24;
  const top_ = niceMax(Math.max(...series.flatMap((s) => s.rates)));
  const x = (i) => left + (i * (WIDTH - left - right)) / Math.max(1, n - 1);
  const y = (v) => top + (H - top - bottom) * (1 - v / top_);
  const chart = svg("svg", { viewBox: `0 0 ${WIDTH} ${H}`, class: "chart", role: "img", "aria-label": t("charts.throughput") });
  for (const f of [0, 0.5, 1]) {
    chart.append(svg("line", { x1: left, x2: WIDTH - right, y1: y(f * top_), y2: y(f * top_), class: "grid" }),
      svg("text", { x: left - 6, y: y(f * top_) + 4, class: "axis", "text-anchor": "end", textContent: f ? fmtSpeed(f * top_) : "0" }));
  }
  for (const [i, label] of [[0, t("charts.minutesAgo", { m: Math.round((n * width) / 60) })],
    [Math.floor((n - 1) / 2), t("charts.minutesAgo", { m: Math.round((n * width) / 120) })], [n - 1, t("charts.now")]]) {
    chart.append(svg("text", { x: x(i), y: H - 6, class: "axis", "text-anchor": i === 0 ? "start" : i === n - 1 ? "end" : "middle", textContent: label }));
  }
  series.forEach((s, k) => {
    const points = s.rates.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    chart.append(svg("polyline", { points, class: `series series-${k % PALETTE}`, dataset: { agent: s.agent } },
      svg("title", { textContent: s.agent })));
  });
  const legend = el("ul", { className: "legend" }, ...series.map((s, k) => el("li", { dataset: { agent: s.agent } },
    el("span", { className: `swatch series-${k % PALETTE}` }), `${s.agent} `,
    el("span", { className: "rate" }, t("charts.current", { rate: fmtSpeed(s.rates[s.rates.length - 1]) })))));
  root.replaceChildren(chart, legend);
}

function drawIps(data) {
  const root = $("chart-ips");
  const ips = [...new Set([...Object.keys(data.uploads), ...Object.keys(data.risk_events)])].sort();
  if (!ips.length) {
    root.replaceChildren(el("p", { className: "empty" }, t("charts.noUploads")));
    return;
  }
  const n = Math.max(...Object.values(data.uploads).map((v) => v.length), ...Object.values(data.risk_events).map((v) => v.length));
  const highest = Math.max(1, ...Object.values(data.uploads).flat());
  const H = 44, left = 8, right = 8, top = 12;
  const slot = (WIDTH - left - right) / n;
  const strips = ips.map((ip) => {
    const uploads = data.uploads[ip] || new Array(n).fill(0);
    const risks = data.risk_events[ip] || new Array(n).fill(0);
    const total = uploads.reduce((a, b) => a + b, 0);
    const events = risks.reduce((a, b) => a + b, 0);
    const chart = svg("svg", { viewBox: `0 0 ${WIDTH} ${H}`, class: "chart strip", role: "img", "aria-label": ip });
    chart.append(svg("line", { x1: left, x2: WIDTH - right, y1: H - 1, y2: H - 1, class: "grid" }));
    uploads.forEach((v, i) => {
      if (!v) return;
      const h = ((H - top - 1) * v) / highest;
      chart.append(svg("rect", { x: left + i * slot, y: H - 1 - h, width: Math.max(1, slot - 1), height: h, class: "bar" },
        svg("title", { textContent: `${fmtClock(data.start + i * data.bucket_seconds)} · ${t("charts.uploads", { n: v })}` })));
    });
    risks.forEach((v, i) => {
      if (!v) return;
      chart.append(svg("circle", { cx: left + (i + 0.5) * slot, cy: 6, r: 4, class: "risk" },
        svg("title", { textContent: `${fmtClock(data.start + i * data.bucket_seconds)} · ${t("charts.riskEvents", { n: v })}` })));
    });
    return el("div", { className: "ip-strip", dataset: { ip, uploads: total, riskEvents: events } },
      el("div", { className: "strip-label" }, el("strong", {}, ip), " ",
        el("span", { className: "summary" }, `${t("charts.uploads", { n: total })} · ${t("charts.riskEvents", { n: events })}`)),
      chart);
  });
  const axis = el("div", { className: "strip-axis" },
    el("span", {}, t("charts.hoursAgo", { h: Math.round((n * data.bucket_seconds) / 3600) })),
    el("span", {}, t("charts.hoursAgo", { h: Math.round((n * data.bucket_seconds) / 7200) })),
    el("span", {}, t("charts.now")));
  root.replaceChildren(...strips, axis);
}
