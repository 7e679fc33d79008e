// The processes that sent gpumon_client events (one GET /processes), newest first, each a
// link to its view. The address keeps the choice (#host=…&pid=…), like a GPU's detail, so
// that it can be shared; a pid used again after a reboot means its newest process.

import { getJson } from "./api.js";
import * as fmt from "./format.js";

export const SHOWN = 50; // rows in the list; the view of any process is one address away

// Which process a location hash names, or null.
export function parseProcessHash(hash) {
  const params = new URLSearchParams(hash.replace(/^#/, ""));
  const pid = params.get("pid");
  if (!params.has("host") || pid === null || !/^\d+$/.test(pid)) return null;
  return { host: params.get("host") || null, pid: Number(pid) };
}

export function processHash(process) {
  return `#${new URLSearchParams({ host: process.host ?? "", pid: process.pid })}`;
}

export async function readProcesses() {
  const answer = await getJson("/processes");
  return answer.processes
    .map((process) => ({ ...process, firstMs: Date.parse(process.firstSeen), lastMs: Date.parse(process.lastSeen) }))
    .sort((a, b) => b.lastMs - a.lastMs || a.pid - b.pid);
}

export function findProcess(processes, wanted) {
  return processes.find((process) => process.host === wanted.host && process.pid === wanted.pid) ?? null;
}

function row(process, nowMs) {
  const link = fmt.element("a", { href: processHash(process), title: "timeline, GPUs and kernels" }, process.pid);
  return fmt.element(
    "tr",
    { dataset: { host: process.host ?? "", pid: process.pid } },
    fmt.element("td", {}, fmt.hostName(process.host)),
    fmt.element("td", { className: "num" }, link),
    fmt.element("td", {}, process.app),
    fmt.element("td", {}, fmt.clock(process.firstMs)),
    fmt.element("td", { className: "num" }, fmt.ago(nowMs - process.lastMs)),
    fmt.element("td", { className: "num" }, fmt.elapsed(process.lastMs - process.firstMs)),
    fmt.element("td", {}, process.shutDown ? "shut down" : "no shutdown yet"),
    fmt.element("td", { className: "num" }, fmt.integer(process.spans)),
  );
}

// The newest SHOWN processes of the hosts the fleet's host filter lets through.
export function renderProcesses(elements, processes, view) {
  const needle = view.filter.trim().toLowerCase();
  const matching = processes.filter((p) => !needle || fmt.hostName(p.host).toLowerCase().includes(needle));
  const rows = matching.slice(0, SHOWN).map((process) => row(process, view.nowMs));
  if (!rows.length) {
    const text = processes.length ? "No host matches the filter." : "No process has sent events yet.";
    rows.push(fmt.element("tr", {}, fmt.element("td", { colspan: 8, className: "muted" }, text)));
  }
  elements.rows.replaceChildren(...rows);
  const shown = Math.min(matching.length, SHOWN);
  elements.count.textContent = matching.length > SHOWN ? `newest ${shown} of ${matching.length}` : `${shown}`;
}
