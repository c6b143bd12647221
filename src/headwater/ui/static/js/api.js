// The public HTTP API, as any client reads it: a bearer key on every call, JSON errors
// shaped {"error": {"code", "message"}}. A 401 signs the user out with the server's message.

const KEY_SLOT = "headwater.key";

export const session = {
  get key() {
    return sessionStorage.getItem(KEY_SLOT);
  },
  set(key) {
    sessionStorage.setItem(KEY_SLOT, key);
  },
  clear() {
    sessionStorage.removeItem(KEY_SLOT);
  },
};

export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

// Listeners learn about every answer: the connection dot and the 401 handler use it.
const listeners = new Set();
export function onAnswer(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}
function tell(status, error) {
  for (const fn of listeners) fn(status, error);
}

async function request(path, { method = "GET", body, signal, key = session.key } = {}) {
  const headers = { Accept: "application/json" };
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    const error = new ApiError(0, "unreachable", `the server did not answer (${err.message})`);
    tell(0, error);
    throw error;
  }
  if (response.ok) {
    tell(response.status, null);
    return response;
  }
  let payload = null;
  try {
    payload = await response.json();
  } catch {
    // not JSON: keep the status line
  }
  const e = (payload && payload.error) || {};
  const error = new ApiError(
    response.status,
    e.code || `http_${response.status}`,
    e.message || `${response.status} ${response.statusText}`,
    payload,
  );
  tell(response.status, error);
  throw error;
}

/** JSON answer of a call; throws ApiError. */
export async function api(path, options) {
  const response = await request(path, options);
  return response.json();
}

/** Text answer of a call (Prometheus /metrics). */
export async function apiText(path, options) {
  const response = await request(path, options);
  return response.text();
}

/** JSON answer, or null when the route does not exist (yet) on this server. */
export async function apiOptional(path, options) {
  try {
    return await api(path, options);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404 && err.code === "not_found") return null;
    throw err;
  }
}

/** Liveness needs no key: it tells whether the process answers at all. */
export async function health() {
  const response = await fetch("/health");
  return response.json();
}

/** Check a key before keeping it. */
export async function checkKey(key) {
  await request("/v1/streams", { key });
}

export const enc = encodeURIComponent;

/** Prometheus text → [{name, labels, value}] (only the samples, comments skipped). */
export function parseMetrics(text) {
  const out = [];
  const line = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/;
  const label = /(\w+)="((?:[^"\\]|\\.)*)"/g;
  for (const raw of text.split("\n")) {
    if (!raw || raw[0] === "#") continue;
    const m = line.exec(raw);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || "").matchAll(label)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}
