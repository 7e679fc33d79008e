// Charts of the chosen GPUs with uPlot: one GET /metrics/series per chart, with a step
// chosen so that no series has more than about MAX_POINTS points. uPlot draws on a canvas
// and shows every series' value under the cursor in its legend; the four charts share
// their cursor. A GPU silent for longer than STALE_AFTER_SEC breaks its line (a null);
// a bucket that only another GPU has is skipped over (undefined), so GPUs sampled out of
// phase still draw lines.

import { getJson } from "./api.js";
import * as fmt from "./format.js";
import { gpuKey } from "./fleet.js";

export const CHARTS = [
  { id: "utilization", title: "Utilization", metric: "utilization", field: "gpuPercent", unit: " %", range: [0, 100] },
  { id: "memory", title: "Memory used", metric: "memory", field: "usedMiB", unit: " MiB", fromZero: true },
  { id: "temperature", title: "Temperature", metric: "temperature", field: "celsius", unit: " °C" },
  { id: "power", title: "Power", metric: "power", field: "watts", unit: " W", fromZero: true },
];

// Steps the API takes, nice to read; beyond a day, whole days.
const STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
export const MAX_SERIES = 32;
const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"];

export function chooseStep(windowSec, maxPoints) {
  const least = windowSec / maxPoints;
  return STEPS.find((step) => step >= least) ?? Math.ceil(least / 86400) * 86400;
}

function color(index) {
  return index < PALETTE.length ? PALETTE[index] : `hsl(${(index * 137.508) % 360}, 65%, 45%)`;
}

// The filters of /metrics/series that name the chosen GPUs: a host with its indexes, or
// UUIDs for GPUs known only by one. Filters are ANDed, so a query may name a few GPUs too
// many (hosts × indexes); the answer is filtered by key afterwards.
function seriesQueries(gpus, hostMode) {
  if (hostMode) return [{ host: gpus[0].host }];
  const indexed = gpus.filter((gpu) => gpu.gpuIndex !== null);
  const byUuid = gpus.filter((gpu) => gpu.gpuIndex === null);
  const queries = [];
  if (indexed.length) {
    queries.push({
      host: [...new Set(indexed.map((gpu) => gpu.host))],
      gpuIndex: [...new Set(indexed.map((gpu) => gpu.gpuIndex))],
    });
  }
  if (byUuid.length) queries.push({ uuid: byUuid.map((gpu) => gpu.uuid) });
  return queries;
}

async function fetchSeries(chart, gpus, window, hostMode) {
  const wanted = new Set(gpus.map((gpu) => gpu.key));
  const base = {
    metric: chart.metric,
    field: chart.field,
    aggregate: "avg",
    step: window.step,
    start: window.startIso,
    end: window.endIso,
  };
  const answers = await Promise.all(
    seriesQueries(gpus, hostMode).map((filters) => getJson("/metrics/series", { ...base, ...filters })),
  );
  const found = new Map();
  for (const answer of answers) {
    for (const series of answer.series) {
      const key = gpuKey(series.host, series.gpuIndex, series.uuid);
      if (wanted.has(key)) found.set(key, series.points);
    }
  }
  return found;
}

// uPlot's columns: one x array (seconds) and one y array per GPU, aligned.
export function align(gpus, found, window, gapSec) {
  const xs = new Set();
  const gaps = new Map();
  for (const gpu of gpus) {
    const points = (found.get(gpu.key) ?? []).map(([iso, value]) => [Date.parse(iso) / 1000, value]);
    found.set(gpu.key, points);
    const breaks = [];
    points.forEach(([x], i) => {
      xs.add(x);
      if (i && x - points[i - 1][0] > gapSec) breaks.push(points[i - 1][0] + window.step);
    });
    breaks.forEach((x) => xs.add(x));
    gaps.set(gpu.key, breaks);
  }
  const x = [...xs].sort((a, b) => a - b);
  const column = new Map(x.map((value, i) => [value, i]));
  const ys = gpus.map((gpu) => {
    const y = new Array(x.length).fill(undefined);
    for (const [at, value] of found.get(gpu.key)) y[column.get(at)] = value;
    for (const at of gaps.get(gpu.key)) if (y[column.get(at)] === undefined) y[column.get(at)] = null;
    return y;
  });
  return [x, ...ys];
}

