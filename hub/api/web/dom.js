// Building the page: elements, SVG, tables that update rows in place.
// Every value is written with textContent or an attribute, never parsed as HTML.

export const $ = (id) => document.getElementById(id);

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  assign(node, props);
  for (const child of children) if (child != null) node.append(child);
  return node;
}

function assign(node, props) {
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined) continue;
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node && !(node instanceof SVGElement)) node[key] = value;
    else node.setAttribute(key, value);
  }
}

// The SVG namespace is a name, not an address: nothing is fetched from it.
const SVG_NS = "http://www.w3.org/2000/svg";

export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "textContent") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (value !== undefined) node.setAttribute(key, value);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

// Keep one <tr> per key and update its cells in place: a progress bar stays the same
// element as it moves, and a button is never swapped out from under a click.
export function syncRows(tbody, items, keyOf, make, update, emptyId) {
  const rows = new Map([...tbody.children].map((tr) => [tr.dataset.key, tr]));
  items.forEach((item, index) => {
    const key = String(keyOf(item));
    let tr = rows.get(key);
    if (!tr) {
      tr = make(item);
      tr.dataset.key = key;
    }
    rows.delete(key);
    update(tr, item);
    if (tbody.children[index] !== tr) tbody.insertBefore(tr, tbody.children[index] || null);
  });
  for (const stale of rows.values()) stale.remove();
  if (emptyId) $(emptyId).hidden = items.length > 0;
}

export function cells(tr, names) {
  tr.cells_ = {};
  for (const name of names) {
    const td = el("td", { className: `col-${name}` });
    tr.cells_[name] = td;
    tr.append(td);
  }
  return tr.cells_;
}

export function badge(td, value, label) {
  td.replaceChildren(el("span", { className: `badge badge-${value}`, dataset: { value } }, label));
}

export function button(label, onClick, extra = {}) {
  return el("button", { type: "button", textContent: label, onclick: onClick, ...extra });
}
