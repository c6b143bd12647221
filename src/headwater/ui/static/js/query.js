// Query page: read-only SQL over the tenant's streams and tables, a result table and
// a quick line or bar chart of one column.

import { api } from "./api.js";
import { Chart } from "./charts.js";
import { dataTable, errorBox, fill, h, isTimeText, timeMs } from "./dom.js";
import { SqlEditor } from "./editor.js";

const LAST_SQL = "headwater.sql";
const MAX_SHOWN = 1000;
const MAX_SERIES = 12;

export function mount(root) {
  const sql = new SqlEditor({ label: "SQL", testid: "sql", rows: 6 });
  sql.value = sessionStorage.getItem(LAST_SQL) || "SELECT 1 AS one";
  const run = h("button", { type: "submit", "data-testid": "run" }, "Run");
  const status = h("span", { class: "muted small", "data-testid": "query-status" });
  const result = h("div", { "data-testid": "result" });
  const xSel = h("select", { "aria-label": "chart x" });
  const ySel = h("select", { "aria-label": "chart y" });
  const split = h("select", { "aria-label": "chart series by" });
  const kind = h("select", { "aria-label": "chart kind" }, h("option", { value: "line" }, "line"), h("option", { value: "bar" }, "bar"));
  const chartBox = h("div", { "data-testid": "query-chart" });
  const chartCard = h("section", { class: "card", hidden: true },
    h("div", { class: "card-head" }, h("h2", {}, "Chart"), h("span", { class: "spacer" }),
      h("label", {}, "x ", xSel), h("label", {}, "y ", ySel), h("label", {}, "series by ", split), kind),
    chartBox);
  const tables = h("div", { class: "chips small muted", "data-testid": "tables" });

  root.append(
    h("h1", {}, "Query"),
    h("section", { class: "card" },
      h("form", { class: "query-form", onsubmit: (e) => { e.preventDefault(); execute(); } },
        sql.root, h("div", { class: "row" }, run, status, h("span", { class: "spacer" }), h("span", { class: "muted small" }, "Ctrl+Enter runs"))),
      tables),
    h("section", { class: "card" }, h("h2", {}, "Result"), result),
    chartCard,
  );
  sql.area.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      execute();
    }
  });
  api("/v1/tables").then(({ tables: names }) => {
    fill(tables, h("span", {}, "Tables:"), names.length ? names.map((n) => h("code", {
      class: "chip", title: "insert a query of this table",
      onclick: () => { sql.value = `SELECT * FROM ${n} LIMIT 100`; },
    }, n)) : "none yet");
  }).catch(() => {});

  let chart = null;
  let answer = null;
  const drawChart = () => {
    if (!answer) return;
    if (!chart || chart.kind !== kind.value) {
      if (chart) chart.destroy();
      chartBox.replaceChildren();
      chart = new Chart(chartBox, { kind: kind.value, height: 260 });
    }
    const choice = { xcol: xSel.value, ycol: ySel.value, kind: kind.value, split: split.value };
    chart.set(...chartData(answer, choice, chart));
  };
  for (const el of [xSel, ySel, kind, split]) el.addEventListener("change", drawChart);

  async function execute() {
    sessionStorage.setItem(LAST_SQL, sql.value);
    run.disabled = true;
    status.textContent = "running…";
    const t0 = performance.now();
    try {
      answer = await api("/v1/query", { method: "POST", body: { sql: sql.value } });
      const ms = Math.round(performance.now() - t0);
      status.textContent = `${answer.rows.length} row(s) in ${ms} ms${answer.truncated ? " (truncated by the server)" : ""}`;
      fill(result, answer.columns.length ? dataTable(answer.columns, answer.rows, { cap: MAX_SHOWN }) : h("p", { class: "muted" }, "No columns."));
      setChartChoices(answer, xSel, ySel, kind, split);
      chartCard.hidden = !answer.rows.length;
      drawChart();
    } catch (err) {
      answer = null;
      status.textContent = "failed";
      chartCard.hidden = true;
      fill(result, errorBox(err));
      sql.showError(err);
    } finally {
      run.disabled = false;
    }
  }

  return () => {
    if (chart) chart.destroy();
  };
}

/** Each column's kind from its non-null values: "number", "time" or "label". */
function columnKinds(answer) {
  const rows = answer.rows.slice(0, 200);
  return answer.columns.map((_, i) => {
    const values = rows.map((r) => r[i]).filter((v) => v !== null && v !== undefined);
    if (values.length && values.every((v) => typeof v === "number")) return "number";
    if (values.length && values.every(isTimeText)) return "time";
    return "label";
  });
}

function setChartChoices(answer, xSel, ySel, kind, split) {
  const kinds = columnKinds(answer);
  const of = (k) => answer.columns.filter((_, i) => kinds[i] === k);
  const [numeric, times, labels] = [of("number"), of("time"), of("label")];
  fill(xSel, h("option", { value: "" }, "(row number)"), answer.columns.map((c) => h("option", { value: c }, c)));
  fill(ySel, numeric.map((c) => h("option", { value: c }, c)));
  fill(split, h("option", { value: "" }, "(none)"), labels.map((c) => h("option", { value: c }, c)));
  // Over time: a line, one per label (a device, a category). By label alone: bars.
  xSel.value = times[0] || labels[0] || (numeric.length > 1 ? numeric[0] : "");
  ySel.value = numeric.find((c) => c !== xSel.value) || numeric[0] || "";
  kind.value = !times.length && labels.length ? "bar" : "line";
  split.value = times.length ? labels[0] || "" : "";
}

/** [series, options] for Chart.set: lines over a numeric or time x (split by a label), or bars per row. */
function chartData(answer, { xcol, ycol, kind, split }, chart) {
  const xi = answer.columns.indexOf(xcol);
  const yi = answer.columns.indexOf(ycol);
  const si = kind === "line" ? answer.columns.indexOf(split) : -1;
  const rows = answer.rows.slice(0, MAX_SHOWN);
  const yOf = (r) => (yi >= 0 && typeof r[yi] === "number" ? r[yi] : NaN);
  if (kind === "bar") {
    chart.time = false;
    const categories = rows.map((r, i) => (xi >= 0 ? String(r[xi]) : String(i + 1)));
    return [[{ name: ycol, xs: rows.map((_, i) => i), ys: rows.map(yOf) }], { categories }];
  }
  chart.time = xi >= 0 && rows.some((r) => isTimeText(r[xi]));
  const xOf = (r, i) => {
    const v = xi >= 0 ? r[xi] : i + 1;
    return typeof v === "number" ? v : chart.time ? timeMs(v) : i + 1;
  };
  const groups = new Map();
  rows.forEach((r, i) => {
    const g = si >= 0 ? String(r[si]) : ycol;
    if (!groups.has(g)) groups.set(g, []);
    groups.get(g).push([xOf(r, i), yOf(r)]);
  });
  const series = [...groups.entries()].slice(0, MAX_SERIES).map(([name, points]) => {
    points.sort((a, b) => a[0] - b[0]);
    return { name, xs: points.map((p) => p[0]), ys: points.map((p) => p[1]) };
  });
  return [series, {}];
}
