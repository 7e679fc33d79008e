// A process's timeline: a lane of scopes (a scope that starts inside another goes on the
// row below it) and a lane of kernels, painted on a uPlot canvas so that it has the GPU
// charts' time axis, their cursor and a zoom they follow (drag to zoom in, double-click
// for the whole window). A failed kernel is red and taller, painted over the others; an
// open scope runs to the window's end, an abandoned one is hatched. Hovering a bar shows
// what it was. Painting is one rectangle a span, so a few thousand cost a few ms.

import * as fmt from "./format.js";

const ROW_PX = 18; // a scope row
const MAX_SCOPE_ROWS = 6; // deeper scopes share the last row
const KERNEL_PX = 28; // the kernel lane
const GAP_PX = 8;
const AXIS_PX = 64; // the GPU charts' y axis: their plots start at the same x
const HIT_PX = 3; // how near a bar the mouse must be
const OK = "cudaSuccess";
const COLOR = { scope: "#7f93b5", open: "#a9c1e8", abandoned: "#d9a35b", kernel: "#1f77b4", failed: "#d62728" };

// Spans as bars: times in seconds (microseconds kept), scopes on rows.
export function toBars(spans, windowEndSec) {
  const bars = spans.map((span) => {
    const startSec = fmt.seconds(span.start);
    const endSec = span.end === null ? Math.max(windowEndSec, startSec) : fmt.seconds(span.end);
    const failed = span.type === "kernel" && span.cudaError !== null && span.cudaError !== OK;
    return { span, startSec, endSec, failed, row: 0 };
  });
  const rowEnds = []; // the end of the last scope on each row
  for (const bar of bars) {
    if (bar.span.type !== "scope") continue;
    let row = rowEnds.findIndex((end) => end <= bar.startSec);
    if (row < 0) row = rowEnds.length < MAX_SCOPE_ROWS ? rowEnds.length : MAX_SCOPE_ROWS - 1;
    rowEnds[row] = Math.max(rowEnds[row] ?? -Infinity, bar.endSec);
    bar.row = row;
  }
  return {
    scopes: bars.filter((bar) => bar.span.type === "scope"),
    // Failed kernels last, so that they are painted over the others.
    kernels: bars.filter((bar) => bar.span.type === "kernel").sort((a, b) => a.failed - b.failed),
    scopeRows: Math.max(1, rowEnds.length),
  };
}

const hatches = new WeakMap(); // a canvas's pattern, at its pixel ratio

function scopeFill(ctx, bar, ratio) {
  const state = bar.span.state;
  if (state === "open") return COLOR.open;
  if (state !== "abandoned") return COLOR.scope;
  if (hatches.get(ctx)?.ratio !== ratio) {
    hatches.set(ctx, { ratio, pattern: ctx.createPattern(hatch(ratio), "repeat") });
  }
  return hatches.get(ctx).pattern;
}

// Stripes: an abandoned scope (its process shut down first) has no known end.
function hatch(ratio) {
  const tile = document.createElement("canvas");
  tile.width = tile.height = Math.round(6 * ratio);
  const tiles = tile.getContext("2d");
  tiles.fillStyle = COLOR.abandoned;
  tiles.fillRect(0, 0, tile.width, tile.height);
  tiles.strokeStyle = "#fff";
  tiles.lineWidth = ratio;
  tiles.beginPath();
  tiles.moveTo(0, tile.height);
  tiles.lineTo(tile.width, 0);
  tiles.stroke();
  return tile;
}

function fact(label, value, className) {
  return [fmt.element("dt", {}, label), fmt.element("dd", { className }, value)];
}

function triple(values) {
  return values ? values.join(" × ") : fmt.MISSING;
}

