// bupmesh hub console. Plain ES modules served by the hub, no build step, nothing
// fetched from elsewhere. Safety: every value is written as text, never as HTML.
//
// One live stream (stream.js) feeds the sections that follow the hub's state: agents,
// tasks and IPs (live.js), Bilibili's verdicts (verdicts.js), recordings
// (recordings.js) and the charts (charts.js);
// retention (retention.js) is read again shortly after a recording changes.
// Rooms (rooms.js) and accounts (accounts.js) are read when the page opens and after
// each change made from it.
import * as accounts from "./accounts.js";
import { onUnauthorized, setToken, token } from "./api.js";
import * as charts from "./charts.js";
import { $ } from "./dom.js";
import { LANGUAGES, initialLanguage, lang, onLanguageChange, setLanguage, t } from "./i18n.js";
import * as live from "./live.js";
import * as recordings from "./recordings.js";
import * as retention from "./retention.js";
import * as rooms from "./rooms.js";
import { follow } from "./stream.js";
import * as verdicts from "./verdicts.js";

const SECTIONS = [live, verdicts, recordings, charts, retention, rooms, accounts];
let abort = null;
let liveState = ["off", "live.off"];

function setLive(kind, key) {
  const node = $("live");
  node.dataset.state = kind;
  node.textContent = t(key);
  liveState = [kind, key];
}

function onEvent(name, data) {
  live.handle(name, data);
  verdicts.handle(name, data);
  recordings.handle(name, data);
  charts.handle(name, data);
  retention.handle(name, data);
}

function showApp(on) {
  $("login-section").hidden = on;
  $("app").hidden = !on;
  $("nav").hidden = !on;
  $("live").hidden = !on;
  $("logout").hidden = !on;
}

function start() {
  showApp(true);
  $("notice").textContent = "";
  delete $("app").dataset.loaded;
  abort?.abort();
  abort = new AbortController();
  follow(abort.signal, onEvent, setLive);
  // What the stream does not carry is read once; "loaded" says it all arrived.
  Promise.allSettled([rooms.load(), accounts.load(), retention.load()])
    .then(() => { $("app").dataset.loaded = "true"; });
}

function logout(message = "") {
  setToken("");
  abort?.abort();
  abort = null;
  for (const section of SECTIONS) section.clear();
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
    $("login-error").textContent = t("login.noAnswer");
    return;
  }
  if (response.status === 401) {
    $("login-error").textContent = t("login.wrong");
    return;
  }
  if (!response.ok) {
    $("login-error").textContent = t("login.status", { status: response.status });
    return;
  }
  setToken(candidate);
  $("token").value = "";
  start();
}

function languageSwitch() {
  const select = $("lang");
  select.replaceChildren(...LANGUAGES.map((code) => {
    const option = document.createElement("option");
    option.value = code;
    option.textContent = t(`lang.${code}`);
    return option;
  }));
  select.value = lang();
}

document.addEventListener("DOMContentLoaded", () => {
  onUnauthorized(logout);
  onLanguageChange(() => {
    languageSwitch();
    setLive(...liveState);
    for (const section of SECTIONS) section.render();
  });
  setLanguage(initialLanguage());
  $("lang").addEventListener("change", (e) => setLanguage(e.target.value, { remember: true }));
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", () => logout());
  $("recordings-refresh").addEventListener("click", recordings.refresh);
  $("retention-refresh").addEventListener("click", retention.load);
  $("verdicts-refresh").addEventListener("click", verdicts.refresh);
  rooms.init();
  accounts.init();
  setInterval(() => { live.tick(); accounts.tick(); }, 1000);
  if (token()) start(); else showApp(false);
});
