// Small DOM helpers: element creation without innerHTML (no injection from file names or labels).

/** `el("div", {class: "x", onclick: fn}, child, "text")` */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      node.className = value;
    } else if (key === "dataset") {
      Object.assign(node.dataset, value);
    } else {
      node.setAttribute(key, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export const $ = (selector, root = document) => root.querySelector(selector);

/** Show `content` (text, node or list of nodes) in an alert element, or hide it when empty. */
export function setAlert(node, content) {
  node.replaceChildren();
  if (!content) {
    node.hidden = true;
    return;
  }
  node.append(...(Array.isArray(content) ? content : [content]));
  node.hidden = false;
}

/** `97.3%`, `100%`, `<0.1%`. */
export function percent(p) {
  if (p > 0 && p < 0.001) return "<0.1%";
  return `${(100 * p).toFixed(p >= 0.995 || p === 0 ? 0 : 1)}%`;
}

/** A local date and time; `compact` drops the year (tables). */
export function formatDate(text, compact = false) {
  if (!text) return "–";
  const d = new Date(text);
  if (Number.isNaN(d.getTime())) return String(text);
  if (compact) return d.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}
