// A process's view: its timeline over its window [first event, last event], the
// utilization and memory of its GPUs over the same window (its host's GPUs: events name a
// process's host, not the GPUs it used), and its kernel summary as /spans/summary orders
// it. Spans are read a page at a time up to a cap, said on the page when reached. The
// view is read again only when the process list shows it changed (a later last event,
// more spans), not on every refresh: a finished run is read once.

import { getJson } from "./api.js";
import { CHARTS, ChartPanel, chooseStep } from "./charts.js";
import * as fmt from "./format.js";
import { Timeline, toBars } from "./timeline.js";

const PAGE = 5000;
export const CAPS = { kernel: 10000, scope: 5000 }; // spans drawn at most, per lane
const MIN_WINDOW_SEC = 10; // a shorter run is shown in 10 s around it
const SYNC = { key: "gpumetrics-process", scales: ["x", null] };
const SUMMARY_FIELDS = ["timePercent", "totalNs", "instances", "avgNs", "medianNs", "minNs", "maxNs", "stddevNs"];

async function readSpans(process, type) {
  const filters = { host: process.host, pid: process.pid, type, start: process.firstSeen, end: process.lastSeen };
  const items = [];
  let cursor;
  do {
    const page = await getJson("/spans", { ...filters, limit: Math.min(PAGE, CAPS[type]), cursor });
    items.push(...page.items);
    cursor = page.next ?? undefined;
  } while (cursor && items.length < CAPS[type]);
  return { items, capped: cursor !== undefined };
}

function readSummary(process) {
  const filters = { host: process.host, pid: process.pid, start: process.firstSeen, end: process.lastSeen };
  return getJson("/spans/summary", { ...filters, type: "kernel" });
}

export function processWindow(process, maxPoints) {
  let [startSec, endSec] = [fmt.seconds(process.firstSeen), fmt.seconds(process.lastSeen)];
  if (endSec - startSec < MIN_WINDOW_SEC) {
    const middle = (startSec + endSec) / 2;
    [startSec, endSec] = [middle - MIN_WINDOW_SEC / 2, middle + MIN_WINDOW_SEC / 2];
  }
  const step = chooseStep(endSec - startSec, maxPoints);
  const iso = (sec) => new Date(sec * 1000).toISOString();
  return { step, startSec, endSec, startIso: iso(Math.floor(startSec)), endIso: iso(Math.ceil(endSec)) };
}

function fact(label, value) {
  return fmt.element("div", {}, fmt.element("dt", {}, label), fmt.element("dd", {}, value));
}

function summaryText(field, value) {
  if (field === "timePercent") return fmt.number(value, " %");
  return field === "instances" ? fmt.integer(value) : fmt.nanos(value);
}

function summaryCell(field, value) {
  const text = summaryText(field, value);
  return fmt.element("td", { className: "num", dataset: { field, value } }, text);
}

function summaryRow(item) {
  return fmt.element(
    "tr",
    { className: item.failed ? "failed" : undefined },
    fmt.element("td", { dataset: { field: "name" }, title: item.name }, item.name),
    ...SUMMARY_FIELDS.map((field) => summaryCell(field, item[field])),
    fmt.element("td", { className: "num", dataset: { field: "failed", value: item.failed } }, fmt.integer(item.failed)),
  );
}

function countText(bars) {
  const failed = bars.kernels.filter((bar) => bar.failed).length;
  const byState = (state) => bars.scopes.filter((bar) => bar.span.state === state).length;
  const [open, abandoned] = [byState("open"), byState("abandoned")];
  const scopeNotes = [open && `${open} open`, abandoned && `${abandoned} abandoned`].filter(Boolean).join(", ");
  const count = (n, what) => `${fmt.integer(n)} ${what}${n === 1 ? "" : "s"}`;
  return (
    `${count(bars.kernels.length, "kernel")}${failed ? ` (${failed} failed)` : ""} · ` +
    `${count(bars.scopes.length, "scope")}${scopeNotes ? ` (${scopeNotes})` : ""}`
  );
}

