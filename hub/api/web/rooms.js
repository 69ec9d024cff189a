// Rooms: the table of rooms and the form that edits one.
//
// The form is drawn from the hub's JSON Schema of a room's settings
// (GET /api/manage/rooms/schema, hub.config.RoomSettings): a key the hub adds appears
// here with a control for its type (yes/no, a choice, a number with its range, text, a
// group of keys, or JSON for anything else), without a change to this page. Empty means
// "inherit": the placeholder shows the value the room inherits. The hub checks what is
// sent by hub.yml's rules and names the key it refuses; the form marks that field.
import { api, notice } from "./api.js";
import { $, badge, button, cells, el, syncRows } from "./dom.js";
import { fmtTime } from "./format.js";
import { has, hasOwn, t, word } from "./i18n.js";

let schema = null;
let defaults = {};
let rooms = [];
let formFields = [];
let available = true;

export async function load() {
  try {
    const [shape, list] = await Promise.all([api("GET", "/api/manage/rooms/schema"), api("GET", "/api/manage/rooms")]);
    schema = shape.schema;
    defaults = shape.defaults;
    rooms = list.rooms;
    available = true;
  } catch (err) {
    if (err.status === 401) return;
    available = err.status !== 404;
    if (available) notice(t("rooms.error", { message: err.message }), true);
  }
  render();
}

export function clear() {
  rooms = [];
  $("rooms-body").replaceChildren();
}

export function render() {
  $("rooms-add").hidden = !available || !schema;
  $("rooms-yaml-only").hidden = available;
  syncRows($("rooms-body"), rooms, (r) => r.room_id, makeRow, updateRow, "rooms-empty");
  if ($("room-dialog").open) translateForm();
}

// ---------------------------------------------------------------- the table

function makeRow(room) {
  const tr = el("tr");
  const c = cells(tr, ["room", "origin", "account", "auto", "settings", "updated", "actions"]);
  const id = room.room_id;
  tr.edit_ = button("", () => openForm(rooms.find((r) => r.room_id === id)), { className: "act-edit" });
  tr.delete_ = button("", () => remove(id), { className: "act-delete danger" });
  c.actions.append(tr.edit_, tr.delete_);
  return tr;
}

function updateRow(tr, r) {
  const c = tr.cells_;
  c.room.textContent = r.room_id;
  badge(c.origin, r.origin, word("rooms.origin", r.origin));
  c.account.textContent = r.effective.account ?? t("rooms.onlyAccount");
  c.auto.textContent = r.effective.auto_submit ? t("room.yes") : t("room.no");
  c.settings.replaceChildren(...Object.entries(r.settings).map(([key, value]) =>
    el("span", { className: "chip", dataset: { key } }, `${fieldLabel(key, key)}: ${show(value)}`)));
  if (r.error) c.settings.append(el("div", { className: "error" }, r.error));
  c.updated.textContent = fmtTime(r.updated_at);
  tr.dataset.origin = r.origin;
  tr.edit_.textContent = t("rooms.edit");
  tr.delete_.textContent = t(r.in_yaml ? "rooms.reset" : "rooms.delete");
  tr.delete_.hidden = r.in_yaml && r.origin === "yaml";
}

async function remove(id) {
  try {
    const result = await api("DELETE", `/api/manage/rooms/${encodeURIComponent(id)}`);
    notice(t(result.deleted ? "rooms.deleted" : "rooms.wasReset", { id }));
  } catch (err) {
    if (err.status !== 401) notice(t("rooms.error", { message: err.message }), true);
  }
  await load();
}

function show(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "boolean") return value ? t("room.yes") : t("room.no");
  if (Array.isArray(value)) return value.join(", ");
  if (typeof value === "object") return Object.entries(value).map(([k, v]) => `${fieldLabel(k, k)}=${show(v)}`).join(", ");
  return has(`room.value.${value}`) ? t(`room.value.${value}`) : String(value);
}

// ---------------------------------------------------------------- the schema

function resolve(node) {
  while (node && node.$ref) node = schema.$defs[node.$ref.split("/").pop()];
  return node || {};
}

