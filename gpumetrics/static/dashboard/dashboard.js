// The dashboard's state and its one refresh loop. A run reads the fleet (GET /gpus and
// GET /metrics/latest per kind) and the processes, shows the tables at once, then the
// charts, the GPU's detail and the process's view.
// Runs never overlap: a run asked for while one is under way is merged into one more run
// after it, and the next read is due 10 seconds after the last one ended, so a slow
// service is asked less often instead of being piled up on.

import { AuthError, ServiceError, currentKey, forgetKey, getJson, saveKey, serverNow } from "./api.js";
import { ChartPanel, MAX_SERIES, chooseStep } from "./charts.js";
import { wireControls } from "./controls.js";
import { fetchProcesses, parseHash, renderDetail } from "./detail.js";
import { TABLE_KINDS, buildFleet, gpuKey, groupAndSort, isStale, renderSortMarks, renderTable } from "./fleet.js";
import * as fmt from "./format.js";
import { ProcessView } from "./process.js";
import { findProcess, parseProcessHash, readProcesses, renderProcesses } from "./processes.js";

const body = document.body;
const $ = (id) => document.getElementById(id);
const config = {
  staleAfterSec: Number(body.dataset.staleAfterSec) || 120,
  keysRequired: body.dataset.keysRequired === "true",
  refreshMs: (Number(body.dataset.refreshSec) || 10) * 1000,
  maxPoints: Number(body.dataset.maxPoints) || 1000,
};
const state = {
  gpus: [],
  byKey: new Map(),
  groups: [],
  sort: { key: "gpuIndex", direction: 1 },
  filter: "",
  picks: new Set(),
  chartedHost: undefined, // undefined: the first host the table shows
  window: { seconds: 3600 }, // or { startMs, endMs }
  detail: parseHash(location.hash),
  processes: [],
  process: parseProcessHash(location.hash), // { host, pid } of the process shown
  readAt: 0,
};
const charts = new ChartPanel($("charts"));
const processView = new ProcessView(
  {
    section: $("process"),
    title: $("process-title"),
    facts: $("process-facts"),
    note: $("process-note"),
    counts: $("timeline-counts"),
    whole: $("timeline-whole"),
    timeline: $("timeline"),
    charts: $("process-charts"),
    gpuNote: $("process-gpu-note"),
    summary: $("kernel-summary"),
  },
  config.maxPoints,
);

class Loop {
  constructor(task, everyMs) {
    Object.assign(this, { task, everyMs, wanted: null, running: false, timer: null, paused: false, stopped: false });
    this.readEnded = -Infinity; // when the last read of the fleet ended (performance.now())
  }

  // "data" reads the fleet again; "view" redraws from the fleet in hand (and reads the charts).
  want(what) {
    this.wanted = this.wanted === "data" || what === "data" ? "data" : "view";
    if (!this.running) this.run();
  }

  async run() {
    this.running = true;
    clearTimeout(this.timer);
    while (this.wanted) {
      const what = this.wanted;
      this.wanted = null;
      await this.task(what);
      if (what === "data") this.readEnded = performance.now();
    }
    this.running = false;
    this.schedule();
  }

  // The next read is due a period after the last one ended, whatever view runs came between.
  schedule() {
    clearTimeout(this.timer);
    if (this.paused || this.stopped) return;
    const due = Math.max(0, this.readEnded + this.everyMs - performance.now());
    this.timer = setTimeout(() => this.want("data"), due);
  }
}

const loop = new Loop(refresh, config.refreshMs);
// Counters the tests read: runs started and ended, and reads of the fleet started and ended.
const counts = { refreshStarted: 0, refreshes: 0, readsStarted: 0, reads: 0 };

function count(name) {
  body.dataset[name] = ++counts[name];
}

async function refresh(what) {
  count("refreshStarted");
  const reading = what === "data" || !state.readAt;
  try {
    if (reading) {
      count("readsStarted");
      await readFleet();
      count("reads");
    }
    showTable();
    await Promise.all([drawCharts(), drawDetail(), drawProcess()]);
    if (!performance.getEntriesByName("gpumetrics:charts-shown").length) performance.mark("gpumetrics:charts-shown");
    showStatus();
  } catch (error) {
    showError(error);
  } finally {
    count("refreshes");
  }
}

