// The dashboard's only way to the service: GET JSON under the read key, with a deadline.
// The key lives in sessionStorage (this tab, until it closes) and goes out as
// Authorization: Bearer. A 401 is its own error so that the page can ask for a key
// instead of going blank; every other failure carries a message fit to show.

const KEY_ITEM = "gpumetrics.readKey";
const DEADLINE_MS = 30000;

export class AuthError extends Error {}

export class ServiceError extends Error {}

export function storedKey() {
  try {
    return sessionStorage.getItem(KEY_ITEM);
  } catch {
    return null; // storage disabled: the key lives only as long as the page
  }
}

let memoryKey = null;

export function currentKey() {
  return storedKey() ?? memoryKey;
}

export function saveKey(key) {
  memoryKey = key;
  try {
    sessionStorage.setItem(KEY_ITEM, key);
  } catch {
    // kept in memory only
  }
}

export function forgetKey() {
  memoryKey = null;
  try {
    sessionStorage.removeItem(KEY_ITEM);
  } catch {
    // nothing stored
  }
}

// The service's clock minus ours, in ms, from the Date header of the last answer:
// "last seen 5 s ago" must not depend on the browser's clock being right.
let clockOffsetMs = 0;

export function serverNow() {
  return Date.now() + clockOffsetMs;
}

function noteServerClock(response, sentAt) {
  const date = Date.parse(response.headers.get("Date") ?? "");
  if (Number.isFinite(date)) {
    // The header has whole seconds: keep an offset only when it is clearly more than that.
    const offset = date - (sentAt + Date.now()) / 2;
    clockOffsetMs = Math.abs(offset) > 1500 ? offset : 0;
  }
}

export function query(path, params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params ?? {})) {
    for (const one of Array.isArray(value) ? value : [value]) {
      if (one !== undefined) search.append(name, one === null ? "" : String(one));
    }
  }
  const text = search.toString();
  return text ? `${path}?${text}` : path;
}

async function messageOf(response) {
  try {
    const body = await response.json();
    return body.message || `${response.status} ${response.statusText}`;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

export async function getJson(path, params) {
  const headers = { Accept: "application/json" };
  const key = currentKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  const url = query(path, params);
  const sentAt = Date.now();
  let response;
  try {
    response = await fetch(url, { headers, signal: AbortSignal.timeout(DEADLINE_MS) });
  } catch (error) {
    const why =
      error.name === "TimeoutError" ? `no answer within ${DEADLINE_MS / 1000} s` : "the service is unreachable";
    throw new ServiceError(`${path}: ${why}`);
  }
  noteServerClock(response, sentAt);
  if (response.status === 401) throw new AuthError(await messageOf(response));
  if (!response.ok) throw new ServiceError(`${path}: ${await messageOf(response)}`);
  return response.json();
}