// What control a key gets, from its schema.
function kindOf(prop) {
  const node = resolve(prop);
  const options = (node.anyOf || [node]).map(resolve).filter((o) => o.type !== "null");
  if (options.length === 1) {
    const o = options[0];
    if (o.enum) return { kind: "enum", values: o.enum };
    if (o.type === "boolean") return { kind: "bool" };
    if (o.type === "integer" || o.type === "number") {
      return { kind: "number", integer: o.type === "integer", min: o.minimum ?? o.exclusiveMinimum, max: o.maximum ?? o.exclusiveMaximum };
    }
    if (o.type === "string") return { kind: "text" };
    if (o.type === "object" && o.properties) return { kind: "group", node: o };
  }
  if (options.length && options.every((o) => o.type === "string" || (o.type === "array" && resolve(o.items).type === "string"))) {
    return { kind: "list" };
  }
  return { kind: "json" };
}

function fieldLabel(path, key) {
  for (const k of [`room.field.${path}`, `room.field.${key}`]) if (has(k)) return t(k);
  return key;
}

// The hub's description of the key (English), unless this language has its own.
function helpText(path, key, prop) {
  for (const k of [`room.help.${path}`, `room.help.${key}`]) if (hasOwn(k)) return t(k);
  return prop.description || resolve(prop).description || "";
}

// ---------------------------------------------------------------- the form

function openForm(room) {
  const editing = Boolean(room);
  $("room-dialog").dataset.mode = editing ? "edit" : "add";
  $("room-id").value = editing ? room.room_id : "";
  $("room-id").readOnly = editing;
  $("room-error").textContent = "";
  $("room-json").open = false;
  const root = resolve(schema);
  const built = buildFields(root, "", editing ? room.settings : {}, defaults);
  formFields = built.fields;
  $("room-fields").replaceChildren(built.wrap);
  translateForm();
  $("room-dialog").showModal();
  (editing ? $("room-fields").querySelector("input, select, textarea") : $("room-id"))?.focus();
}

function buildFields(node, prefix, values, inherited) {
  const wrap = el("div", { className: "fields" });
  const fields = [];
  for (const [key, prop] of Object.entries(node.properties || {})) {
    const path = prefix ? `${prefix}.${key}` : key;
    const kind = kindOf(prop);
    const value = values?.[key];
    const inherit = inherited?.[key];
    if (kind.kind === "group") {
      const inner = buildFields(kind.node, path, value, inherit);
      fields.push({ path, key, kind: "group", children: inner.fields });
      wrap.append(el("fieldset", { className: "group", dataset: { path } },
        el("legend", { dataset: { label: path, key } }), inner.wrap));
      continue;
    }
    const input = control(kind, path, value, inherit);
    fields.push({ path, key, ...kind, input, inherit, prop });
    wrap.append(el("label", { className: "field", dataset: { path } },
      el("span", { className: "name", dataset: { label: path, key } }), input,
      el("small", { className: "help", dataset: { help: path, key } })));
  }
  return { wrap, fields };
}

function control(kind, path, value, inherit) {
  const props = { name: path, dataset: { path } };
  if (kind.kind === "bool" || kind.kind === "enum") {
    const select = el("select", props, el("option", { value: "" }));
    const choices = kind.kind === "bool" ? [true, false] : kind.values;
    for (const choice of choices) select.append(el("option", { value: String(choice), dataset: { choice: String(choice) } }));
    select.value = value === undefined || value === null ? "" : String(value);
    return select;
  }
  if (kind.kind === "number") {
    return el("input", { ...props, type: "number", step: kind.integer ? "1" : "any", min: kind.min, max: kind.max, value: value ?? "" });
  }
  if (kind.kind === "json" || path.endsWith("desc_template")) {
    const text = kind.kind === "json" ? (value == null ? "" : JSON.stringify(value)) : (value ?? "");
    return el("textarea", { ...props, rows: 2, value: text });
  }
  const text = Array.isArray(value) ? value.join(", ") : (value ?? "");
  const input = el("input", { ...props, type: "text", value: text });
  if (path === "account") input.setAttribute("list", "account-names");
  return input;
}

