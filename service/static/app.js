// Entry point of the page: tabs, service status, model selectors, and the two views.
// The page talks to the service only through its public HTTP API (see /docs).

import { api, describeError } from "./js/api.js";
import { $, setAlert } from "./js/dom.js";
import { IdentifyView } from "./js/identify.js";
import { JobsView } from "./js/jobs.js";
import { ModelPicker, Models } from "./js/models.js";

const models = new Models();
const picker = new ModelPicker($("#model-select"), $("#version-select"));
let identify = null;
let jobs = null;

function setStatus(state, text) {
  const status = $("#service-status");
  status.classList.toggle("ready", state === "ready");
  status.classList.toggle("down", state === "down");
  status.querySelector(".text").textContent = text;
}

async function loadModels() {
  try {
    await models.load();
    picker.fill(models);
    jobs?.setModels(models);
    setAlert($("#banner"), null);
    const active = models.find(picker.value.model);
    const provider = active?.provider ? active.provider.replace("ExecutionProvider", "") : "";
    if (models.ready) setStatus("ready", `Ready${provider ? ` · ${provider}` : ""}`);
    else setStatus("down", "No model loaded");
    if (!models.list.length) {
      setAlert($("#banner"), "The service has no models in its model store, so nothing can be identified yet.");
    }
  } catch (error) {
    setStatus("down", "Unavailable");
    setAlert($("#banner"), describeError(error, "Cannot load the list of models"));
  }
}

function selectTab(tab) {
  for (const t of document.querySelectorAll('[role="tab"]')) {
    const selected = t === tab;
    t.setAttribute("aria-selected", String(selected));
    t.tabIndex = selected ? 0 : -1;
    $(`#${t.getAttribute("aria-controls")}`).hidden = !selected;
  }
  jobs.show(tab.id === "tab-jobs");
  // The header's model picker applies to identification only.
  document.querySelector(".model-picker").classList.toggle("inactive", tab.id === "tab-jobs");
  if (tab.id === "tab-identify") identify.plot.resize();
  history.replaceState(null, "", tab.id === "tab-jobs" ? "#jobs" : "#");
}

function bindTabs() {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  for (const tab of tabs) {
    tab.addEventListener("click", () => selectTab(tab));
    tab.addEventListener("keydown", (e) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
      if (!step) return;
      const next = tabs[(tabs.indexOf(tab) + step + tabs.length) % tabs.length];
      next.focus();
      selectTab(next);
    });
  }
  if (location.hash === "#jobs") selectTab($("#tab-jobs"));
}

async function showVersion() {
  try {
    const meta = await api("v2");
    $("#footer-version").textContent = `${meta.name} ${meta.version}`;
  } catch {
    // The footer is informative only.
  }
}

function start() {
  identify = new IdentifyView({ models, picker });
  jobs = new JobsView({ onModelsChanged: loadModels });
  bindTabs();
  loadModels();
  showVersion();
  // Models change when versions are activated or fine-tune jobs finish.
  setInterval(() => { if (!document.hidden) loadModels(); }, 30000);
  window.ramanUI = { models, identify, jobs }; // for tests and the curious
}

if (window.uPlot) start();
else window.addEventListener("DOMContentLoaded", start);