// What the tooltip says about a bar.
export function describe(bar) {
  const { span } = bar;
  const facts = [
    ...fact("start", fmt.clockMicros(bar.startSec)),
    ...fact("end", span.end === null ? "still open" : fmt.clockMicros(bar.endSec)),
    ...fact("duration", span.durationNs === null ? `unknown (${span.state ?? "open"})` : fmt.nanos(span.durationNs)),
  ];
  if (span.tag) facts.push(...fact("tag", span.tag));
  if (span.type === "kernel") {
    facts.push(
      ...fact("grid", triple(span.grid)),
      ...fact("block", triple(span.block)),
      ...fact("shared memory", fmt.integer(span.sharedMemBytes, " B")),
      ...fact("error", span.cudaError ?? fmt.MISSING, bar.failed ? "error" : undefined),
    );
  } else {
    facts.push(...fact("state", span.state ?? fmt.MISSING));
  }
  return [fmt.element("strong", {}, `${span.type}: ${span.name}`), fmt.element("dl", {}, ...facts)];
}

export class Timeline {
  // FIGURE holds a .plot and a .tip; onZoom(startSec, endSec) hears of every x range.
  constructor(figure, onZoom) {
    Object.assign(this, { figure, onZoom, plot: null, bars: null, window: null, range: null });
    this.tip = figure.querySelector(".tip");
    new ResizeObserver(() => this.resize()).observe(figure);
  }

  wantedPx() {
    return this.bars.scopeRows * ROW_PX + GAP_PX + KERNEL_PX;
  }

  // The lanes in CSS pixels from the plot's top, stretched to the plot's height (uPlot
  // settles its padding only once it has laid out its axes).
  lanes(u) {
    const scale = u.bbox.height / uPlot.pxRatio / this.wantedPx();
    const row = ROW_PX * scale;
    const scopesPx = this.bars.scopeRows * row;
    return { row, scopesPx, kernelsTop: scopesPx + GAP_PX * scale, kernelPx: KERNEL_PX * scale };
  }

  // KEEP: a range to stay zoomed to (the same process read again), or null.
  draw(bars, window, syncKey, keep) {
    this.plot?.destroy();
    Object.assign(this, { bars, window });
    const box = this.figure.querySelector(".plot");
    const options = {
      width: box.clientWidth || 600,
      height: this.wantedPx() + 58, // and the x axis below, and the padding above
      padding: [8, null, 0, null],
      legend: { show: false },
      cursor: {
        sync: { key: syncKey, scales: ["x", null] },
        y: false,
        points: { show: false },
        drag: { x: true, y: false },
      },
      scales: { x: { time: true }, y: { range: () => [0, 1] } },
      series: [{}, { stroke: "transparent", points: { show: false } }],
      axes: [{}, { size: AXIS_PX, values: () => [], splits: () => [], grid: { show: false }, ticks: { show: false } }],
      hooks: {
        draw: [(u) => this.paint(u)],
        setCursor: [(u) => this.hover(u)],
        setScale: [(u, key) => key === "x" && this.zoomed(u.scales.x.min, u.scales.x.max)],
      },
    };
    this.plot = new uPlot(options, [[window.startSec, window.endSec], [null, null]], box);
    if (keep) this.plot.setScale("x", { min: keep[0], max: keep[1] });
    this.plot.over.addEventListener("mouseleave", () => (this.tip.hidden = true));
  }

  whole() {
    this.plot?.setScale("x", { min: this.window.startSec, max: this.window.endSec });
  }

  zoomed(startSec, endSec) {
    const whole = startSec <= this.window.startSec && endSec >= this.window.endSec;
    this.range = whole ? null : [startSec, endSec];
    this.onZoom(startSec, endSec);
  }