async function readFleet() {
  // A request per kind (the metric filter takes one value): never metric=process, whose
  // free text (kernel names) can be far larger than everything the table shows. The
  // processes listed are gpumon_client's (GET /processes: a few fields each).
  const kinds = TABLE_KINDS.map((metric) => getJson("/metrics/latest", { metric }));
  const [gpus, processes, ...latest] = await Promise.all([getJson("/gpus"), readProcesses(), ...kinds]);
  state.processes = processes;
  state.gpus = buildFleet(
    gpus,
    latest.flatMap((answer) => answer.items),
  );
  state.byKey = new Map(state.gpus.map((gpu) => [gpu.key, gpu]));
  state.readAt = serverNow();
  for (const key of state.picks) if (!state.byKey.has(key)) state.picks.delete(key);
  updateHostNames();
  $("key-form").hidden = true;
  $("main").hidden = false;
  body.dataset.state = "ready";
}

function updateHostNames() {
  const names = [...new Set(state.gpus.map((gpu) => fmt.hostName(gpu.host)))].sort();
  const list = $("host-names");
  if (list.dataset.names === names.join("\n")) return;
  list.dataset.names = names.join("\n");
  list.replaceChildren(...names.map((name) => fmt.element("option", { value: name })));
}

let tableShown = false;

function showTable() {
  state.groups = groupAndSort(state.gpus, state.sort, state.filter);
  const view = {
    nowMs: state.readAt,
    staleAfterSec: config.staleAfterSec,
    picks: state.picks,
    total: state.gpus.length,
  };
  view.chartedHost = state.picks.size || state.detail ? undefined : chartedHost();
  renderTable($("gpu-rows"), state.groups, view);
  renderSortMarks($("gpus").querySelector("thead"), state.sort);
  const shown = state.groups.reduce((sum, group) => sum + group.gpus.length, 0);
  const hosts = `${state.groups.length} host${state.groups.length === 1 ? "" : "s"}`;
  $("gpu-count").textContent = `${shown} of ${state.gpus.length} on ${hosts}`;
  $("clear-picks").disabled = !state.picks.size;
  renderProcesses({ rows: $("process-rows"), count: $("process-count") }, state.processes, {
    nowMs: state.readAt,
    filter: state.filter,
  });
  if (!tableShown && state.gpus.length) {
    tableShown = true;
    // After the browser has painted the rows: what an operator waits for (bench/dashboard.py).
    requestAnimationFrame(() => setTimeout(() => performance.mark("gpumetrics:table-shown", { detail: shown })));
  }
}

function chartedHost() {
  const hosts = new Set(state.gpus.map((gpu) => gpu.host));
  return state.chartedHost !== undefined && hosts.has(state.chartedHost) ? state.chartedHost : state.groups[0]?.host;
}

function byIndex(a, b) {
  return (a.host ?? "").localeCompare(b.host ?? "") || (a.gpuIndex ?? Infinity) - (b.gpuIndex ?? Infinity);
}

// The GPUs to chart: the detail's GPU, or the picked ones, or all of one host.
function chosen() {
  if (state.detail) {
    const gpu = state.byKey.get(gpuKey(state.detail.host, state.detail.gpuIndex, state.detail.uuid));
    return { gpus: gpu ? [gpu] : [], hostMode: false, title: "this GPU" };
  }
  if (state.picks.size) {
    const gpus = [...state.picks].map((key) => state.byKey.get(key)).sort(byIndex);
    return { gpus, hostMode: false, title: `${gpus.length} picked GPU${gpus.length === 1 ? "" : "s"}` };
  }
  const host = chartedHost();
  const gpus = state.gpus.filter((gpu) => gpu.host === host).sort(byIndex);
  return { gpus, hostMode: gpus.length > 0, title: gpus.length ? `all GPUs of ${fmt.hostName(host)}` : "no GPU" };
}

