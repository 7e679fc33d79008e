// One GPU's detail: who it is, its newest values, and its processes at the newest process
// time (GET /metrics/latest?metric=process gives exactly those). Its charts are the
// panel's, chosen for this GPU alone.

import { getJson } from "./api.js";
import * as fmt from "./format.js";

// Which GPU a location hash (#host=…&gpu=… or #host=…&uuid=…) names, or null.
export function parseHash(hash) {
  const params = new URLSearchParams(hash.replace(/^#/, ""));
  if (!params.has("host") || !(params.has("gpu") || params.has("uuid"))) return null;
  const host = params.get("host") || null;
  const gpu = params.get("gpu");
  return gpu !== null && /^\d+$/.test(gpu)
    ? { host, gpuIndex: Number(gpu), uuid: null }
    : { host, gpuIndex: null, uuid: params.get("uuid") };
}

export async function fetchProcesses(gpu) {
  const filters = gpu.gpuIndex === null ? { uuid: gpu.uuid } : { gpuIndex: gpu.gpuIndex };
  const answer = await getJson("/metrics/latest", { metric: "process", host: gpu.host, ...filters });
  return answer.items.filter(
    (item) => item.gpuIndex === gpu.gpuIndex || (gpu.gpuIndex === null && item.uuid === gpu.uuid),
  );
}

function fact(label, value) {
  return fmt.element("div", {}, fmt.element("dt", {}, label), fmt.element("dd", {}, value));
}

function clockText(clocks) {
  const [sm, graphics, memory] = [clocks?.smMHz, clocks?.graphicsMHz, clocks?.memoryMHz].map((v) => fmt.integer(v));
  return `SM ${sm}, graphics ${graphics}, memory ${memory} MHz`;
}

export function renderDetail(elements, gpu, processes, view) {
  const index = gpu.gpuIndex ?? "(no index)";
  elements.title.textContent = `GPU ${index} of ${fmt.hostName(gpu.host)}${gpu.name ? ` — ${gpu.name}` : ""}`;
  const { utilization, memory, temperature, power, clocks } = gpu.latest;
  elements.facts.replaceChildren(
    fmt.element(
      "dl",
      {},
      fact("UUID", gpu.uuid ?? fmt.MISSING),
      fact("first seen", gpu.firstSeen ? fmt.clock(Date.parse(gpu.firstSeen)) : fmt.MISSING),
      fact("last seen", `${fmt.clock(gpu.lastSeenMs)} (${fmt.ago(view.nowMs - gpu.lastSeenMs)})`),
      fact(
        "utilization",
        `${fmt.integer(utilization?.gpuPercent, " %")} (memory ${fmt.integer(utilization?.memoryPercent, " %")})`,
      ),
      fact("memory", fmt.memoryUsed(memory?.usedMiB, memory?.totalMiB)),
      fact("temperature", fmt.integer(temperature?.celsius, " °C")),
      fact("power", fmt.number(power?.watts, " W")),
      fact("clocks", clockText(clocks)),
    ),
  );
  renderProcesses(elements, processes);
}

function renderProcesses(elements, processes) {
  const newest = processes.reduce((at, item) => Math.max(at, Date.parse(item.timestamp)), -Infinity);
  elements.processTime.textContent = processes.length ? `at ${fmt.clock(newest)}` : "";
  const rows = [...processes]
    .sort((a, b) => b.usedMiB - a.usedMiB || a.pid - b.pid)
    .map((item) =>
      fmt.element(
        "tr",
        { dataset: { pid: item.pid } },
        fmt.element("td", {}, item.pid),
        fmt.element(
          "td",
          { title: item.kernelName ? `kernels: ${item.kernelName.slice(0, 500)}` : undefined },
          item.processName ?? fmt.MISSING,
        ),
        fmt.element("td", {}, item.appName ?? fmt.MISSING),
        fmt.element("td", { className: "num" }, fmt.mib(item.usedMiB)),
      ),
    );
  if (!rows.length)
    rows.push(fmt.element("tr", {}, fmt.element("td", { colspan: 4 }, "No process record for this GPU.")));
  elements.processes.replaceChildren(...rows);
}
