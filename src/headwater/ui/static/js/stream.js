// Stream page: schema and its versions, a live tail of the latest rows, and the
// quarantine browser with replay per row or per reason code.

import { api, enc } from "./api.js";
import { cellText, errorBox, every, fill, fmtNum, fmtTime, h, isTimeText, onFrame, timeEl } from "./dom.js";

const TAIL_ROWS = 50;
const HIDDEN = new Set(["_id_hash", "_schema_version"]);

export function mount(root, [name]) {
  const path = `/v1/streams/${enc(name)}`;
  const els = {
    schema: h("div", {}, h("p", { class: "muted" }, "Loading…")),
    versions: h("div"),
    tail: h("div", { "data-testid": "tail" }),
    tailNote: h("span", { class: "muted small", "data-testid": "tail-note" }),
    quarantine: h("div", { "data-testid": "quarantine" }),
    answer: h("div", { class: "answer", "data-testid": "replay-answer", "aria-live": "polite" }),
    show: h("select", { id: "quarantine-show", "data-testid": "quarantine-filter" }),
    codes: h("select", { id: "quarantine-replay-code", "data-testid": "replay-code-select" }),
  };
  const replayCode = h("button", { type: "button", "data-testid": "replay-code", onclick: () => replay({ code: els.codes.value }) },
    "Replay every row with this code");
  const pause = h("button", { class: "ghost", type: "button" }, "Pause");
  root.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/" }, "Overview"), " / stream"),
    h("h1", {}, name),
    h("section", { class: "grid2" },
      h("div", { class: "card" }, h("h2", {}, "Schema"), els.schema),
      h("div", { class: "card" }, h("h2", {}, "Versions"), els.versions)),
    h("section", { class: "card" },
      h("div", { class: "card-head" }, h("h2", {}, "Latest rows"), els.tailNote, h("span", { class: "spacer" }), pause),
      els.tail),
    h("section", { class: "card" },
      h("div", { class: "card-head" }, h("h2", {}, "Quarantine"), h("span", { class: "spacer" }),
        h("button", { class: "ghost", type: "button", onclick: () => loadQuarantine(true) }, "Refresh")),
      h("div", { class: "quarantine-tools" },
        h("div", { class: "tool", "data-testid": "quarantine-filter-tool" },
          h("label", { for: "quarantine-show" }, "Show rows with code"), els.show,
          h("span", { class: "muted small" }, "filters the list below; changes nothing")),
        h("div", { class: "tool replay-tool", "data-testid": "quarantine-replay-tool" },
          h("label", { for: "quarantine-replay-code" }, "Replay every row with code"), els.codes, replayCode,
          h("span", { class: "muted small" }, "sends them through validation again (after a schema fix)"))),
      els.answer,
      els.quarantine),
  );

  let schema = null;
  let paused = false;
  let tailRows = [];
  let seen = -1;
  const renderTail = onFrame(() => fill(els.tail, tailTable(schema, tailRows, seen)));
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.textContent = paused ? "Resume" : "Pause";
  });

  api(path).then((s) => {
    schema = s;
    fill(els.schema, schemaView(s));
  }).catch((err) => fill(els.schema, errorBox(err)));
  api(`${path}/versions`).then(({ versions }) => fill(els.versions, versionsView(versions)))
    .catch((err) => fill(els.versions, errorBox(err)));

  let lastMax = -1;
  const stopTail = every(1000, async () => {
    if (paused) return;
    const { rows } = await api(`${path}/events?order=desc&limit=${TAIL_ROWS}`);
    const top = rows.length ? rows[0]._offset : -1;
    if (top === lastMax && tailRows.length) return;
    seen = lastMax;
    lastMax = top;
    tailRows = rows;
    els.tailNote.textContent = `${rows.length} newest, updated ${fmtTime(Date.now())}`;
    renderTail();
  }, (err) => fill(els.tail, errorBox(err)));

  let quarantineKey = "";
  let loads = 0; // only the latest load renders: a slow earlier one must not undo a new filter
  async function loadQuarantine(force = false) {
    const mine = ++loads;
    const list = `${path}/quarantine?order=desc&limit=200`;
    const shown = els.show.value;
    const { rows: all } = await api(list);
    const rows = shown ? (await api(`${list}&code=${enc(shown)}`)).rows : all;
    if (mine !== loads) return;
    const key = shown + rows.map((r) => r._offset ?? `${r.received_ms}:${r.row}`).join(",")
      + all.map((r) => r.code).join(",");
    if (key === quarantineKey && !force) return;
    quarantineKey = key;
    const codes = [...new Set(all.map((r) => r.code))].sort();
    const chosen = els.codes.value;
    fill(els.show, h("option", { value: "" }, "(every code)"),
      codes.map((c) => h("option", { value: c, selected: c === shown }, c)));
    fill(els.codes, codes.map((c) => h("option", { value: c, selected: c === chosen }, c)));
    els.codes.disabled = replayCode.disabled = !codes.length;
    replayCode.textContent = codes.length ? `Replay every ${els.codes.value} row` : "Nothing to replay";
    fill(els.quarantine, quarantineTable(rows, (offset) => replay({ offsets: [offset] })));
  }
  els.show.addEventListener("change", () => loadQuarantine(true));
  els.codes.addEventListener("change", () => (replayCode.textContent = `Replay every ${els.codes.value} row`));
  const stopQuarantine = every(5000, () => loadQuarantine(), (err) => fill(els.quarantine, errorBox(err)));

  async function replay(body) {
    if (body.code === "") return;
    fill(els.answer, h("span", { class: "muted" }, "Replaying…"));
    try {
      const out = await api(`${path}/quarantine/replay`, { method: "POST", body });
      const what = body.code ? `code ${body.code}` : `row ${body.offsets.join(", ")}`;
      fill(els.answer, h("div", { class: out.rejected ? "alert warn" : "alert ok" },
        `Replayed ${what}: ${out.replayed} row(s), ${out.accepted} accepted, ${out.rejected} rejected again, `
        + `${out.duplicates} duplicate(s).`));
      await loadQuarantine(true);
    } catch (err) {
      fill(els.answer, errorBox(err));
    }
  }

  return () => {
    stopTail();
    stopQuarantine();
  };
}