  paint(u) {
    const ctx = u.ctx;
    const ratio = uPlot.pxRatio;
    const { left, top, width } = u.bbox;
    const { row, scopesPx, kernelsTop, kernelPx } = this.lanes(u);
    const x = (sec) => u.valToPos(sec, "x", true);
    // Whole device pixels, so that bars are crisp; a span shorter than a pixel is one wide.
    const xs = (bar) => {
      const x0 = Math.round(Math.max(left, x(bar.startSec)));
      const x1 = Math.round(Math.min(left + width, x(bar.endSec)));
      return [x0, Math.max(x1 - x0, Math.round(ratio))];
    };
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top, width, u.bbox.height);
    ctx.clip();
    ctx.font = `${11 * ratio}px system-ui, sans-serif`;
    ctx.textAlign = "left";
    ctx.textBaseline = "middle";
    for (const bar of this.bars.scopes) {
      if (x(bar.endSec) < left || x(bar.startSec) > left + width) continue;
      const [x0, w] = xs(bar);
      const y = Math.round(top + (bar.row * row + 1) * ratio);
      ctx.fillStyle = scopeFill(ctx, bar, ratio);
      ctx.fillRect(x0, y, w, Math.round((row - 2) * ratio));
      if (w > 40 * ratio) {
        ctx.fillStyle = "#1d2330";
        ctx.fillText(bar.span.name, x0 + 4 * ratio, y + (row / 2 - 1) * ratio, w - 8 * ratio);
      }
    }
    for (const bar of this.bars.kernels) {
      if (x(bar.endSec) < left || x(bar.startSec) > left + width) continue;
      const [x0, w] = xs(bar);
      const inset = bar.failed ? 0 : kernelPx / 5; // a failed kernel is full height
      ctx.fillStyle = bar.failed ? COLOR.failed : COLOR.kernel;
      const y = Math.round(top + (kernelsTop + inset) * ratio);
      ctx.fillRect(x0, y, w, Math.round((kernelPx - 2 * inset) * ratio));
    }
    ctx.restore();
    ctx.fillStyle = "#6b7383";
    ctx.textAlign = "right";
    ctx.font = `${12 * ratio}px system-ui, sans-serif`;
    ctx.fillText("scopes", left - 8 * ratio, top + (scopesPx / 2) * ratio);
    ctx.fillText("kernels", left - 8 * ratio, top + (kernelsTop + kernelPx / 2) * ratio);
  }

  // The bar under the cursor: in its lane, the nearest within HIT_PX (a failed kernel first).
  barAt(u, left, top) {
    const { row, scopesPx, kernelsTop, kernelPx } = this.lanes(u);
    let candidates;
    if (top >= kernelsTop - 2 && top <= kernelsTop + kernelPx + 2) candidates = this.bars.kernels;
    else if (top < scopesPx) candidates = this.bars.scopes.filter((bar) => bar.row === Math.floor(top / row));
    else return null;
    const at = u.posToVal(left, "x");
    const slack = u.posToVal(left + HIT_PX, "x") - at;
    let best = null;
    let bestDistance = Infinity;
    for (const bar of candidates) {
      const distance = Math.max(bar.startSec - at, at - bar.endSec, 0);
      if (distance > slack) continue;
      if (distance < bestDistance || (distance === bestDistance && bar.failed)) [best, bestDistance] = [bar, distance];
    }
    return best;
  }

  hover(u) {
    const { left, top } = u.cursor;
    // Only under the mouse itself: a cursor synced from the GPU charts has no bar to tell of.
    const bar = left >= 0 && u.over.matches(":hover") ? this.barAt(u, left, top) : null;
    this.tip.hidden = !bar;
    if (!bar) return;
    this.tip.replaceChildren(...describe(bar));
    this.tip.dataset.type = bar.span.type;
    this.tip.classList.toggle("failed", bar.failed);
    // Beside the cursor, on the side with room.
    const over = u.over.getBoundingClientRect();
    const figure = this.figure.getBoundingClientRect();
    const x = over.left - figure.left + left;
    const right = x > figure.width / 2;
    this.tip.style.left = right ? "" : `${x + 12}px`;
    this.tip.style.right = right ? `${figure.width - x + 12}px` : "";
    this.tip.style.top = `${over.top - figure.top + top + 14}px`;
  }

  clear() {
    this.plot?.destroy();
    this.plot = this.range = null;
    this.tip.hidden = true;
  }

  resize() {
    const width = this.figure.querySelector(".plot").clientWidth;
    if (this.plot && width && width !== this.plot.width) this.plot.setSize({ width, height: this.plot.height });
  }
}