function chartWindow() {
  const endMs = state.window.seconds ? serverNow() : state.window.endMs;
  const startMs = state.window.seconds ? endMs - state.window.seconds * 1000 : state.window.startMs;
  const step = chooseStep((endMs - startMs) / 1000, config.maxPoints);
  const iso = (ms) => new Date(ms).toISOString();
  return { step, startIso: iso(startMs), endIso: iso(endMs), startSec: startMs / 1000, endSec: endMs / 1000 };
}

async function drawCharts() {
  const { gpus, hostMode, title } = chosen();
  const window = chartWindow();
  $("chart-title").textContent = `Charts: ${title}`;
  const points = Math.ceil((window.endSec - window.startSec) / window.step);
  $("step").textContent = `step ${fmt.duration(window.step)}, at most ${points} points a series`;
  const note = gpus.length > MAX_SERIES ? `Showing the first ${MAX_SERIES} of ${gpus.length} GPUs.` : "";
  $("chart-note").textContent = note;
  if (gpus.length) await charts.update(gpus, window, hostMode, config.staleAfterSec);
  else charts.clear();
}

async function drawDetail() {
  const section = $("detail");
  const gpu = state.detail && state.byKey.get(gpuKey(state.detail.host, state.detail.gpuIndex, state.detail.uuid));
  section.hidden = !state.detail;
  if (!state.detail) return;
  const elements = { title: $("detail-title"), facts: $("detail-facts"), processes: $("detail-processes") };
  elements.processTime = $("detail-process-time");
  if (!gpu) {
    elements.title.textContent = "This GPU is not in the fleet (any more).";
    elements.facts.replaceChildren();
    elements.processes.replaceChildren();
    return;
  }
  renderDetail(elements, gpu, await fetchProcesses(gpu), { nowMs: state.readAt });
}

// The chosen process's view, with all GPUs of its host.
async function drawProcess() {
  const process = state.process && findProcess(state.processes, state.process);
  const gpus = process ? state.gpus.filter((gpu) => gpu.host === process.host).sort(byIndex) : [];
  await processView.show(state.process, process, gpus, config.staleAfterSec);
}

function showStatus() {
  const stale = state.gpus.filter((gpu) => isStale(gpu, state.readAt, config.staleAfterSec)).length;
  const when = new Date(state.readAt).toLocaleTimeString();
  const paused = loop.paused ? "Paused. " : "";
  setStatus(`${paused}Read at ${when}: ${state.gpus.length} GPUs${stale ? `, ${stale} stale` : ""}.`, false);
}

function setStatus(text, isError) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

function showError(error) {
  if (error instanceof AuthError) {
    const refused = Boolean(currentKey());
    forgetKey();
    askForKey(refused ? `The service refused this key: ${error.message}` : "");
    return;
  }
  const retry = loop.paused ? "" : ` Trying again in ${config.refreshMs / 1000} s.`;
  const why = error.message.replace(/\.$/, "");
  setStatus(`Could not refresh at ${new Date().toLocaleTimeString()}: ${why}.${retry}`, true);
  body.dataset.state = state.readAt ? "ready" : "error";
  if (!(error instanceof ServiceError)) console.error(error); // a fault of the page: tests must see it
}

function askForKey(message) {
  loop.stopped = true;
  body.dataset.state = "needs-key";
  $("main").hidden = true;
  $("key-form").hidden = false;
  $("key-message").textContent = message;
  setStatus(message ? "The read key was refused." : "A read key is needed.", Boolean(message));
  $("key-input").focus();
}

// A key just typed is tried with one request, so that a wrong one is refused once (one
// 401), not once per parallel read; a right one starts the loop again.
async function tryKey(key) {
  saveKey(key);
  try {
    await getJson("/gpus");
  } catch (error) {
    showError(error);
    return;
  }
  loop.stopped = false;
  loop.want("data");
}

wireControls({ state, loop, showTable, showStatus, tryKey });
if (config.keysRequired && !currentKey()) askForKey("");
else loop.want("data");
