// Pipeline page: SQL, status with pause / resume, metrics over time, and a live chart
// of its result table (server-sent events, or polling when the server has no feed).

import { api, enc } from "./api.js";
import { Chart, Ring } from "./charts.js";
import { errorBox, every, fill, fmtBytes, fmtDuration, fmtNum, h, statusPill, timeEl } from "./dom.js";
import { pipelineControls } from "./pipeline_edit.js";
import { ResultChart } from "./results.js";

const POINTS = 150;

export const STATELESS_LAG =
  "A stateless pipeline (filter, project, enrich) keeps no windows and no watermark, so it has no "
  + "event-time lag: each row is written as soon as it is read. See the log lag for how far behind it is.";

export function mount(root, [name]) {
  const path = `/v1/pipelines/${enc(name)}`;
  const els = {
    status: h("span", { "data-testid": "pipeline-status" }),
    reason: h("span", { class: "muted" }),
    sql: h("pre", { class: "sql", "data-testid": "pipeline-sql" }),
    facts: h("div", { class: "facts" }),
    answer: h("div", { class: "answer" }),
    results: h("section", { class: "card" }),
  };
  const pauseBtn = h("button", { type: "button", onclick: () => act("pause") }, "Pause");
  const resumeBtn = h("button", { type: "button", onclick: () => act("resume") }, "Resume");
  const throughputBox = h("div");
  const logLagBox = h("div");
  const timeLagBox = h("div");
  const noLag = h("p", { class: "muted no-lag", hidden: true, title: STATELESS_LAG, "data-testid": "no-lag" },
    h("span", { class: "big" }, "—"), h("br"), STATELESS_LAG);
  let current = null;
  const controls = pipelineControls(name, {
    view: els.sql, answer: els.answer, currentSql: () => (current ? current.sql : ""), onReplaced: (p) => {
      if (results) results.destroy();
      results = null;
      els.results.replaceChildren();
      show(p);
    },
  });
  root.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/" }, "Overview"), " / pipeline"),
    h("div", { class: "title-row" }, h("h1", {}, name), els.status, els.reason, h("span", { class: "spacer" }),
      pauseBtn, resumeBtn, ...controls.buttons),
    els.answer,
    h("section", { class: "grid2" },
      h("div", { class: "card" }, h("h2", {}, "SQL"), els.sql, controls.panel),
      h("div", { class: "card" }, h("h2", {}, "Now"), els.facts)),
    h("section", { class: "grid3" },
      h("div", { class: "card" }, h("h2", {}, "Rows per second"), throughputBox),
      h("div", { class: "card" }, h("h2", {}, "Log lag (rows)"), logLagBox),
      h("div", { class: "card" }, h("h2", {}, "Event-time lag (s)"), timeLagBox, noLag)),
    els.results,
  );
  const throughput = new Chart(throughputBox, { height: 160 });
  const logLag = new Chart(logLagBox, { height: 160 });
  const timeLag = new Chart(timeLagBox, { height: 160 });
  const rings = { in: new Ring(POINTS), out: new Ring(POINTS), logLag: new Ring(POINTS), timeLag: new Ring(POINTS) };
  let prev = null;
  let results = null;

  function show(p) {
    current = p;
    const m = p.metrics || {};
    const stateless = p.kind === "stateless";
    fill(els.status, statusPill(p.status));
    els.reason.textContent = p.reason || "";
    pauseBtn.disabled = p.status !== "running";
    resumeBtn.disabled = p.status === "running";
    if (els.sql.textContent !== p.sql) els.sql.textContent = p.sql;
    fill(els.facts, [
      ["watermark", timeEl(p.watermark)], ["rows in", fmtNum(m.rows_in)], ["rows out", fmtNum(m.rows_out)],
      ["late rows", fmtNum(m.late_rows)], ["error rows", fmtNum(m.error_rows)], ["log lag", `${fmtNum(m.log_lag_rows)} rows`],
      ["event-time lag", stateless ? h("span", { title: STATELESS_LAG, "data-testid": "event-time-lag" }, "—")
        : h("span", { "data-testid": "event-time-lag" }, fmtDuration(m.event_time_lag_s))], ["state", `${fmtNum(m.state_keys)} keys, ${fmtBytes(m.state_bytes)}`],
      ["batch p50", m.batch_ms_p50 == null ? "–" : `${fmtNum(m.batch_ms_p50)} ms`], ["output table", p.output_table || name],
    ].map(([k, v]) => h("div", { class: "fact" }, h("span", { class: "muted small" }, k), h("b", {}, v))));
    const now = Date.now();
    if (prev) {
      const dt = (now - prev.at) / 1000;
      rings.in.push(now, Math.max(0, ((m.rows_in ?? 0) - prev.in) / dt));
      rings.out.push(now, Math.max(0, ((m.rows_out ?? 0) - prev.out) / dt));
    }
    prev = { at: now, in: m.rows_in ?? 0, out: m.rows_out ?? 0 };
    rings.logLag.push(now, m.log_lag_rows ?? NaN);
    rings.timeLag.push(now, m.event_time_lag_s ?? NaN);
    throughput.set([{ name: "rows in", ...rings.in.arrays() }, { name: "rows out", ...rings.out.arrays() }]);
    logLag.set([{ name: "rows behind the log end", ...rings.logLag.arrays() }]);
    timeLag.set([{ name: "now − watermark", ...rings.timeLag.arrays() }]);
    timeLagBox.hidden = stateless;
    noLag.hidden = !stateless;
    if (!results) results = new ResultChart(els.results, p.output_table || name, p.output_key || []);
  }

  async function act(verb) {
    try {
      await api(`${path}/${verb}`, { method: "POST" });
      fill(els.answer);
      show(await api(path));
    } catch (err) {
      fill(els.answer, errorBox(err));
    }
  }

  const stop = every(2000, async () => show(await api(path)), (err) => {
    const missing = err.status === 404 && err.code === "not_found";
    fill(els.answer, missing ? h("div", { class: "alert" }, "This server has no pipelines API.") : errorBox(err));
  });
  return () => {
    stop();
    for (const chart of [throughput, logLag, timeLag]) chart.destroy();
    if (results) results.destroy();
  };
}
