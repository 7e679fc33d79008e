// The fleet table: every GPU, grouped by host, from one GET /gpus and GET /metrics/latest
// once per kind (never a request per GPU), rendered in one go. Sorting orders the GPUs
// within each host and the hosts by their first GPU; the host filter matches any part of
// a host's name.

import * as fmt from "./format.js";

export const TABLE_KINDS = ["utilization", "memory", "temperature", "power", "clocks"];
const ROW_PX = 26; // a row's height in dashboard.css

export function gpuKey(host, gpuIndex, uuid) {
  return gpuIndex === null || gpuIndex === undefined ? `${host ?? ""}\n#${uuid}` : `${host ?? ""}\n${gpuIndex}`;
}

// The GPUs of /gpus, each with the newest record of every kind that /metrics/latest gave.
export function buildFleet(gpusAnswer, latestItems) {
  const fleet = new Map();
  for (const gpu of gpusAnswer.gpus) {
    const key = gpuKey(gpu.host, gpu.gpuIndex, gpu.uuid);
    const lastSeenMs = Date.parse(gpu.lastSeen);
    fleet.set(key, { ...gpu, host: gpu.host ?? null, key, lastSeenMs, latest: {} });
  }
  for (const record of latestItems) {
    if (record.gpuIndex === null && record.uuid === null) continue; // a process without a GPU
    const gpu = fleet.get(gpuKey(record.host, record.gpuIndex ?? null, record.uuid));
    if (!gpu) continue; // seen by /metrics/latest after /gpus answered: next time
    gpu.latest[record.metric] = record;
    gpu.lastSeenMs = Math.max(gpu.lastSeenMs, Date.parse(record.timestamp));
    gpu.name = gpu.name ?? record.name ?? null;
  }
  return [...fleet.values()];
}

const SORT_VALUES = {
  name: (gpu) => gpu.name,
  gpuIndex: (gpu) => gpu.gpuIndex,
  uuid: (gpu) => gpu.uuid,
  util: (gpu) => gpu.latest.utilization?.gpuPercent,
  memory: (gpu) => gpu.latest.memory?.usedMiB,
  temperature: (gpu) => gpu.latest.temperature?.celsius,
  power: (gpu) => gpu.latest.power?.watts,
  sm: (gpu) => gpu.latest.clocks?.smMHz,
  lastSeen: (gpu) => -gpu.lastSeenMs, // ascending: the most recently seen first
};

function compareValues(a, b) {
  const aMissing = a === null || a === undefined;
  const bMissing = b === null || b === undefined;
  if (aMissing || bMissing) return aMissing - bMissing;
  if (typeof a === "string" || typeof b === "string") return String(a).localeCompare(String(b));
  return a - b;
}

function compareHosts(a, b) {
  return compareValues(a ?? "", b ?? "");
}

// Hosts in display order, each with its GPUs sorted; missing values always last.
export function groupAndSort(gpus, sort, filter) {
  const value = SORT_VALUES[sort.key];
  const needle = filter.trim().toLowerCase();
  const hosts = new Map();
  for (const gpu of gpus) {
    if (needle && !fmt.hostName(gpu.host).toLowerCase().includes(needle)) continue;
    if (!hosts.has(gpu.host)) hosts.set(gpu.host, []);
    hosts.get(gpu.host).push(gpu);
  }
  const byValue = (a, b) => {
    const [x, y] = [value(a), value(b)];
    const missing = (x === null || x === undefined) - (y === null || y === undefined);
    return missing || sort.direction * compareValues(x, y) || compareValues(a.gpuIndex, b.gpuIndex);
  };
  const groups = [...hosts.entries()].map(([host, members]) => ({ host, gpus: members.sort(byValue) }));
  return groups.sort((a, b) => byValue(a.gpus[0], b.gpus[0]) || compareHosts(a.host, b.host));
}

export function isStale(gpu, nowMs, staleAfterSec) {
  return nowMs - gpu.lastSeenMs > staleAfterSec * 1000;
}

export function detailHash(gpu) {
  const params = new URLSearchParams({ host: gpu.host ?? "" });
  if (gpu.gpuIndex === null) params.set("uuid", gpu.uuid);
  else params.set("gpu", gpu.gpuIndex);
  return `#${params}`;
}

