// The page at #/sinks: every sink with produced = delivered + dead-lettered + pending,
// its breaker, error rate and delivery rate; pause, resume and delete.

import { api } from "./api.js";
import { errorBox, every, fill, fmtDuration, fmtNum, fmtRate, h, pill } from "./dom.js";
import { flowActions, flowPill } from "./sources.js";

const BREAKER_TONES = { closed: "ok", half_open: "warn", open: "bad" };

export function mount(root) {
  const list = h("div", { "data-testid": "sinks-list" });
  const answer = h("div", { class: "answer", "data-testid": "sink-answer" });
  const armed = new Set();
  const seen = new Map(); // name -> {at, delivered}: the delivery rate between two refreshes
  root.append(
    h("div", { class: "title-row" }, h("h1", {}, "Sinks")),
    answer,
    h("section", { class: "card" }, list),
    h("p", { class: "muted small" },
      "Each sink's dead letters are the table <name>_dlq; see docs/sinks.md to create sinks (POST /v1/sinks)."),
  );

  function rate(s) {
    const now = Date.now();
    const before = seen.get(s.name);
    seen.set(s.name, { at: now, delivered: s.delivered ?? 0 });
    if (!before || now <= before.at) return null;
    return Math.max(0, ((s.delivered ?? 0) - before.delivered) / ((now - before.at) / 1000));
  }

  async function load() {
    const { sinks } = await api("/v1/sinks");
    if (!sinks.length) {
      fill(list, h("p", { class: "muted" }, "No sinks yet: create one with POST /v1/sinks (docs/sinks.md)."));
      return;
    }
    const num = (v) => h("td", { class: "num" }, fmtNum(v));
    const rows = sinks.map((s) =>
      h("tr", { "data-sink": s.name },
        h("td", {}, h("b", {}, s.name)), h("td", {}, s.kind),
        h("td", {}, s.from),
        h("td", { "data-testid": "sink-status" }, flowPill(s.status),
          s.reason ? h("div", { class: "muted small error-text" }, s.reason) : null),
        num(s.produced), num(s.delivered), num(s.dead_lettered), num(s.pending),
        h("td", { "data-testid": "sink-breaker" }, s.breaker ? pill(s.breaker, BREAKER_TONES[s.breaker] || "idle") : "–"),
        h("td", { class: "num" }, typeof s.error_rate === "number" ? `${(s.error_rate * 100).toFixed(1)}%` : "–"),
        h("td", { class: "num" }, fmtRate(rate(s))),
        h("td", { class: "num" }, fmtDuration(s.lag_seconds)),
        h("td", {}, flowActions("sinks", s, load, (err) => fill(answer, errorBox(err)), armed))));
    fill(list, h("div", { class: "table-wrap" }, h("table", { class: "data" },
      h("thead", {}, h("tr", {}, ["Name", "Kind", "From", "Status", "Produced", "Delivered", "Dead-lettered",
        "Pending", "Breaker", "Error rate", "Rate", "Lag", ""].map((c) => h("th", {}, c)))),
      h("tbody", {}, rows))));
  }

  return every(2000, load, (err) => fill(list, errorBox(err)));
}
