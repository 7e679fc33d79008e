// What the operator can do on the page: sort, filter by host, pick GPUs or a host to chart,
// choose the window, open a GPU's detail or a process's view, pause the refresh, give a
// read key. Each changes the state and asks the loop for a run; none fetches anything
// itself (a typed key is tried by the page's tryKey).

import { parseHash } from "./detail.js";
import { parseProcessHash } from "./processes.js";

const $ = (id) => document.getElementById(id);

function toLocalInput(ms) {
  const date = new Date(ms);
  return new Date(ms - date.getTimezoneOffset() * 60000).toISOString().slice(0, 19);
}

function wireTable(app) {
  const { state, loop, showTable } = app;
  $("gpus")
    .querySelector("thead")
    .addEventListener("click", (event) => {
      const th = event.target.closest("th[data-sort]");
      if (!th) return;
      const same = state.sort.key === th.dataset.sort;
      state.sort = { key: th.dataset.sort, direction: same ? -state.sort.direction : 1 };
      showTable();
    });
  $("gpu-rows").addEventListener("change", (event) => {
    if (!event.target.matches("input.pick")) return;
    const key = event.target.closest("tr").dataset.key;
    if (event.target.checked) state.picks.add(key);
    else state.picks.delete(key);
    if (state.detail) location.hash = "";
    loop.want("view");
  });
  $("gpu-rows").addEventListener("click", (event) => {
    const button = event.target.closest("button.chart-host");
    if (!button) return;
    state.picks.clear();
    state.chartedHost = button.dataset.host || null;
    if (state.detail) location.hash = "";
    loop.want("view");
  });
  $("clear-picks").addEventListener("click", () => {
    state.picks.clear();
    loop.want("view");
  });
  let typing = null;
  $("host-filter").addEventListener("input", (event) => {
    state.filter = event.target.value === "(local host)" ? "" : event.target.value;
    showTable();
    clearTimeout(typing);
    typing = setTimeout(() => loop.want("view"), 300);
  });
}

function wireWindow(app) {
  const { state, loop } = app;
  const custom = $("custom-range");
  $("window").addEventListener("change", (event) => {
    custom.hidden = event.target.value !== "custom";
    if (!custom.hidden) {
      const end = Date.now();
      $("custom-end").value ||= toLocalInput(end);
      $("custom-start").value ||= toLocalInput(end - 3600 * 1000);
      return;
    }
    state.window = { seconds: Number(event.target.value) };
    loop.want("view");
  });
  $("custom-apply").addEventListener("click", () => {
    const startMs = new Date($("custom-start").value).getTime();
    const endMs = new Date($("custom-end").value).getTime();
    if (!(startMs < endMs)) {
      $("chart-note").textContent = "Choose a start before the end.";
      return;
    }
    state.window = { startMs, endMs };
    loop.want("view");
  });
}

function wirePage(app) {
  const { state, loop, showStatus } = app;
  window.addEventListener("hashchange", () => {
    state.detail = parseHash(location.hash);
    state.process = parseProcessHash(location.hash);
    if (state.detail || state.process) window.scrollTo(0, 0);
    loop.want("view");
  });
  for (const close of ["detail-close", "process-close"]) {
    $(close).addEventListener("click", () => {
      location.hash = "";
    });
  }
  $("auto-refresh").addEventListener("change", (event) => {
    loop.paused = !event.target.checked;
    if (!loop.paused) loop.want("data");
    else if (!loop.running) {
      loop.schedule(); // clears the timer
      if (state.readAt) showStatus();
    }
  });
  $("key-entry").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key-input").value.trim();
    if (!key) return;
    $("key-input").value = "";
    $("key-message").textContent = "";
    app.tryKey(key);
  });
}

export function wireControls(app) {
  wireTable(app);
  wireWindow(app);
  wirePage(app);
}
