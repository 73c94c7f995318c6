// Models and versions from `GET v1/models`, shown in pairs of <select>s (header and job form).

import { api } from "./api.js";
import { el } from "./dom.js";

export class Models {
  constructor() {
    this.list = [];
    this.defaultModel = "";
    this.ready = false;
  }

  async load() {
    const body = await api("v1/models");
    this.list = body.models || [];
    this.defaultModel = body.default_model || "";
    this.ready = Boolean(body.ready);
    return this;
  }

  find(name) {
    return this.list.find((m) => m.name === name) || null;
  }

  /** The grid of `name` at `version` (the active version when empty). */
  grid(name, version) {
    const model = this.find(name);
    if (!model) return null;
    const v = model.versions.find((x) => x.version === (version || model.active_version));
    return (v && v.grid) || model.grid || null;
  }
}

/** Keep a model <select> and its version <select> filled and consistent. */
export class ModelPicker {
  constructor(modelSelect, versionSelect, { onChange } = {}) {
    this.modelSelect = modelSelect;
    this.versionSelect = versionSelect;
    this.onChange = onChange || (() => {});
    modelSelect.addEventListener("change", () => {
      this.fillVersions();
      this.onChange(this.value);
    });
    versionSelect.addEventListener("change", () => this.onChange(this.value));
  }

  fill(models) {
    this.models = models;
    const previous = this.modelSelect.value;
    const options = models.list.map((m) =>
      el("option", { value: m.name }, m.name + (m.name === models.defaultModel ? " (default)" : "")));
    this.modelSelect.replaceChildren(...options);
    if (!options.length) this.modelSelect.append(el("option", { value: "" }, "No models"));
    const names = models.list.map((m) => m.name);
    this.modelSelect.value = names.includes(previous) ? previous
      : names.includes(models.defaultModel) ? models.defaultModel : names[0] || "";
    this.modelSelect.disabled = !names.length;
    this.fillVersions();
  }

  fillVersions() {
    const model = this.models?.find(this.modelSelect.value);
    const previous = this.versionSelect.value;
    const options = [];
    if (model) {
      const active = model.active_version ? `active (v${model.active_version})` : "active (none loaded)";
      options.push(el("option", { value: "" }, active));
      for (const v of [...model.versions].reverse()) {
        const notes = [v.active ? "active" : "", v.classes ? `${v.classes} classes` : "", v.error ? "unreadable" : ""]
          .filter(Boolean).join(", ");
        options.push(el("option", { value: v.version, disabled: Boolean(v.error), title: v.error || undefined },
          `v${v.version}${notes ? ` · ${notes}` : ""}`));
      }
    }
    this.versionSelect.replaceChildren(...options);
    const values = options.map((o) => o.value);
    this.versionSelect.value = values.includes(previous) ? previous : "";
    this.versionSelect.disabled = !model;
  }

  get value() {
    return { model: this.modelSelect.value || null, version: this.versionSelect.value || null };
  }
}
