// Overview: health and readiness, ingest rate per stream (from log end offsets polled
// each second), rows accepted / quarantined (Prometheus counters), and pipelines.

import { ApiError, api, apiOptional, apiText, enc, health, parseMetrics } from "./api.js";
import { Ring, sparkline } from "./charts.js";
import { STATELESS_LAG } from "./pipeline.js";
import { every, fill, fmtBytes, fmtDuration, fmtNum, fmtRate, h, onFrame, pill, statusPill, timeEl, update } from "./dom.js";

const RATE_POINTS = 90;

export function mount(root) {
  const els = {
    health: h("div", { class: "checks", "data-testid": "health" }),
    total: h("div", { class: "big", "data-testid": "total-rate" }, "–"),
    totalSpark: null,
    totals: h("div", { class: "facts" }),
    streams: h("tbody"),
    streamsNote: h("p", { class: "muted small" }),
    pipelines: h("div", { "data-testid": "pipelines" }, h("p", { class: "muted" }, "Loading…")),
  };
  const totalBox = h("div", { class: "total" }, h("span", { class: "muted small" }, "ingest rate, all streams"), els.total);
  root.append(
    h("h1", {}, "Overview"),
    h("section", { class: "grid2" },
      h("div", { class: "card" }, h("h2", {}, "Health"), els.health),
      h("div", { class: "card" }, h("h2", {}, "Ingest"), totalBox, els.totals)),
    h("section", { class: "card" },
      h("div", { class: "card-head" }, h("h2", {}, "Streams"), h("span", { class: "spacer" }),
        h("a", { class: "button", href: "#/create/stream", "data-testid": "new-stream" }, "New stream")),
      h("div", { class: "table-wrap" },
        h("table", { class: "data", "data-testid": "streams" },
          h("thead", {}, h("tr", {}, ["Stream", "Rate", "Last 90 s", "Rows in log", "Stored", "Accepted*", "Quarantined*", "Schema"]
            .map((c) => h("th", {}, c)))),
          els.streams)),
      els.streamsNote),
    h("section", { class: "card" },
      h("div", { class: "card-head" }, h("h2", {}, "Pipelines"), h("span", { class: "spacer" }),
        h("a", { class: "button", href: "#/create/pipeline", "data-testid": "new-pipeline" }, "New pipeline")),
      els.pipelines),
  );

  const state = { streams: [], prev: new Map(), rates: new Map(), total: new Ring(RATE_POINTS), counts: new Map() };
  const rows = new Map();
  const render = onFrame(() => renderStreams(els, state, rows, totalBox));

  const stops = [
    every(1000, async () => {
      const { streams } = await api("/v1/streams");
      trackRates(state, streams, performance.now());
      state.streams = streams;
      render();
    }),
    every(2000, async () => {
      state.counts = countsByStream(parseMetrics(await apiText("/metrics")));
      render();
    }),
    every(3000, async () => fill(els.health, await healthView())),
    // kept in place, not replaced: a click on a pipeline's link is not lost to a refresh
    every(2000, async () => update(els.pipelines, await pipelinesView())),
  ];
  return () => stops.forEach((stop) => stop());
}

function trackRates(state, streams, now) {
  let sum = 0;
  let any = false;
  for (const s of streams) {
    const prev = state.prev.get(s.name);
    if (!state.rates.has(s.name)) state.rates.set(s.name, new Ring(RATE_POINTS));
    if (prev) {
      const rate = Math.max(0, (s.log_end_offset - prev.offset) / ((now - prev.at) / 1000));
      state.rates.get(s.name).push(now, rate);
      sum += rate;
      any = true;
    }
    state.prev.set(s.name, { offset: s.log_end_offset, at: now });
  }
  if (any) state.total.push(now, sum);
}

/** Accepted / rejected rows per stream since the server started, from Prometheus counters. */
function countsByStream(samples) {
  const out = new Map();
  for (const s of samples) {
    if (s.name !== "headwater_ingest_rows_total") continue;
    const c = out.get(s.labels.stream) || { accepted: 0, rejected: 0, duplicate: 0 };
    c[s.labels.outcome] = (c[s.labels.outcome] || 0) + s.value;
    out.set(s.labels.stream, c);
  }
  return out;
}