function schemaView(s) {
  const constraints = (f) => [
    f.min !== undefined ? `≥ ${f.min}` : null, f.max !== undefined ? `≤ ${f.max}` : null,
    f.enum ? `one of ${f.enum.join(", ")}` : null, f.regex ? `matches /${f.regex}/` : null,
    f.max_length ? `≤ ${f.max_length} chars` : null,
  ].filter(Boolean).join("; ");
  const tags = (f) => [f.required ? "required" : null, f.name === s.event_time ? "event time" : null,
    (s.key || []).includes(f.name) ? "key" : null, f.name === s.id ? "id" : null].filter(Boolean);
  return [
    h("div", { class: "facts" },
      fact("version", `v${s.version}`), fact("rows in log", fmtNum(s.log_end_offset)),
      fact("stored", fmtNum(s.stored_offset)), fact("retention", s.retention || "forever")),
    h("table", { class: "data", "data-testid": "schema" },
      h("thead", {}, h("tr", {}, ["Field", "Type", "", "Constraints"].map((c) => h("th", {}, c)))),
      h("tbody", {}, s.fields.map((f) => h("tr", {},
        h("td", {}, h("code", {}, f.name)), h("td", {}, f.type),
        h("td", {}, tags(f).map((t) => h("span", { class: "tag" }, t))),
        h("td", { class: "muted" }, constraints(f)))))),
    (s.rules || []).length ? h("p", { class: "small" }, "Rules: ", s.rules.map((r) => h("code", {}, r.expr, " "))) : null,
  ];
}

function fact(label, value) {
  return h("div", { class: "fact" }, h("span", { class: "muted small" }, label), h("b", {}, value));
}

function versionsView(versions) {
  return versions.slice().reverse().map((v, i) => h("details", { open: i === 0 },
    h("summary", {}, `v${v.version}`, h("span", { class: "muted" }, ` — ${v.fields.length} fields`)),
    h("p", { class: "small" }, v.fields.map((f) => h("code", { class: "field" }, `${f.name}: ${f.type}${f.required ? "!" : ""}`)))));
}

function tailTable(schema, rows, seen) {
  if (!rows.length) return h("p", { class: "muted" }, "No rows yet.");
  const fields = schema ? schema.fields.map((f) => f.name) : Object.keys(rows[0]).filter((k) => !k.startsWith("_"));
  const cols = ["_offset", ...fields, "_received_ms"].filter((c) => !HIDDEN.has(c));
  return h("div", { class: "table-wrap" }, h("table", { class: "data tail" },
    h("thead", {}, h("tr", {}, cols.map((c) => h("th", {}, c === "_received_ms" ? "received" : c === "_offset" ? "offset" : c)))),
    h("tbody", {}, rows.map((r) => h("tr", { class: seen >= 0 && r._offset > seen ? "new" : null },
      cols.map((c) => h("td", {}, c === "_received_ms" || isTimeText(r[c]) ? timeEl(r[c]) : cellText(r[c]))))))));
}

function quarantineTable(rows, onReplay) {
  if (!rows.length) return h("p", { class: "muted" }, "Nothing in quarantine.");
  return h("div", { class: "table-wrap" }, h("table", { class: "data" },
    h("thead", {}, h("tr", {}, ["Offset", "Received", "State", "Code", "Field", "Message", "Raw", ""].map((c) => h("th", {}, c)))),
    h("tbody", {}, rows.map((r) => h("tr", { "data-offset": r._offset },
      h("td", { class: "num" }, r._offset ?? "–"),
      h("td", { class: "nowrap" }, timeEl(r.received_ms)),
      h("td", { title: stateTitle(r) }, r.state || "quarantined"),
      h("td", {}, h("code", {}, r.code)),
      h("td", {}, r.field || ""),
      h("td", {}, r.message),
      h("td", {}, h("code", { class: "raw", title: r.raw }, r.raw)),
      h("td", {}, replayButton(r, onReplay)))))));
}

function stateTitle(row) {
  if (row.state === "replayed") return `stored at offset ${row.replayed_offset}`;
  return row.replay_attempts ? `${row.replay_attempts} replay attempt(s)` : "";
}

function replayButton(row, onReplay) {
  if (row.state && row.state !== "quarantined") return "";
  if (row._offset === undefined) {
    return h("button", { class: "small", type: "button", disabled: true, title: "this server does not list quarantine offsets" }, "Replay");
  }
  return h("button", { class: "small", type: "button", onclick: () => onReplay(row._offset) }, "Replay");
}
