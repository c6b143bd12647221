// Small DOM tools shared by the pages: element builder, once-per-frame rendering,
// polling loops that stop with their page, formatting and a capped data table.

/** h("div", {class: "x", onclick: fn}, "text", child) → element. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    // Through the CSSOM: the page's Content-Security-Policy refuses style attributes.
    else if (k === "style") el.style.cssText = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, v);
  }
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

/** Wrap ``fn`` so that any number of calls within one frame run it once. */
export function onFrame(fn) {
  let pending = false;
  return () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      fn();
    });
  };
}

/**
 * Run ``fn`` now and every ``ms`` after it finishes (calls never overlap).
 * Returns ``stop``. Errors go to ``onError`` and the loop carries on.
 */
export function every(ms, fn, onError = console.error) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    try {
      await fn();
    } catch (err) {
      if (!stopped) onError(err);
    }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

const nf = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
const compact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });

export function fmtNum(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  return Math.abs(v) >= 100_000 ? compact.format(v) : nf.format(v);
}

export function fmtRate(v) {
  if (v === null || v === undefined) return "–";
  const digits = v >= 100 || v === 0 ? 0 : v >= 1 ? 1 : 2;
  return `${fmtNum(+v.toFixed(digits))}/s`;
}

/** Seconds as a short duration: 850 ms, 42 s, 5 min 3 s, 13 h 18 min, 2 d 4 h. */
export function fmtDuration(s) {
  if (s === null || s === undefined || Number.isNaN(s)) return "–";
  const sign = s < 0 ? "-" : "";
  s = Math.abs(s);
  if (s < 1) return `${sign}${Math.round(s * 1000)} ms`;
  if (s < 60) return `${sign}${+s.toFixed(1)} s`;
  const parts = [[86400, "d"], [3600, "h"], [60, "min"], [1, "s"]];
  const out = [];
  for (const [size, unit] of parts) {
    if (s >= size && out.length < 2) {
      out.push(`${Math.floor(s / size)} ${unit}`);
      s %= size;
    } else if (out.length) break;
  }
  return sign + out.join(" ");
}

export function fmtBytes(v) {
  if (v === null || v === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${nf.format(v)} ${units[i]}`;
}

/** Epoch ms of a time the API wrote (epoch ms, or ISO text; text without a zone is UTC). */
export function timeMs(v) {
  if (typeof v === "number") return v;
  const text = String(v).replace(" ", "T");
  return Date.parse(/(Z|[+-]\d\d:?\d\d)$/i.test(text) ? text : `${text}Z`);
}

function toDate(v) {
  if (v === null || v === undefined || v === "") return null;
  const d = new Date(timeMs(v));
  return Number.isNaN(d.getTime()) ? null : d;
}

/** Every time on the dashboard reads the same: ISO UTC, "2026-12-06 10:00:00Z" (ms when any). */
export function fmtTime(v) {
  const d = toDate(v);
  if (!d) return v === null || v === undefined || v === "" ? "–" : String(v);
  return d.toISOString().replace("T", " ").replace(/\.000Z$/, "Z");
}

/** A ``<time>`` showing ``fmtTime(v)``, with the browser's local time on hover. */
export function timeEl(v) {
  const d = toDate(v);
  return h("time", {
    datetime: d ? d.toISOString() : null,
    title: d ? `${d.toLocaleString(undefined, { timeZoneName: "short" })} (local time)` : null,
  }, fmtTime(v));
}

/** An ISO-8601 time as the API writes it (browsers' Date.parse accepts far more). */
export function isTimeText(v) {
  return typeof v === "string" && /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}/.test(v);
}

/** A cell's text: objects as JSON, long text cut (the title keeps it whole). */
export function cellText(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "object") return JSON.stringify(v);
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : nf.format(v);
  return String(v);
}

const CELL_CHARS = 80; // longer cells are cut; the title keeps the whole text

/** A table of ``rows`` (arrays) under ``columns``, at most ``cap`` rows shown. */
export function dataTable(columns, rows, { cap = 500, rowAttrs } = {}) {
  const shown = rows.slice(0, cap);
  const body = shown.map((r, i) =>
    h(
      "tr",
      rowAttrs ? rowAttrs(r, i) : {},
      r.map((v) => {
        if (isTimeText(v)) return h("td", { class: "nowrap" }, timeEl(v));
        const text = cellText(v);
        const shown = text.length > CELL_CHARS ? `${text.slice(0, CELL_CHARS)}…` : text;
        return h("td", { title: shown !== text ? text : null, class: typeof v === "number" ? "num" : null }, shown);
      }),
    ),
  );
  const table = h(
    "table",
    { class: "data cells" },
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c)))),
    h("tbody", {}, body),
  );
  const note =
    rows.length > cap ? h("p", { class: "muted small" }, `showing ${cap} of ${rows.length} rows`) : null;
  return h("div", { class: "table-wrap" }, table, note);
}

/** Replace the children of ``el``. */
export function fill(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

/**
 * Make ``el``'s children look like ``children``, keeping every node whose tag stays and
 * changing only its text and attributes. For views refreshed on a timer: a link being
 * clicked while the view refreshes is still the same node, so the click is not lost
 * (a replaced node would take the press and leave the release to its successor).
 * Only for markup without listeners: a kept node keeps its old ones.
 */
export function update(el, ...children) {
  morphChildren(el, children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

function morphChildren(el, next) {
  const old = Array.from(el.childNodes);
  next.forEach((n, i) => {
    const o = old[i];
    if (!o) el.appendChild(n);
    else if (o.nodeType === n.nodeType && o.nodeName === n.nodeName) morph(o, n);
    else el.replaceChild(n, o);
  });
  for (let i = old.length - 1; i >= next.length; i--) el.removeChild(old[i]);
}

function morph(o, n) {
  if (o.nodeType !== Node.ELEMENT_NODE) {
    if (o.nodeValue !== n.nodeValue) o.nodeValue = n.nodeValue;
    return;
  }
  for (const a of Array.from(o.attributes)) if (!n.hasAttribute(a.name)) o.removeAttribute(a.name);
  for (const a of Array.from(n.attributes)) {
    if (o.getAttribute(a.name) === a.value) continue;
    // styles through the CSSOM, as ``h`` sets them (the CSP refuses style attributes)
    if (a.name === "style") o.style.cssText = n.style.cssText;
    else o.setAttribute(a.name, a.value);
  }
  morphChildren(o, Array.from(n.childNodes));
}

/** A status pill: ok / warn / bad / idle. */
export function pill(text, tone) {
  return h("span", { class: `pill ${tone}` }, text);
}

/** A pipeline's status: running, paused, failed. */
export function statusPill(status) {
  return pill(status, { running: "ok", paused: "warn", failed: "bad" }[status] || "idle");
}

export function errorBox(err) {
  const code = err && err.code ? err.code : "error";
  return h("div", { class: "alert", role: "alert" }, h("code", {}, code), " ", err.message || String(err));
}
