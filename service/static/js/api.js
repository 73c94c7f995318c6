// The public HTTP API, and problem+json documents turned into sentences.
// Paths are relative, so the page also works behind a reverse proxy under a prefix.

import { el } from "./dom.js";

export class ApiError extends Error {
  constructor(status, problem, fallback) {
    super(problem?.detail || fallback || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

/** `fetch` + JSON decoding; throws `ApiError` with the problem document for non-2xx answers. */
export async function api(path, { method = "GET", json, form, apiKey, signal } = {}) {
  const headers = { Accept: "application/json, application/problem+json" };
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form; // the browser sets the multipart boundary
  }
  if (apiKey) headers["X-API-Key"] = apiKey;
  let response;
  try {
    response = await fetch(path, { method, headers, body, signal });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, null, "Cannot reach the service. Check that it is running and that this computer can reach it.");
  }
  const type = response.headers.get("content-type") || "";
  const payload = type.includes("json") ? await response.json().catch(() => null) : await response.text();
  if (!response.ok) {
    const problem = payload && typeof payload === "object" ? payload : null;
    const text = typeof payload === "string" && payload.length < 300 ? payload : "";
    throw new ApiError(response.status, problem, text || `${response.status} ${response.statusText}`);
  }
  return payload;
}

const HINTS = {
  401: "Check the API key.",
  403: "This server has no API keys configured, so jobs cannot be started here.",
  413: "Send fewer or smaller files at once.",
  429: "The service is busy. Try again in a moment.",
  503: "The service is still starting, or has no model loaded.",
  504: "The service took too long to answer. Try again.",
};

/** Nodes that say what went wrong, in words: title, detail, per-file or per-field reasons. */
export function describeError(error, context = "") {
  if (!(error instanceof ApiError)) {
    return [el("span", { class: "alert-title" }, context || "Something went wrong"), ` ${error.message || error}`];
  }
  const p = error.problem;
  const title = p.title || (error.status ? `Request failed (${error.status})` : "Cannot reach the service");
  const nodes = [el("span", { class: "alert-title" }, context ? `${context}: ${title}` : title)];
  if (p.detail && !Array.isArray(p.files)) nodes.push(el("div", {}, sentence(p.detail)));
  else if (!p.title) nodes.push(el("div", {}, sentence(error.message)));
  const items = problemItems(p);
  if (items.length) nodes.push(el("ul", {}, items.map((t) => el("li", {}, t))));
  const hint = HINTS[error.status];
  if (hint) nodes.push(el("div", { class: "hint" }, hint));
  return nodes;
}

function problemItems(p) {
  if (Array.isArray(p.files)) {
    return p.files.map((f) => `${f.file || f.id}: ${fileReason(f.error)}`);
  }
  if (Array.isArray(p.errors)) {
    return p.errors.slice(0, 8).map((e) => (e.loc ? `${e.loc}: ${e.msg}` : e.msg || String(e)));
  }
  return [];
}

/** A file's problem as a sentence, without repeating the file name the server put in front. */
export function fileReason(problem) {
  if (!problem) return "could not be used";
  const detail = String(problem.detail || problem.title || "could not be used");
  const file = problem.file ? `${problem.file}: ` : "";
  return sentence(file && detail.startsWith(file) ? detail.slice(file.length) : detail);
}

function sentence(text) {
  const t = String(text).trim();
  return t ? t[0].toUpperCase() + t.slice(1) + (/[.!?]$/.test(t) ? "" : ".") : t;
}

/** Plain-language reading of a preprocessing warning (`code: explanation` from the service). */
export function warningText(warning) {
  const text = String(warning);
  const colon = text.indexOf(": ");
  return sentence(colon > 0 && /^[a-z_]+$/.test(text.slice(0, colon)) ? text.slice(colon + 2) : text);
}

export const encode = encodeURIComponent;
