// How values read on the page: units, short UUIDs, "how long ago". One place, so the
// table, the detail and the charts' legends say the same thing the same way.

const NUMBER = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
const INTEGER = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

export const MISSING = "–";

export function number(value, unit = "") {
  if (value === null || value === undefined || !Number.isFinite(value)) return MISSING;
  return `${NUMBER.format(value)}${unit}`;
}

export function integer(value, unit = "") {
  if (value === null || value === undefined || !Number.isFinite(value)) return MISSING;
  return `${INTEGER.format(value)}${unit}`;
}

export function mib(value) {
  return integer(value, " MiB");
}

export function memoryUsed(used, total) {
  if (used === undefined && total === undefined) return MISSING;
  if (total === undefined) return mib(used);
  return `${integer(used)} / ${mib(total)}`;
}

export function shortUuid(uuid) {
  if (!uuid) return MISSING;
  const bare = uuid.startsWith("GPU-") ? uuid.slice(4) : uuid;
  return bare.length > 8 ? `${bare.slice(0, 8)}…` : bare;
}

export function hostName(host) {
  return host ?? "(local host)";
}

export function ago(milliseconds) {
  if (!Number.isFinite(milliseconds)) return MISSING;
  const seconds = Math.max(0, Math.round(milliseconds / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ${minutes % 60} min ago`;
  return `${Math.floor(hours / 24)} d ago`;
}

export function duration(seconds) {
  if (seconds % 86400 === 0) return `${seconds / 86400} d`;
  if (seconds % 3600 === 0) return `${seconds / 3600} h`;
  if (seconds % 60 === 0) return `${seconds / 60} min`;
  return `${seconds} s`;
}

export function clock(milliseconds) {
  return new Date(milliseconds).toLocaleString();
}

// A small DOM builder: text only ever goes in as textContent, never as HTML, because
// hosts, names and process names are whatever the crawlers sent.
export function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "className") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// Seconds since the epoch of an API time, keeping its microseconds (Date.parse keeps ms only:
// kernels are often shorter than a millisecond).
export function seconds(iso) {
  const fraction = /\.(\d+)/.exec(iso);
  const whole = Date.parse(fraction ? iso.replace(fraction[0], "") : iso) / 1000;
  return fraction ? whole + Number(`0.${fraction[1]}`) : whole;
}

// A time of day to the microsecond, for a span's start and end.
export function clockMicros(sec) {
  const whole = Math.floor(sec);
  const micros = String(Math.min(999999, Math.round((sec - whole) * 1e6))).padStart(6, "0");
  return `${new Date(whole * 1000).toLocaleTimeString("en-GB", { hour12: false })}.${micros}`;
}

// Nanoseconds as the unit that reads best: 850 ns, 250 µs, 1.5 ms, 2.3 s.
export function nanos(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return MISSING;
  if (Math.abs(value) < 1e3) return number(value, " ns");
  if (Math.abs(value) < 1e6) return number(value / 1e3, " µs");
  if (Math.abs(value) < 1e9) return number(value / 1e6, " ms");
  return number(value / 1e9, " s");
}

// How long something lasted, in milliseconds: 12.5 s, 3 min 20 s, 2 h 5 min, 3 d 4 h.
export function elapsed(milliseconds) {
  if (!Number.isFinite(milliseconds)) return MISSING;
  const seconds = Math.max(0, milliseconds / 1000);
  if (seconds < 60) return number(seconds, " s");
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.floor(seconds % 60)} s`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ${minutes % 60} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}
