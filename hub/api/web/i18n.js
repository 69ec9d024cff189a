// The page's language: Chinese (zh-CN) or English, from the browser's languages until
// the switch picks one (kept in localStorage). Every string the page shows comes from
// one dictionary per language (strings-en.js, strings-zh-CN.js); a key missing from
// one falls back to English, then to the key itself, so a new key never shows blank.
import en from "./strings-en.js";
import zhCN from "./strings-zh-CN.js";

const DICTIONARIES = { en, "zh-CN": zhCN };
export const LANGUAGES = Object.keys(DICTIONARIES);
const STORAGE_KEY = "bupmesh.lang";
const listeners = [];
let current = "en";

export function lang() {
  return current;
}

// The first of the browser's languages we speak; English otherwise.
export function browserLanguage(languages = navigator.languages || [navigator.language]) {
  for (const tag of languages) {
    if (/^zh\b/i.test(tag || "")) return "zh-CN";
    if (/^en\b/i.test(tag || "")) return "en";
  }
  return "en";
}

export function initialLanguage() {
  const chosen = localStorage.getItem(STORAGE_KEY);
  return LANGUAGES.includes(chosen) ? chosen : browserLanguage();
}

export function has(key) {
  return key in DICTIONARIES[current] || key in en;
}

// Whether the current language itself has ``key`` (no English fallback): for text whose
// English original comes from the hub, such as a room key's description.
export function hasOwn(key) {
  return key in DICTIONARIES[current];
}

// t("tasks.summary", {running: 2}) -> the current language's text with {running} filled in.
export function t(key, params) {
  const text = DICTIONARIES[current][key] ?? en[key] ?? key;
  return params ? text.replace(/\{(\w+)\}/g, (m, name) => (name in params ? String(params[name]) : m)) : text;
}

// Text the hub sent (a state, an origin): its translation when we have one.
export function word(group, value) {
  const key = `${group}.${value}`;
  return has(key) ? t(key) : String(value ?? "—");
}

export function onLanguageChange(render) {
  listeners.push(render);
}

export function setLanguage(language, { remember = false } = {}) {
  current = LANGUAGES.includes(language) ? language : "en";
  if (remember) localStorage.setItem(STORAGE_KEY, current);
  document.documentElement.lang = current;
  translate(document);
  for (const render of listeners) render();
}

// Static text in the page: data-i18n (text), data-i18n-placeholder, data-i18n-title.
export function translate(root) {
  for (const node of root.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of root.querySelectorAll("[data-i18n-placeholder]")) node.placeholder = t(node.dataset.i18nPlaceholder);
  for (const node of root.querySelectorAll("[data-i18n-title]")) node.title = t(node.dataset.i18nTitle);
  document.title = t("app.title");
}