function renderStreams(els, state, rows, totalBox) {
  els.total.textContent = fmtRate(state.total.last());
  const total = state.total.arrays();
  els.totalSpark = sparkline(els.totalSpark, total.ys, { width: 320, height: 48, slots: RATE_POINTS, xs: total.xs });
  if (!els.totalSpark.isConnected) totalBox.append(els.totalSpark);
  const sum = (f) => state.streams.reduce((acc, s) => acc + (f(s) || 0), 0);
  fill(els.totals, [
    ["streams", fmtNum(state.streams.length)],
    ["rows in log", fmtNum(sum((s) => s.log_end_offset))],
    ["quarantined*", fmtNum(sum((s) => s.quarantined ?? (state.counts.get(s.name) || {}).rejected))],
  ].map(([k, v]) => h("div", { class: "fact" }, h("span", { class: "muted small" }, k), h("b", {}, v))));
  if (!state.streams.length) {
    fill(els.streams, h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No streams yet: create one with New stream or POST /v1/streams.")));
    rows.clear();
    return;
  }
  if (!rows.size) els.streams.replaceChildren();
  for (const s of state.streams) {
    let row = rows.get(s.name);
    if (!row) {
      row = streamRow(s.name);
      rows.set(s.name, row);
      els.streams.append(row.tr);
    }
    const ring = state.rates.get(s.name);
    const c = state.counts.get(s.name);
    row.rate.textContent = fmtRate(ring ? ring.last() : null);
    const series = ring ? ring.arrays() : { xs: [], ys: [] };
    row.spark = sparkline(row.spark, series.ys, { slots: RATE_POINTS, xs: series.xs });
    if (!row.spark.isConnected) row.sparkCell.append(row.spark);
    row.total.textContent = fmtNum(s.log_end_offset);
    row.stored.textContent = fmtNum(s.stored_offset);
    row.accepted.textContent = c ? fmtNum(c.accepted) : "–";
    row.rejected.textContent = fmtNum(s.quarantined ?? (c ? c.rejected : null));
    row.version.textContent = `v${s.version} (${s.fields.length} fields)`;
  }
  els.streamsNote.textContent = "* since the server started (Prometheus counters).";
}

function streamRow(name) {
  const cell = (cls) => h("td", { class: cls });
  const row = {
    rate: cell("num rate"), sparkCell: cell(""), total: cell("num total"), stored: cell("num"),
    accepted: cell("num"), rejected: cell("num"), version: cell("muted"), spark: null,
  };
  row.tr = h("tr", { "data-testid": `stream-${name}` },
    h("td", {}, h("a", { href: `#/streams/${enc(name)}` }, name)),
    row.rate, row.sparkCell, row.total, row.stored, row.accepted, row.rejected, row.version);
  return row;
}

async function healthView() {
  const items = [];
  try {
    const live = await health();
    items.push(check("process", live.status === "ok", "answers"));
  } catch (err) {
    items.push(check("process", false, err.message));
  }
  let ready;
  try {
    ready = await api("/ready");
  } catch (err) {
    if (!(err instanceof ApiError) || !err.body || !err.body.checks) throw err;
    ready = err.body; // 503 still lists the checks
  }
  for (const [name, c] of Object.entries(ready.checks)) {
    const detail = c.error || (c.size_bytes !== undefined ? fmtBytes(c.size_bytes) : c.ok ? "ok" : "failing");
    items.push(check(name, c.ok, detail));
  }
  return [h("div", { class: "ready" }, "Readiness: ", pill(ready.status, ready.status === "ready" ? "ok" : "bad")), ...items];
}

function check(name, ok, detail) {
  return h("div", { class: "check", "data-testid": `check-${name}` },
    h("span", { class: `dot ${ok ? "ok" : "bad"}` }), h("b", {}, name), h("span", { class: "muted" }, detail));
}

async function pipelinesView() {
  const answer = await apiOptional("/v1/pipelines");
  if (answer === null) return h("p", { class: "muted" }, "This server has no pipelines API.");
  const list = answer.pipelines || [];
  if (!list.length) return h("p", { class: "muted" }, "No pipelines yet: create one with New pipeline or POST /v1/pipelines.");
  const head = ["Pipeline", "Status", "Watermark", "Log lag", "Event-time lag", "Rows in", "Rows out", "Late", "Errors"];
  return h("div", { class: "table-wrap" }, h("table", { class: "data" },
    h("thead", {}, h("tr", {}, head.map((c) => h("th", {}, c)))),
    h("tbody", {}, list.map((p) => {
      const m = p.metrics || {};
      return h("tr", { "data-testid": `pipeline-${p.name}` },
        h("td", {}, h("a", { href: `#/pipelines/${enc(p.name)}` }, p.name)),
        h("td", { title: p.reason || "" }, statusPill(p.status)),
        h("td", { class: "nowrap" }, timeEl(p.watermark)),
        h("td", { class: "num" }, fmtNum(m.log_lag_rows)),
        p.kind === "stateless"
          ? h("td", { class: "num", title: STATELESS_LAG, "data-testid": "event-time-lag" }, "—")
          : h("td", { class: "num", "data-testid": "event-time-lag" }, fmtDuration(m.event_time_lag_s)),
        h("td", { class: "num" }, fmtNum(m.rows_in)),
        h("td", { class: "num" }, fmtNum(m.rows_out)),
        h("td", { class: "num" }, fmtNum(m.late_rows)),
        h("td", { class: "num" }, fmtNum(m.error_rows)));
    }))));
}
