// A live chart of a result table: pick the x column and y columns (and a column to
// split series by). New and changed rows arrive over server-sent events; when the
// server has no feed for the table, the latest rows are polled instead.

import { api, enc, session } from "./api.js";
import { Chart } from "./charts.js";
import { every, fill, h, isTimeText, onFrame, timeMs } from "./dom.js";

const MAX_ROWS = 5000; // rows kept in the browser; the oldest (by x) go first
const MAX_GROUPS = 10;
const MAX_BARS = 60;
const POLL_MS = 2000;

export class ResultChart {
  constructor(container, table, key = []) {
    this.table = table;
    this.key = key; // the columns a changed row is matched by (the pipeline's output key)
    this.rows = new Map();
    this.updates = 0;
    this.columns = [];
    this.x = h("select", { "aria-label": "x column", "data-testid": "x-column" });
    this.group = h("select", { "aria-label": "series by", "data-testid": "group-column" });
    this.ys = h("div", { class: "checks-inline", "data-testid": "y-columns" });
    this.mode = h("span", { class: "muted small", "data-testid": "live-mode" }, "connecting…");
    this.count = h("span", { class: "muted small", "data-testid": "update-count" }, "0 updates");
    const box = h("div");
    container.append(
      h("div", { class: "card-head" }, h("h2", {}, `Results: ${table}`), h("span", { class: "spacer" }), this.mode, this.count),
      h("div", { class: "controls" }, h("label", {}, "x ", this.x), h("label", {}, "series by ", this.group), this.ys),
      box,
    );
    this.chart = new Chart(box, { height: 280 });
    this.chart.root.dataset.testid = "result-chart";
    this.chart.legend.dataset.testid = "result-legend";
    this.render = onFrame(() => this.draw());
    for (const el of [this.x, this.group, this.ys]) el.addEventListener("change", this.render);
    this.start();
  }

  /** Subscribe first, then read the table: no change falls between the two. */
  async start() {
    this.subscribe();
    await this.reload(false);
  }

  /** Read the latest rows; ``overwrite`` false keeps rows already received live (newer). */
  async reload(overwrite = true) {
    try {
      const { rows } = await api(`/v1/tables/${enc(this.table)}/rows?order=desc&limit=1000`);
      this.add(rows, overwrite);
    } catch (err) {
      if (err.status !== 404) this.mode.textContent = `reading rows failed: ${err.message}`;
      // 404: the table has no rows yet; they will come over the feed.
    }
  }

  subscribe() {
    const url = `/v1/tables/${enc(this.table)}/subscribe?key=${enc(session.key || "")}`;
    this.source = new EventSource(url);
    const onData = (e) => {
      const data = JSON.parse(e.data);
      if (data && data.kind === "resync") this.reload(); // the feed dropped events: re-read
      else this.add(rowsOf(data));
    };
    this.source.onmessage = onData;
    this.source.onopen = () => (this.mode.textContent = "live (server-sent events)");
    this.source.onerror = () => {
      if (this.source.readyState !== EventSource.CLOSED) {
        this.mode.textContent = "reconnecting…";
        return;
      }
      // The server refused the feed (no such route, or no key on it): poll instead.
      this.source = null;
      this.mode.textContent = "live (polling)";
      this.stopPoll = every(POLL_MS, async () => {
        const { rows } = await api(`/v1/tables/${enc(this.table)}/rows?order=desc&limit=500`);
        this.add(rows);
      }, () => (this.mode.textContent = "polling failed; retrying"));
    };
  }

  destroy() {
    if (this.source) this.source.close();
    if (this.stopPoll) this.stopPoll();
    this.chart.destroy();
  }

  add(rows, overwrite = true) {
    if (!rows.length) return;
    if (!this.columns.length) this.setColumns(rows[0]);
    const xcol = this.x.value;
    for (const r of rows) {
      const id = identity(r, this.key, this.columns, xcol);
      if (overwrite || !this.rows.has(id)) this.rows.set(id, r);
    }
    if (this.rows.size > MAX_ROWS) {
      const sorted = [...this.rows.entries()].sort((a, b) => xValue(a[1][xcol]) - xValue(b[1][xcol]));
      this.rows = new Map(sorted.slice(sorted.length - MAX_ROWS));
    }
    this.updates += rows.length;
    this.render();
  }

