// The Identify view: drop or pick files (or paste two columns) -> POST v1/identify/files ->
// result cards (hits with probability bars, match badge, warnings, sparkline) -> detail plot
// with the chosen hit's reference spectrum (GET v1/models/{m}/references/{label}) overlaid.

import { ApiError, api, describeError, encode, fileReason, warningText } from "./api.js";
import { $, el, percent, setAlert } from "./dom.js";
import { SpectrumPlot, sparkline } from "./plot.js";
import { gridAxis, minmax, parseColumns, resample } from "./spectrum.js";

const FILES_PER_REQUEST = 32; // the service accepts 64 by default; smaller requests answer sooner
const PREVIEW_BYTES = 5 * 1024 * 1024;

export class IdentifyView {
  constructor({ models, picker }) {
    this.models = models;
    this.picker = picker;
    this.entries = [];
    this.selected = null;
    this.references = new Map();
    this.busy = false;
    this.error = $("#identify-error");
    this.list = $("#results");
    this.plot = new SpectrumPlot($("#plot"), {
      onZoomChange: (zoomed) => { $("#zoom-reset").disabled = !zoomed; },
    });
    this.bind();
  }

  bind() {
    const zone = $("#dropzone");
    const input = $("#file-input");
    zone.addEventListener("click", () => input.click());
    zone.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        input.click();
      }
    });
    input.addEventListener("change", () => {
      const files = [...input.files];
      input.value = "";
      if (files.length) this.identifyFiles(files);
    });
    for (const type of ["dragenter", "dragover"]) {
      zone.addEventListener(type, (e) => { e.preventDefault(); zone.classList.add("dragover"); });
    }
    for (const type of ["dragleave", "drop"]) {
      zone.addEventListener(type, () => zone.classList.remove("dragover"));
    }
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      const files = [...(e.dataTransfer?.files || [])];
      if (files.length) this.identifyFiles(files);
    });
    // A file dropped next to the zone must not make the browser navigate away from the page.
    window.addEventListener("dragover", (e) => e.preventDefault());
    window.addEventListener("drop", (e) => e.preventDefault());
    $("#paste-submit").addEventListener("click", () => this.identifyPasted());
    $("#zoom-reset").addEventListener("click", () => this.plot.resetZoom());
    $("#overlay-clear").addEventListener("click", () => this.setOverlay(null));
  }

  topK() {
    const k = Number.parseInt($("#top-k").value, 10);
    return Number.isFinite(k) && k >= 1 ? Math.min(k, 50) : 5;
  }

  identifyPasted() {
    const text = $("#paste-text").value;
    if (!parseColumns(text)) {
      setAlert(this.error, [el("span", { class: "alert-title" }, "Nothing to identify"),
        el("div", {}, "Paste two columns of numbers: wavenumber (cm⁻¹) and intensity, one pair per line.")]);
      return;
    }
    this.identifyFiles([new File([text], "pasted spectrum.txt", { type: "text/plain" })]);
  }

  async identifyFiles(files) {
    if (this.busy) return;
    this.setBusy(true, files.length);
    setAlert(this.error, null);
    const entries = [];
    try {
      for (let i = 0; i < files.length; i += FILES_PER_REQUEST) {
        const chunk = files.slice(i, i + FILES_PER_REQUEST);
        entries.push(...(await this.send(chunk)));
      }
    } catch (error) {
      setAlert(this.error, describeError(error, files.length === 1 ? `Could not identify ${files[0].name}` : ""));
    } finally {
      this.setBusy(false);
    }
    if (entries.length) this.render(entries);
    else this.summarise();
  }

  async send(files) {
    const form = new FormData();
    for (const file of files) form.append("files", file, file.name);
    form.append("top_k", String(this.topK()));
    const { model, version } = this.picker.value;
    if (model) form.append("model", model);
    if (version) form.append("version", version);
    form.append("include_spectrum", "true"); // returns the model input where the server supports it
    const body = await api("v1/identify/files", { method: "POST", form });
    const byName = new Map(files.map((f) => [f.name, f]));
    return Promise.all(body.results.map((r, i) => this.entry(r, body.model, byName.get(r.file), i)));
  }

  /** One result with what is needed to plot it on the model grid. */
  async entry(result, modelRef, file, index) {
    const entry = { result, model: modelRef, key: `${Date.now()}-${index}-${result.id}`, x: null, y: null };
    if (result.error) return entry;
    const grid = this.models.grid(modelRef.name, modelRef.version);
    const server = result.spectrum;
    if (server && Array.isArray(server.intensities)) {
      entry.x = server.wavenumbers || (grid && gridAxis(grid));
      entry.y = server.intensities;
      entry.measured = server.measured_range || server.measured || null;
      entry.seen = "as the model saw it";
    } else if (grid && file && file.size <= PREVIEW_BYTES && result.id === result.file) {
      const parsed = parseColumns(await file.text());
      const preview = parsed && resample(parsed, gridAxis(grid));
      if (preview) {
        Object.assign(entry, { x: gridAxis(grid), y: preview.y, measured: preview.measured });
        entry.seen = "resampled onto the model grid";
      }
    }
    return entry;
  }

  setBusy(busy, count = 0) {
    this.busy = busy;
    $("#dropzone").classList.toggle("busy", busy);
    $("#paste-submit").disabled = busy;
    this.list.setAttribute("aria-busy", String(busy));
    if (busy) $("#results-summary").textContent = `Identifying ${count} file${count === 1 ? "" : "s"}…`;
  }

  render(entries) {
    this.entries = entries;
    this.references.clear();
    this.list.replaceChildren(...entries.map((entry) => this.card(entry)));
    $("#results-empty").hidden = entries.length > 0;
    const ok = this.summarise();
    for (const entry of ok) {
      if (entry.y) sparkline(entry.node.querySelector(".spark"), entry.x, entry.y);
    }
    const first = ok[0];
    if (first) this.select(first);
    else this.clearPlot();
  }

  /** The count line above the cards; returns the usable entries. */
  summarise() {
    const ok = this.entries.filter((e) => !e.result.error);
    const matched = ok.filter((e) => e.result.match).length;
    const failed = this.entries.length - ok.length;
    $("#results-summary").textContent = !this.entries.length ? ""
      : `${ok.length} spectr${ok.length === 1 ? "um" : "a"}, ${matched} matched` +
        (failed ? `, ${failed} file${failed === 1 ? "" : "s"} not usable` : "");
    return ok;
  }

  card(entry) {
    const r = entry.result;
    if (r.error) {
      entry.node = el("li", { class: "result failed" },
        el("div", { class: "result-head" },
          el("div", { class: "result-name" }, r.file || r.id),
          el("span", { class: "badge badge-error" }, "Not usable")),
        el("p", { class: "file-error" }, fileReason(r.error)));
      return entry.node;
    }
    const rule = r.no_match_rule || "";
    const badge = r.match
      ? el("span", { class: "badge badge-match", title: rule, tabindex: 0 }, "✓ Match",
        el("span", { class: "visually-hidden" }, `. Rule: ${rule}`))
      : el("span", { class: "badge badge-nomatch", title: rule, tabindex: 0 }, "No confident match",
        el("span", { class: "visually-hidden" }, `. Rule: ${rule}`));
    const name = r.file && r.file !== r.id ? `${r.id}` : r.id;
    entry.node = el("li", {
      class: `result${r.match ? " is-match" : ""}`, tabindex: 0,
      "aria-label": `${name}: ${r.match ? "match" : "no confident match"}, top hit ${r.predictions[0]?.label ?? "none"}`,
      onclick: () => this.select(entry),
      onkeydown: (e) => { if (e.key === "Enter" && e.target === entry.node) this.select(entry); },
    },
    el("div", { class: "result-head" },
      el("div", {}, el("div", { class: "result-name" }, name), el("div", { class: "result-sub" }, this.rangeText(entry))),
      badge),
    el("div", { class: "spark", "aria-hidden": "true" }),
    r.warnings.length ? el("ul", { class: "warnings", "aria-label": "Warnings" }, r.warnings.map((w) => el("li", {}, warningText(w)))) : null,
    el("ol", { class: "hits", "aria-label": "Top hits" }, r.predictions.map((p) => el("li", {}, this.hitButton(entry, p)))));
    return entry.node;
  }

  rangeText(entry) {
    const parts = [];
    if (entry.measured) parts.push(`Measured ${fmt(entry.measured[0])}–${fmt(entry.measured[1])} cm⁻¹`);
    if (typeof entry.result.coverage === "number") parts.push(`covers ${percent(entry.result.coverage)} of the model grid`);
    return parts.join(" · ");
  }

  hitButton(entry, p) {
    const bar = el("span");
    bar.style.width = `${Math.max(0.5, 100 * p.probability)}%`;
    return el("button", {
      type: "button", class: "hit", "aria-pressed": "false", dataset: { label: p.label },
      title: `Overlay the reference spectrum of ${p.label}`,
      onclick: (e) => { e.stopPropagation(); this.toggleOverlay(entry, p.label); },
    },
    el("span", { class: "hit-rank" }, `${p.rank}.`),
    el("span", { class: "hit-label" }, p.label),
    el("span", { class: "hit-sim", title: "Similarity of the spectrum to this label's best-matching reference spectrum (the model's metric, named in its no-match rule)" },
      `similarity ${p.similarity.toFixed(2)}`),
    el("span", { class: "hit-prob", title: "Calibrated probability" }, percent(p.probability)),
    el("span", { class: "hit-bar", "aria-hidden": "true" }, bar));
  }

  select(entry) {
    if (this.selected !== entry) {
      this.selected?.node.classList.remove("selected");
      this.selected = entry;
      entry.node.classList.add("selected");
      entry.overlay = entry.overlay || null;
    }
    this.draw();
  }

  async toggleOverlay(entry, label) {
    this.select(entry);
    await this.setOverlay(entry.overlay === label ? null : label);
  }

  async setOverlay(label) {
    const entry = this.selected;
    if (!entry) return;
    entry.overlay = label;
    for (const b of entry.node.querySelectorAll(".hit")) b.setAttribute("aria-pressed", String(b.dataset.label === label));
    if (label) {
      try {
        await this.reference(entry.model, label);
      } catch (error) {
        entry.overlay = null;
        setAlert(this.error, describeError(error, `Could not load the reference spectrum of ${label}`));
      }
    }
    this.draw();
    if (label && window.matchMedia("(max-width: 860px)").matches) $("#plot").scrollIntoView({ behavior: "smooth" });
  }

  async reference(model, label) {
    const key = `${model.name}/${model.version}/${label}`;
    if (!this.references.has(key)) {
      const path = `v1/models/${encode(model.name)}/references/${encode(label)}?version=${encode(model.version)}`;
      this.references.set(key, api(path).catch((e) => { this.references.delete(key); throw e; }));
    }
    return this.references.get(key);
  }

  async draw() {
    const entry = this.selected;
    $("#overlay-clear").disabled = !entry?.overlay;
    if (!entry) return;
    const r = entry.result;
    $("#plot-title").textContent = r.id;
    const model = `${entry.model.name} v${entry.model.version}`;
    const top = r.predictions[0];
    $("#plot-meta").textContent = [model, entry.seen || "", this.rangeText(entry),
      top ? `top hit ${top.label} (${percent(top.probability)})` : ""].filter(Boolean).join(" · ");
    if (!entry.y) {
      this.clearPlot(`No preview for ${r.id}: this server does not return the resampled spectrum, and this file format cannot be read in the browser.`);
      return;
    }
    let reference = null;
    if (entry.overlay) {
      const ref = await this.reference(entry.model, entry.overlay).catch(() => null);
      if (ref && this.selected === entry && entry.overlay === ref.label) {
        const y = ref.intensities.length === entry.x.length ? ref.intensities : interpolate(ref.wavenumbers, ref.intensities, entry.x);
        reference = { label: `Reference: ${ref.label}`, y: minmax(y) };
      }
    }
    if (this.selected !== entry) return;
    $("#plot-empty").hidden = true;
    this.plot.show({ key: entry.key, x: entry.x, y: entry.y, label: `Query: ${shorten(r.id, 48)}` }, reference);
  }

  clearPlot(message) {
    this.plot.clear();
    const empty = $("#plot-empty");
    if (message) empty.textContent = message;
    empty.hidden = false;
    $("#zoom-reset").disabled = true;
  }
}

function shorten(text, n) {
  return text.length <= n ? text : `${text.slice(0, n - 13)}…${text.slice(-12)}`;
}

function fmt(v) {
  return Number(v).toFixed(Math.abs(v) >= 100 ? 0 : 1);
}

function interpolate(xs, ys, at) {
  let j = 0;
  return at.map((x) => {
    if (x < xs[0] || x > xs[xs.length - 1]) return 0;
    while (j < xs.length - 2 && xs[j + 1] < x) j += 1;
    const t = (x - xs[j]) / (xs[j + 1] - xs[j] || 1);
    return ys[j] + t * (ys[j + 1] - ys[j]);
  });
}

export { ApiError };