function capNote(kernels, scopes, process) {
  const notes = [];
  for (const [read, type] of [[kernels, "kernel"], [scopes, "scope"]]) {
    if (!read.capped) continue;
    const last = read.items.at(-1);
    notes.push(`the first ${fmt.integer(CAPS[type])} ${type}s (to ${fmt.clockMicros(fmt.seconds(last.start))})`);
  }
  if (!notes.length) return "";
  return `Drawn: ${notes.join(" and ")} of ${fmt.integer(process.spans)} spans; the summary counts them all.`;
}

export class ProcessView {
  // ELEMENTS: section, title, facts, note, counts, whole (a button), timeline (a figure),
  // charts, gpuNote, summary (a tbody).
  constructor(elements, maxPoints) {
    this.el = elements;
    this.maxPoints = maxPoints;
    const charts = CHARTS.filter((chart) => chart.id === "utilization" || chart.id === "memory");
    // Their cursor follows the timeline's time; a level line of the timeline's would mean nothing.
    this.charts = new ChartPanel(elements.charts, { charts, cursor: { sync: SYNC, y: false }, height: 170 });
    this.timeline = new Timeline(elements.timeline, (startSec, endSec) => {
      this.charts.zoom(startSec, endSec);
      elements.whole.hidden = !this.timeline.range;
    });
    elements.whole.addEventListener("click", () => this.timeline.whole());
    this.shown = null; // what is drawn: the process as last read, and its GPUs
    this.shownProcess = null; // whose it is: a zoom is kept while it stays the same
  }

  // Show PROCESS (from /processes) with GPUS (its host's, from the fleet); null hides the view.
  async show(wanted, process, gpus, staleAfterSec) {
    this.el.section.hidden = !wanted;
    if (!wanted) {
      this.shown = this.shownProcess = null;
      return;
    }
    if (!process) {
      this.shown = this.shownProcess = null;
      const who = `Process ${wanted.pid} of ${fmt.hostName(wanted.host)}`;
      this.el.title.textContent = `${who} has sent no event (or is gone).`;
      for (const name of ["facts", "summary"]) this.el[name].replaceChildren();
      this.el.note.textContent = this.el.counts.textContent = "";
      this.el.whole.hidden = true;
      this.timeline.clear();
      this.charts.clear();
      return;
    }
    const gpuKeys = gpus.map((gpu) => gpu.key);
    const signature = JSON.stringify([process.host, process.pid, process.lastSeen, process.spans, gpuKeys]);
    if (signature === this.shown) return;
    const window = processWindow(process, this.maxPoints);
    const who = JSON.stringify([process.host, process.pid]);
    const keep = who === this.shownProcess ? this.timeline.range : null; // a live run, read again
    const [kernels, scopes, summary] = await Promise.all([
      readSpans(process, "kernel"),
      readSpans(process, "scope"),
      readSummary(process),
    ]);
    this.renderFacts(process);
    const bars = toBars([...scopes.items, ...kernels.items], window.endSec);
    this.el.counts.textContent = countText(bars);
    Object.assign(this.el.counts.dataset, { kernels: bars.kernels.length, scopes: bars.scopes.length });
    this.el.note.textContent = capNote(kernels, scopes, process);
    this.timeline.draw(bars, window, SYNC.key, keep);
    this.renderSummary(summary.items);
    if (gpus.length) await this.charts.update(gpus, window, true, staleAfterSec);
    else this.charts.clear();
    if (keep) this.charts.zoom(...keep);
    this.el.gpuNote.textContent = gpus.length ? "" : "No GPU of this host has sent a record.";
    [this.shown, this.shownProcess] = [signature, who];
  }

  renderFacts(process) {
    this.el.title.textContent = `Process ${process.pid} (${process.app}) on ${fmt.hostName(process.host)}`;
    this.el.facts.replaceChildren(
      fmt.element(
        "dl",
        {},
        fact("first event", fmt.clock(process.firstMs)),
        fact("last event", fmt.clock(process.lastMs)),
        fact("length", fmt.elapsed(process.lastMs - process.firstMs)),
        fact("shut down", process.shutDown ? "yes" : "not yet (or it died)"),
        fact("spans", fmt.integer(process.spans)),
      ),
    );
  }

  renderSummary(items) {
    const rows = items.map(summaryRow);
    if (!rows.length) {
      rows.push(fmt.element("tr", {}, fmt.element("td", { colspan: 10 }, "No kernel with a duration.")));
    }
    this.el.summary.replaceChildren(...rows);
  }
}
