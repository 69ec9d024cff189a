// bupmesh hub console. Plain ES modules served by the hub, no build step, nothing
// fetched from elsewhere. Safety: every value is written as text, never as HTML.
//
// One live stream (stream.js) feeds the sections that follow the hub's state: agents,
// tasks and IPs (live.js), Bilibili's verdicts (verdicts.js), recordings
// (recordings.js) and the charts (charts.js);
// retention (retention.js) is read again shortly after a recording changes.
// Rooms (rooms.js) and accounts (accounts.js) are read when the page opens and after
// each change made from it; so are agent tokens (access.js, which follows the agents'
// approval, duplicates and allowlists on the stream); older tasks (older.js) when
// asked for, a page at a time.
//
// The admin token and the read-only viewer token log in alike; the hub says which
// one it was (whoami) and a viewer's page hides what would change anything.
import * as access from "./access.js";
import * as accounts from "./accounts.js";
import { api, onUnauthorized, setToken, token } from "./api.js";
import * as charts from "./charts.js";
import { $ } from "./dom.js";
import { LANGUAGES, initialLanguage, lang, onLanguageChange, setLanguage, t } from "./i18n.js";
import * as live from "./live.js";
import * as older from "./older.js";
import * as recordings from "./recordings.js";
import * as retention from "./retention.js";
import * as rooms from "./rooms.js";
import { follow } from "./stream.js";
import * as verdicts from "./verdicts.js";

const SECTIONS = [live, older, verdicts, recordings, charts, retention, rooms, accounts, access];
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
  access.handle(name, data);
}

function showApp(on) {
  $("login-section").hidden = on;
  $("app").hidden = !on;
  $("nav").hidden = !on;
  $("live").hidden = !on;
  $("logout").hidden = !on;
}

// The role the token grants; a hub without whoami knows only the admin token.
async function loadRole() {
  let role = "admin";
  try {
    role = (await api("GET", "/api/manage/whoami")).role;
  } catch (err) {
    if (err.status === 401) return;
  }
  showRole(role);
}

function showRole(role) {
  if (role) document.body.dataset.role = role;
  else delete document.body.dataset.role;
  $("role").hidden = role !== "viewer";
}

function start() {
  showApp(true);
  $("notice").textContent = "";
  delete $("app").dataset.loaded;
  abort?.abort();
  abort = new AbortController();
  follow(abort.signal, onEvent, setLive);
  // What the stream does not carry is read once; "loaded" says it all arrived.
  Promise.allSettled([loadRole(), rooms.load(), accounts.load(), retention.load(), access.load()])
    .then(() => { $("app").dataset.loaded = "true"; });
}

function logout(message = "") {
  setToken("");
  abort?.abort();
  abort = null;
  for (const section of SECTIONS) section.clear();
  showRole("");
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
  older.init();
  rooms.init();
  accounts.init();
  access.init();
  setInterval(() => { live.tick(); accounts.tick(); access.tick(); }, 1000);
  if (token()) start(); else showApp(false);
});