function legendLabel(gpu, manyHosts) {
  const index = gpu.gpuIndex ?? fmt.shortUuid(gpu.uuid);
  return manyHosts ? `${fmt.hostName(gpu.host)} · ${index}` : `GPU ${index}`;
}

function plotOptions(chart, gpus, entry, width, look) {
  const manyHosts = new Set(gpus.map((gpu) => gpu.host)).size > 1;
  const value = (u, v) => (v === null || v === undefined ? fmt.MISSING : fmt.number(v, chart.unit));
  let yRange;
  if (chart.range) yRange = chart.range;
  else if (chart.fromZero) yRange = (u, min, max) => [0, max > 0 ? max * 1.1 : 1];
  return {
    width,
    height: look.height,
    cursor: look.cursor,
    scales: {
      x: { time: true, range: () => [entry.window.startSec, entry.window.endSec] },
      y: yRange ? { range: yRange } : {},
    },
    series: [
      { value: "{YYYY}-{MM}-{DD} {HH}:{mm}:{ss}" },
      ...gpus.map((gpu, i) => ({ label: legendLabel(gpu, manyHosts), stroke: color(i), width: 1.5, value })),
    ],
    axes: [{}, { size: 64, values: (u, splits) => splits.map((v) => fmt.number(v)) }],
  };
}

// The four charts of the chosen GPUs (or those of OPTIONS.charts), redrawn in place while
// the GPUs stay the same. Charts of one panel share their cursor (uPlot's OPTIONS.cursor.sync).
export class ChartPanel {
  constructor(container, options = {}) {
    this.container = container;
    this.charts = options.charts ?? CHARTS;
    this.look = { cursor: options.cursor ?? { sync: { key: "gpumetrics" } }, height: options.height ?? 220 };
    this.entries = new Map();
    new ResizeObserver(() => this.resize()).observe(container);
  }

  async update(gpus, window, hostMode, staleAfterSec) {
    const shown = gpus.slice(0, MAX_SERIES);
    const found = await Promise.all(this.charts.map((chart) => fetchSeries(chart, shown, window, hostMode)));
    const gapSec = Math.max(2 * window.step, staleAfterSec);
    const signature = shown.map((gpu) => gpu.key).join("\t");
    this.charts.forEach((chart, i) => {
      this.draw(chart, shown, align(shown, found[i], window, gapSec), window, signature);
    });
    return shown.length;
  }

  box(chart) {
    let box = this.container.querySelector(`[data-chart="${chart.id}"]`);
    if (!box) {
      box = fmt.element(
        "figure",
        { className: "chart", dataset: { chart: chart.id } },
        fmt.element("figcaption", {}, `${chart.title} (${chart.unit.trim()})`),
        fmt.element("div", { className: "plot" }),
        fmt.element("p", { className: "no-data", hidden: true }, "No record in this window."),
      );
      this.container.append(box);
    }
    return box;
  }

  draw(chart, gpus, data, window, signature) {
    const box = this.box(chart);
    let entry = this.entries.get(chart.id);
    if (entry && entry.signature === signature) {
      entry.window = window;
      entry.plot.setData(data);
    } else {
      entry?.plot.destroy();
      entry = { signature, window };
      const plotBox = box.querySelector(".plot");
      const options = plotOptions(chart, gpus, entry, plotBox.clientWidth || 600, this.look);
      entry.plot = new uPlot(options, data, plotBox);
      this.entries.set(chart.id, entry);
    }
    const empty = data.slice(1).every((y) => y.every((v) => v === null || v === undefined));
    box.querySelector(".no-data").hidden = !empty;
    box.classList.toggle("empty", empty);
  }

  // A part of the window, as another plot zoomed to it (the process timeline): the data stay.
  zoom(startSec, endSec) {
    for (const entry of this.entries.values()) {
      entry.window = { ...entry.window, startSec, endSec };
      entry.plot.setScale("x", { min: startSec, max: endSec });
    }
  }

  // No GPU chosen (the filter hides every host): no stale drawing of the last choice.
  clear() {
    for (const entry of this.entries.values()) entry.plot.destroy();
    this.entries.clear();
    this.container.replaceChildren();
  }

  resize() {
    for (const [id, entry] of this.entries) {
      const width = this.container.querySelector(`[data-chart="${id}"] .plot`).clientWidth;
      if (width && width !== entry.plot.width) entry.plot.setSize({ width, height: entry.plot.height });
    }
  }
}
