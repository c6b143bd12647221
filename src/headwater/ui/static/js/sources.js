// The page at #/sources: every source with its status, position, counters and last error;
// pause, resume and delete; and a form that creates one from a kind and a JSON config.

import { api, enc } from "./api.js";
import { errorBox, every, fill, fmtNum, h, pill } from "./dom.js";

// A starting config per kind (docs/sources.md has every option).
export const EXAMPLES = {
  poll: { url: "https://api.example.com/events?limit=100", interval: "30s", items: "data", next: "next" },
  mqtt: { url: "mqtt://127.0.0.1:1883", topics: ["devices/+/telemetry"], qos: 1,
    topic_fields: "devices/{device_id}/telemetry" },
  file: { path: "/srv/inbox/readings", pattern: "*.ndjson" },
  webhook: { verify: "hmac", secret: "change-me", header: "X-Signature" },
  kafka: { bootstrap: "127.0.0.1:9092", topics: ["readings"], group: "headwater" },
  nats: { url: "nats://127.0.0.1:4222", subject: "readings.>" },
  postgres_cdc: { dsn: "postgresql://user@127.0.0.1:5432/app", tables: ["public.orders"] },
};

const TONES = { running: "ok", paused: "warn", backing_off: "warn", failed: "bad" };

/** A source's or sink's status: running, paused, backing_off, failed. */
export function flowPill(status) {
  return pill(status, TONES[status] || "idle");
}

/**
 * Pause / Resume / Delete buttons for ``/v1/<what>/<name>``. Delete asks twice; ``armed``
 * (a Set kept by the page) remembers the first click across the list's refreshes.
 */
export function flowActions(what, item, after, onError, armed) {
  const path = `/v1/${what}/${enc(item.name)}`;
  const act = async (method, suffix) => {
    try {
      await api(path + suffix, { method });
      await after();
    } catch (err) {
      onError(err);
    }
  };
  const paused = item.status === "paused";
  const asked = armed.has(item.name);
  const del = h("button", { class: asked ? "small danger" : "ghost small", type: "button" },
    asked ? "Really delete?" : "Delete");
  del.addEventListener("click", () => {
    if (armed.has(item.name)) {
      armed.delete(item.name);
      act("DELETE", "");
    } else {
      armed.add(item.name);
      del.textContent = "Really delete?";
      del.className = "small danger";
    }
  });
  return h("span", { class: "row nowrap" },
    paused
      ? h("button", { class: "small", type: "button", onclick: () => act("POST", "/resume") }, "Resume")
      : h("button", { class: "small", type: "button", onclick: () => act("POST", "/pause") }, "Pause"),
    del);
}

function position(s) {
  const open = Object.keys(s.positions || {}).length;
  const text = s.position ?? "–";
  const more = open > 1 ? ` (${open} partitions${s.partitions_done ? `, ${s.partitions_done} done` : ""})` : "";
  return h("span", { class: "raw", title: JSON.stringify(s.positions || {}) }, `${text}${more}`);
}

export function mount(root) {
  const list = h("div", { "data-testid": "sources-list" });
  const answer = h("div", { class: "answer", "data-testid": "source-answer" });
  const name = h("input", { type: "text", "aria-label": "source name", placeholder: "fleet", required: true });
  const kind = h("select", { "aria-label": "source kind" },
    Object.keys(EXAMPLES).map((k) => h("option", { value: k }, k)));
  const stream = h("select", { "aria-label": "stream", required: true });
  const config = h("textarea", { class: "sql-input", rows: 8, "aria-label": "source config (JSON)", spellcheck: "false" });
  let edited = false;
  config.addEventListener("input", () => (edited = true));
  kind.addEventListener("change", () => {
    if (!edited) config.value = JSON.stringify(EXAMPLES[kind.value], null, 2);
  });
  config.value = JSON.stringify(EXAMPLES[kind.value], null, 2);
  const create = h("button", { type: "submit", "data-testid": "create-source" }, "Create source");
  const armed = new Set();

  root.append(
    h("div", { class: "title-row" }, h("h1", {}, "Sources")),
    h("section", { class: "card" }, list),
    h("section", { class: "card" },
      h("h2", {}, "New source"),
      h("form", { onsubmit: (e) => { e.preventDefault(); submit(); } },
        h("div", { class: "row" }, h("label", {}, "Name ", name), h("label", {}, "Kind ", kind),
          h("label", {}, "Stream ", stream)),
        h("label", { class: "block" }, "Config (JSON) ", config),
        answer,
        h("div", { class: "row" }, create))),
  );

  async function load() {
    const [{ sources }, { streams }] = await Promise.all([api("/v1/sources"), api("/v1/streams")]);
    const was = stream.value;
    fill(stream, streams.map((s) => h("option", { value: s.name, selected: s.name === was }, s.name)));
    if (!sources.length) {
      fill(list, h("p", { class: "muted" }, "No sources yet: create one below."));
      return;
    }
    const rows = sources.map((s) =>
      h("tr", { "data-source": s.name },
        h("td", {}, h("b", {}, s.name)), h("td", {}, s.kind), h("td", {}, h("a", { href: `#/streams/${enc(s.stream)}` }, s.stream)),
        h("td", { "data-testid": "source-status" }, flowPill(s.status),
          s.reason ? h("div", { class: "muted small" }, s.reason) : null),
        h("td", {}, position(s)), h("td", { class: "num" }, fmtNum(s.rows_in)),
        h("td", { class: "num" }, fmtNum(s.rows_rejected)), h("td", { class: "num" }, fmtNum(s.lag)),
        h("td", { class: s.last_error ? "error-text" : "muted", "data-testid": "source-error", title: s.last_error || "" },
          s.last_error || "–"),
        h("td", {}, flowActions("sources", s, load, (err) => fill(answer, errorBox(err)), armed))));
    fill(list, h("div", { class: "table-wrap" }, h("table", { class: "data" },
      h("thead", {}, h("tr", {}, ["Name", "Kind", "Stream", "Status", "Position", "Rows in", "Rejected", "Lag",
        "Last error", ""].map((c) => h("th", {}, c)))),
      h("tbody", {}, rows))));
  }

  async function submit() {
    fill(answer);
    let parsed;
    try {
      parsed = JSON.parse(config.value || "{}");
    } catch (err) {
      fill(answer, errorBox({ code: "bad_json", message: `the config is not JSON: ${err.message}` }));
      return;
    }
    create.disabled = true;
    try {
      const body = { name: name.value.trim(), kind: kind.value, stream: stream.value, config: parsed };
      const s = await api("/v1/sources", { method: "POST", body });
      fill(answer, h("p", { class: "muted" }, `Source ${s.name} created.`));
      name.value = "";
      edited = false;
      await load();
    } catch (err) {
      fill(answer, errorBox(err));
    } finally {
      create.disabled = false;
    }
  }

  return every(2000, load, (err) => fill(list, errorBox(err)));
}
