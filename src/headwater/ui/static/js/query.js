// Query page: read-only SQL over the tenant's streams and tables, a result table and
// a quick line or bar chart of one column.

import { api } from "./api.js";
import { Chart } from "./charts.js";
import { dataTable, errorBox, fill, h, isTimeText } from "./dom.js";
import { SqlEditor } from "./editor.js";

const LAST_SQL = "headwater.sql";
const MAX_SHOWN = 1000;

export function mount(root) {
  const sql = new SqlEditor({ label: "SQL", testid: "sql", rows: 6 });
  sql.value = sessionStorage.getItem(LAST_SQL) || "SELECT 1 AS one";
  const run = h("button", { type: "submit", "data-testid": "run" }, "Run");
  const status = h("span", { class: "muted small", "data-testid": "query-status" });
  const result = h("div", { "data-testid": "result" });
  const xSel = h("select", { "aria-label": "chart x" });
  const ySel = h("select", { "aria-label": "chart y" });
  const kind = h("select", { "aria-label": "chart kind" }, h("option", { value: "line" }, "line"), h("option", { value: "bar" }, "bar"));
  const chartBox = h("div");
  const chartCard = h("section", { class: "card", hidden: true },
    h("div", { class: "card-head" }, h("h2", {}, "Chart"), h("span", { class: "spacer" }),
      h("label", {}, "x ", xSel), h("label", {}, "y ", ySel), kind),
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
    chart.set(...chartData(answer, xSel.value, ySel.value, kind.value, chart));
  };
  for (const el of [xSel, ySel, kind]) el.addEventListener("change", drawChart);

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
      setChartChoices(answer, xSel, ySel, kind);
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

function setChartChoices(answer, xSel, ySel, kind) {
  const first = answer.rows[0] || [];
  const numeric = answer.columns.filter((_, i) => typeof first[i] === "number");
  fill(xSel, h("option", { value: "" }, "(row number)"), answer.columns.map((c) => h("option", { value: c }, c)));
  fill(ySel, numeric.map((c) => h("option", { value: c }, c)));
  const isTime = (i) => isTimeText(first[i]);
  const timeCol = answer.columns.find((_, i) => isTime(i));
  const label = answer.columns.find((c, i) => !numeric.includes(c) && !isTime(i));
  // Over time: a line. By label (a device, a category): bars. Else the first number.
  xSel.value = timeCol || label || (numeric.length > 1 ? numeric[0] : "");
  ySel.value = numeric.find((c) => c !== xSel.value) || numeric[0] || "";
  kind.value = !timeCol && label ? "bar" : "line";
}

/** [series, options] for Chart.set: a line over a numeric or time x, or bars per row. */
function chartData(answer, xcol, ycol, kind, chart) {
  const xi = answer.columns.indexOf(xcol);
  const yi = answer.columns.indexOf(ycol);
  const rows = answer.rows.slice(0, MAX_SHOWN);
  const ys = rows.map((r) => (yi >= 0 && typeof r[yi] === "number" ? r[yi] : NaN));
  if (kind === "bar") {
    chart.time = false;
    const categories = rows.map((r, i) => (xi >= 0 ? String(r[xi]) : String(i + 1)));
    return [[{ name: ycol, xs: rows.map((_, i) => i), ys }], { categories }];
  }
  const raw = rows.map((r, i) => (xi >= 0 ? r[xi] : i + 1));
  chart.time = raw.length > 0 && isTimeText(raw[0]);
  const xs = raw.map((v, i) => (typeof v === "number" ? v : chart.time ? Date.parse(v) : i + 1));
  const order = xs.map((_, i) => i).sort((a, b) => xs[a] - xs[b]);
  return [[{ name: ycol, xs: order.map((i) => xs[i]), ys: order.map((i) => ys[i]) }], {}];
}