// Labels, help, placeholders and choices in the current language.
function translateForm() {
  const dialog = $("room-dialog");
  $("room-dialog-title").textContent = t(dialog.dataset.mode === "edit" ? "rooms.editTitle" : "rooms.addTitle");
  for (const node of dialog.querySelectorAll("[data-label]")) node.textContent = fieldLabel(node.dataset.label, node.dataset.key);
  const walk = (fields) => {
    for (const f of fields) {
      if (f.kind === "group") { walk(f.children); continue; }
      const helpNode = dialog.querySelector(`[data-help="${CSS.escape(f.path)}"]`);
      if (helpNode) helpNode.textContent = helpText(f.path, f.key, f.prop);
      const inherited = t("room.inherit", { value: show(f.inherit) });
      if (f.input.tagName === "SELECT") {
        for (const option of f.input.options) {
          const choice = option.dataset.choice;
          option.textContent = choice === undefined ? inherited
            : f.kind === "bool" ? t(choice === "true" ? "room.yes" : "room.no") : word("room.value", choice);
        }
      } else {
        f.input.placeholder = inherited;
      }
    }
  };
  walk(formFields);
}

class FieldError extends Error {
  constructor(path, message) { super(`${path}: ${message}`); this.path = path; }
}

// The form's values as the API takes them: only what is filled in.
function collect(fields) {
  const out = {};
  for (const f of fields) {
    if (f.kind === "group") {
      const inner = collect(f.children);
      if (Object.keys(inner).length) out[f.key] = inner;
      continue;
    }
    const raw = f.input.value.trim();
    if (raw === "") continue;
    if (f.kind === "bool") out[f.key] = raw === "true";
    else if (f.kind === "number") {
      const number = Number(raw);
      if (!isFinite(number)) throw new FieldError(f.path, t("room.notNumber"));
      out[f.key] = number;
    } else if (f.kind === "json") {
      try { out[f.key] = JSON.parse(raw); } catch { throw new FieldError(f.path, t("room.notJson")); }
    } else out[f.key] = f.input.value;
  }
  return out;
}

function markInvalid(message) {
  $("room-error").textContent = message;
  const path = message.split(":")[0].trim();
  const target = path === "room_id" || path === "room id" ? $("room-id")
    : $("room-fields").querySelector(`[name="${CSS.escape(path)}"]`);
  if (target) {
    target.classList.add("invalid");
    target.setAttribute("aria-invalid", "true");
    target.focus();
  }
}

async function save(event) {
  event.preventDefault();
  for (const node of $("room-dialog").querySelectorAll(".invalid")) {
    node.classList.remove("invalid");
    node.removeAttribute("aria-invalid");
  }
  $("room-error").textContent = "";
  const id = $("room-id").value.trim();
  if (!/^\d+$/.test(id)) {
    markInvalid(`room id: ${t("rooms.idNumber")}`);
    return;
  }
  let body;
  try {
    body = $("room-json").open ? JSON.parse($("room-json-text").value || "{}") : collect(formFields);
  } catch (err) {
    markInvalid(err instanceof FieldError ? err.message : `JSON: ${t("room.notJson")}`);
    return;
  }
  try {
    await api("PUT", `/api/manage/rooms/${encodeURIComponent(id)}`, body);
  } catch (err) {
    if (err.status !== 401) markInvalid(err.message);
    return;
  }
  $("room-dialog").close();
  notice(t("rooms.saved", { id }));
  await load();
}

export function init() {
  $("rooms-add").addEventListener("click", () => openForm(null));
  $("room-form").addEventListener("submit", save);
  $("room-cancel").addEventListener("click", () => $("room-dialog").close());
  $("room-json").addEventListener("toggle", () => {
    if (!$("room-json").open) return;
    let current = {};
    try { current = collect(formFields); } catch { /* keep what the form could give */ }
    $("room-json-text").value = JSON.stringify(current, null, 2);
  });
}
