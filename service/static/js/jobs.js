// The Fine-tune jobs view: GET v1/finetune-jobs (auto-refreshed), per-job log and cancel, and
// the form that POSTs an archive (multipart: `archive` + `spec` JSON). Every jobs request needs
// an API key (X-API-Key); it is kept in memory, or in sessionStorage when the user asks.

import { ApiError, api, describeError, encode } from "./api.js";
import { $, el, formatDate, setAlert } from "./dom.js";
import { ModelPicker } from "./models.js";

const REFRESH_MS = 3000;
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const KEY_STORAGE = "raman.apiKey";

export class JobsView {
  constructor({ onModelsChanged } = {}) {
    this.timer = null;
    this.visible = false;
    this.log = null; // {id, after}
    this.finished = new Set();
    this.onModelsChanged = onModelsChanged || (() => {});
    this.picker = new ModelPicker($("#ft-base-model"), $("#ft-base-version"));
    this.restoreKey();
    $("#jobs-key").addEventListener("change", () => {
      this.storeKey();
      this.refresh();
    });
    $("#jobs-key-remember").addEventListener("change", () => this.storeKey());
    $("#jobs-refresh").addEventListener("click", () => this.refresh());
    $("#jobs-auto").addEventListener("change", () => this.schedule());
    $("#job-log-close").addEventListener("click", () => this.closeLog());
    $("#finetune-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.submit();
    });
    document.addEventListener("visibilitychange", () => this.schedule());
  }

  get apiKey() {
    return $("#jobs-key").value.trim();
  }

  restoreKey() {
    const saved = sessionStorage.getItem(KEY_STORAGE);
    if (saved) {
      $("#jobs-key").value = saved;
      $("#jobs-key-remember").checked = true;
    }
  }

  storeKey() {
    if ($("#jobs-key-remember").checked && this.apiKey) sessionStorage.setItem(KEY_STORAGE, this.apiKey);
    else sessionStorage.removeItem(KEY_STORAGE);
  }

  setModels(models) {
    this.picker.fill(models);
  }

  show(visible) {
    this.visible = visible;
    if (visible) this.refresh();
    else this.schedule();
  }

  schedule() {
    clearTimeout(this.timer);
    this.timer = null;
    if (this.visible && this.apiKey && $("#jobs-auto").checked && !document.hidden) {
      this.timer = setTimeout(() => this.refresh(), REFRESH_MS);
    }
  }

  async refresh() {
    $("#jobs-locked").hidden = Boolean(this.apiKey);
    if (!this.apiKey) {
      this.render(null);
      setAlert($("#jobs-error"), null);
      return;
    }
    try {
      const body = await api("v1/finetune-jobs", { apiKey: this.apiKey });
      setAlert($("#jobs-error"), null);
      this.render(body.jobs || []);
      if (this.log) await this.loadLog();
    } catch (error) {
      this.render(null);
      const missing = error instanceof ApiError && error.status === 404 && !error.problem.type?.includes("job");
      setAlert($("#jobs-error"), missing
        ? [el("span", { class: "alert-title" }, "Fine-tune jobs are not available on this server.")]
        : describeError(error, "Could not load the jobs"));
    } finally {
      this.schedule();
    }
  }

  render(jobs) {
    $("#jobs-empty").hidden = !jobs || jobs.length > 0;
    $("#jobs-body").replaceChildren(...(jobs || []).map((job) => this.row(job)));
    // A job that succeeds while we watch has registered a version: reload the model lists.
    const fresh = (jobs || []).filter((j) => j.state === "succeeded" && !this.finished.has(j.id));
    for (const j of fresh) this.finished.add(j.id);
    if (fresh.length && this.primed) this.onModelsChanged();
    if (jobs) this.primed = true;
  }

  row(job) {
    const base = job.base ? `${job.base.name} v${job.base.version}` : "–";
    const result = job.result
      ? `${job.result.model} v${job.result.version}${job.result.activated ? " (active)" : ""}`
      : TERMINAL.has(job.state) ? "–" : `→ ${job.output_model || "?"}`;
    const note = job.error || job.result?.note || "";
    return el("tr", { dataset: { job: job.id, state: job.state } },
      el("td", { class: "id", title: job.id }, job.id.slice(0, 8)),
      el("td", {}, el("span", { class: `state state-${job.state}` }, job.state),
        note ? el("span", { class: "job-message" }, note) : null),
      el("td", {}, progressCell(job)),
      el("td", {}, base),
      el("td", {}, result),
      el("td", { class: "nowrap" }, formatDate(job.created_at, true)),
      el("td", { class: "actions" },
        el("button", { type: "button", class: "btn btn-small", onclick: () => this.openLog(job.id),
          "aria-label": `Show the log of job ${job.id}` }, "Log"),
        TERMINAL.has(job.state) ? null : el("button", {
          type: "button", class: "btn btn-small btn-danger", disabled: job.cancel_requested || undefined,
          onclick: () => this.cancel(job.id), "aria-label": `Cancel job ${job.id}`,
        }, job.cancel_requested ? "Cancelling…" : "Cancel")));
  }

  async openLog(id) {
    this.log = { id, after: 0 };
    $("#job-log").textContent = "";
    $("#job-log-title").textContent = `Log of job ${id.slice(0, 8)}`;
    $("#job-log-box").hidden = false;
    await this.loadLog();
    $("#job-log-box").scrollIntoView({ behavior: "smooth", block: "nearest" });
  }

  async loadLog() {
    const { id, after } = this.log;
    try {
      const body = await api(`v1/finetune-jobs/${encode(id)}/log?after=${after}`, { apiKey: this.apiKey });
      if (this.log?.id !== id) return;
      const pre = $("#job-log");
      const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.append(body.lines.map((l) => `${formatDate(l.at)}  ${l.message}\n`).join(""));
      this.log.after = body.next_after;
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    } catch (error) {
      $("#job-log").textContent = describeError(error, "Could not load the log").map((n) => n.textContent).join(" ");
    }
  }

  closeLog() {
    this.log = null;
    $("#job-log-box").hidden = true;
  }

  async cancel(id) {
    try {
      await api(`v1/finetune-jobs/${encode(id)}/cancel`, { method: "POST", apiKey: this.apiKey });
      setAlert($("#jobs-error"), null);
    } catch (error) {
      setAlert($("#jobs-error"), describeError(error, `Could not cancel job ${id.slice(0, 8)}`));
    }
    await this.refresh();
  }

  spec() {
    const { model, version } = this.picker.value;
    const hyper = { freeze: $("#ft-freeze").value || "none" };
    const epochs = $("#ft-epochs").value;
    const lr = $("#ft-lr").value;
    if (epochs) hyper.epochs = Number.parseInt(epochs, 10);
    if (lr) hyper.learning_rate = Number(lr);
    const spec = { hyperparameters: hyper, activate: $("#ft-activate").checked };
    if (model) spec.base_model = model;
    if (version) spec.base_version = version;
    const output = $("#ft-output").value.trim();
    if (output) spec.output_model = output;
    return spec;
  }

  async submit() {
    const archive = $("#ft-archive").files[0];
    const problems = [];
    if (!this.apiKey) problems.push("Enter the API key at the top of this page: starting a job changes the server.");
    if (!archive) problems.push("Choose a .zip or .tar.gz archive of labelled spectra.");
    setAlert($("#ft-ok"), null);
    if (problems.length) {
      setAlert($("#ft-error"), [el("span", { class: "alert-title" }, "Cannot start the job yet"),
        el("ul", {}, problems.map((p) => el("li", {}, p)))]);
      return;
    }
    const form = new FormData();
    form.append("archive", archive, archive.name);
    form.append("spec", JSON.stringify(this.spec()));
    $("#ft-submit").disabled = true;
    try {
      const job = await api("v1/finetune-jobs", { method: "POST", form, apiKey: this.apiKey });
      setAlert($("#ft-error"), null);
      const data = job.data || {};
      const counts = data.spectra ? `: ${data.spectra} spectra of ${data.classes} classes` : "";
      setAlert($("#ft-ok"), `Job ${job.id.slice(0, 8)} is ${job.state}${counts}.`);
      $("#ft-archive").value = "";
      await this.refresh();
    } catch (error) {
      setAlert($("#ft-error"), describeError(error, "The job was not started"));
    } finally {
      $("#ft-submit").disabled = false;
    }
  }
}

function progressCell(job) {
  const p = job.progress || {};
  const fraction = job.state === "succeeded" ? 1 : p.epochs ? Math.min(1, (p.epoch || 0) / p.epochs) : 0;
  const bar = el("span");
  bar.style.width = `${(100 * fraction).toFixed(1)}%`;
  const epochs = p.epochs ? `epoch ${p.epoch || 0}/${p.epochs}` : "";
  const stage = p.stage && p.stage !== "done" ? p.stage : job.state === "queued" ? "waiting for a worker" : "";
  const accuracy = typeof p.best_val_accuracy === "number" ? `val. acc. ${(100 * p.best_val_accuracy).toFixed(0)}%` : "";
  const label = [stage, epochs, accuracy].filter(Boolean).join(" · ");
  return el("div", { title: label },
    el("div", { class: "progress" },
      el("div", { class: "progress-track", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
        "aria-valuenow": Math.round(100 * fraction), "aria-label": `Progress of job ${job.id.slice(0, 8)}` }, bar),
      el("span", { class: "progress-text" }, `${Math.round(100 * fraction)}%`)),
    label ? el("span", { class: "job-message" }, label) : null);
}