function hostRow(group, nowMs, staleAfterSec, charted) {
  const stale = group.gpus.filter((gpu) => isStale(gpu, nowMs, staleAfterSec)).length;
  const summary = `${group.gpus.length} GPU${group.gpus.length === 1 ? "" : "s"}${stale ? `, ${stale} stale` : ""}`;
  const button = fmt.element(
    "button",
    { type: "button", className: "chart-host", dataset: { host: group.host ?? "" }, "aria-pressed": String(charted) },
    charted ? "charted" : "chart this host",
  );
  const cell = fmt.element(
    "th",
    { colspan: 10, scope: "rowgroup" },
    fmt.element("span", { className: "host-name" }, fmt.hostName(group.host)),
    fmt.element("span", { className: "muted" }, summary),
    button,
  );
  return fmt.element("tr", { className: "host" }, cell);
}

function cell(field, text, title) {
  return fmt.element(
    "td",
    { className: field === "name" || field === "uuid" ? "" : "num", dataset: { field }, title },
    text,
  );
}

function gpuRow(gpu, nowMs, staleAfterSec, picked) {
  const { utilization, memory, temperature, power, clocks } = gpu.latest;
  const stale = isStale(gpu, nowMs, staleAfterSec);
  const pick = fmt.element("input", {
    type: "checkbox",
    className: "pick",
    checked: picked,
    "aria-label": "chart this GPU",
  });
  const model = fmt.element(
    "a",
    { href: detailHash(gpu), title: "processes and charts of this GPU" },
    gpu.name ?? "GPU",
  );
  const seen = fmt.element("td", { className: "num", dataset: { field: "lastSeen" } }, fmt.ago(nowMs - gpu.lastSeenMs));
  if (stale)
    seen.append(" ", fmt.element("span", { className: "badge", title: `silent for over ${staleAfterSec} s` }, "stale"));
  const row = fmt.element(
    "tr",
    {
      className: stale ? "gpu stale" : "gpu",
      dataset: { key: gpu.key, host: gpu.host ?? "", index: gpu.gpuIndex ?? "" },
    },
    fmt.element("td", { className: "pick" }, pick),
    fmt.element("td", { dataset: { field: "name" } }, model),
    cell("gpuIndex", gpu.gpuIndex ?? fmt.MISSING),
    cell("uuid", fmt.shortUuid(gpu.uuid), gpu.uuid ?? undefined),
    cell("util", fmt.integer(utilization?.gpuPercent, " %")),
    cell("memory", fmt.memoryUsed(memory?.usedMiB, memory?.totalMiB)),
    cell("temperature", fmt.integer(temperature?.celsius, " °C")),
    cell("power", fmt.integer(power?.watts, " W")),
    cell("sm", fmt.integer(clocks?.smMHz, " MHz")),
    seen,
  );
  return row;
}

// A table per host, all in one replaceChildren. The tables share the header's fixed column
// widths, so they line up without measuring every cell; each sits in a section that the
// browser lays out only when it scrolls into view (content-visibility in the stylesheet),
// so a thousand GPUs cost what the first screenful costs.
export function renderTable(container, groups, view) {
  const columns = container.parentElement.querySelector("colgroup");
  const fragment = document.createDocumentFragment();
  for (const group of groups) {
    const body = fmt.element(
      "tbody",
      {},
      hostRow(group, view.nowMs, view.staleAfterSec, view.chartedHost === group.host),
    );
    for (const gpu of group.gpus) body.append(gpuRow(gpu, view.nowMs, view.staleAfterSec, view.picks.has(gpu.key)));
    const table = fmt.element("table", {}, columns.cloneNode(true), body);
    const section = fmt.element("section", { className: "host-group", dataset: { host: group.host ?? "" } }, table);
    // Its height until it is laid out: right, so that the page keeps its length and scroll.
    section.style.containIntrinsicSize = `auto ${ROW_PX * (group.gpus.length + 1) + 2}px`;
    fragment.append(section);
  }
  if (!groups.length) {
    const text = view.total ? "No host matches the filter." : "No GPU has sent a record yet.";
    fragment.append(fmt.element("p", { className: "empty" }, text));
  }
  container.replaceChildren(fragment);
}

export function renderSortMarks(thead, sort) {
  for (const th of thead.querySelectorAll("th[data-sort]")) {
    const active = th.dataset.sort === sort.key;
    th.setAttribute("aria-sort", active ? (sort.direction > 0 ? "ascending" : "descending") : "none");
  }
}