  setColumns(sample) {
    this.columns = Object.keys(sample).filter((c) => !c.startsWith("_"));
    const numeric = this.columns.filter((c) => typeof sample[c] === "number");
    const text = this.columns.filter((c) => typeof sample[c] === "string" && !isTimeText(sample[c]));
    const times = this.columns.filter((c) => isTimeText(sample[c]));
    const xDefault = this.columns.includes("window_start") ? "window_start" : times[0] || this.columns[0];
    fill(this.x, this.columns.map((c) => h("option", { value: c, selected: c === xDefault }, c)));
    const gDefault = text.find((c) => c !== xDefault) || "";
    fill(this.group, h("option", { value: "" }, "(none)"), text.map((c) => h("option", { value: c, selected: c === gDefault }, c)));
    const yDefault = numeric.filter((c) => c !== xDefault).slice(0, 1);
    fill(this.ys, numeric.map((c) => h("label", {},
      h("input", { type: "checkbox", value: c, checked: yDefault.includes(c) }), ` ${c}`)));
  }

  draw() {
    this.count.textContent = `${this.updates} updates, ${this.rows.size} rows`;
    this.count.dataset.updates = String(this.updates);
    const xcol = this.x.value;
    const ycols = [...this.ys.querySelectorAll("input:checked")].map((i) => i.value);
    const rows = [...this.rows.values()];
    const sample = rows.length ? rows[0][xcol] : null;
    const categorical = typeof sample === "string" && !isTimeText(sample);
    if (categorical) this.drawBars(rows, xcol, ycols);
    else this.drawLines(rows, xcol, ycols, typeof sample === "string");
  }

  /** x is a time or a number: one line per y column (and per group, when split). */
  drawLines(rows, xcol, ycols, time) {
    const gcol = this.group.value;
    rows.sort((a, b) => xValue(a[xcol]) - xValue(b[xcol]));
    const groups = new Map();
    for (const r of rows) {
      const g = gcol ? String(r[gcol]) : "";
      if (!groups.has(g)) groups.set(g, []);
      groups.get(g).push(r);
    }
    // Keep the groups seen most recently when there are too many to read.
    const kept = [...groups.entries()]
      .sort((a, b) => xValue(b[1][b[1].length - 1][xcol]) - xValue(a[1][a[1].length - 1][xcol]))
      .slice(0, MAX_GROUPS)
      .sort((a, b) => a[0].localeCompare(b[0]));
    const series = [];
    for (const [g, grows] of kept) {
      const xs = grows.map((r) => xValue(r[xcol]));
      for (const y of ycols) {
        const name = gcol ? (ycols.length > 1 ? `${g} ${y}` : g) : y;
        series.push({ name, xs, ys: grows.map((r) => numberOr(r[y])) });
      }
    }
    this.chart.kind = "line";
    this.chart.time = time;
    this.chart.set(series);
  }

  /** x is a label (a device, a category): bars per label, the first MAX_BARS in order. */
  drawBars(rows, xcol, ycols) {
    rows.sort((a, b) => String(a[xcol]).localeCompare(String(b[xcol]), undefined, { numeric: true }));
    const shown = rows.slice(0, MAX_BARS);
    const categories = shown.map((r) => String(r[xcol]));
    const xs = shown.map((_, i) => i);
    this.chart.kind = "bar";
    this.chart.time = false;
    this.chart.set(ycols.map((y) => ({ name: y, xs, ys: shown.map((r) => numberOr(r[y])) })), { categories });
  }
}

function numberOr(v) {
  return typeof v === "number" ? v : NaN;
}

/** The rows of one server-sent event, whatever its envelope. */
export function rowsOf(data) {
  if (Array.isArray(data)) return data;
  if (data && Array.isArray(data.rows)) return data.rows;
  if (data && data.row && typeof data.row === "object") return [data.row];
  return data && typeof data === "object" ? [data] : [];
}

/** A row's identity: its key columns, else its x value and non-numeric columns. */
function identity(row, key, columns, xcol) {
  if (key.length) return JSON.stringify(key.map((c) => row[c]));
  return JSON.stringify([row[xcol], ...columns.filter((c) => typeof row[c] !== "number").map((c) => row[c])]);
}

function xValue(v) {
  if (typeof v === "number") return v;
  const t = timeMs(v);
  return Number.isNaN(t) ? 0 : t;
}
