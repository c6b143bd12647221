// The page at #/create/stream: a form that writes the POST /v1/streams body (shown as
// JSON beside it) and sends it. The server validates the definition and says what to fix.

import { api, enc } from "./api.js";
import { errorBox, fill, h } from "./dom.js";

const TYPES = ["string", "int", "float", "bool", "timestamp", "json"];

export function mount(root) {
  const name = h("input", { type: "text", "aria-label": "stream name", placeholder: "readings", required: true });
  const fields = h("tbody");
  const eventTime = h("select", { "aria-label": "event time field" });
  const idField = h("select", { "aria-label": "id field" });
  const keys = h("div", { class: "checks-inline", "data-testid": "key-fields" });
  const preview = h("pre", { class: "sql small", "data-testid": "stream-json" });
  const answer = h("div", { class: "answer", "data-testid": "stream-answer" });
  const create = h("button", { type: "submit", "data-testid": "create-stream" }, "Create stream");

  root.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/" }, "Overview"), " / new stream"),
    h("h1", {}, "New stream"),
    h("form", { class: "grid-wide", oninput: sync, onchange: sync, onsubmit: (e) => { e.preventDefault(); submit(); } },
      h("section", { class: "card" },
        h("div", { class: "row" }, h("label", {}, "Name ", name)),
        h("h2", { class: "spaced" }, "Fields"),
        h("div", { class: "table-wrap" }, h("table", { class: "data fields-form" },
          h("thead", {}, h("tr", {}, ["Name", "Type", "Required", "Min", "Max", "One of (a, b, …)", "Regex", ""]
            .map((c) => h("th", {}, c)))),
          fields)),
        h("button", { class: "ghost", type: "button", "data-testid": "add-field", onclick: () => addField() }, "Add field"),
        h("div", { class: "stream-roles" },
          h("label", {}, "Event time ", eventTime), h("label", {}, "Id (dedup) ", idField),
          h("span", {}, h("span", { class: "muted" }, "Key "), keys)),
        answer,
        h("div", { class: "row" }, create)),
      h("section", { class: "card" }, h("h2", {}, "Request body"), preview)),
  );

  function addField(f = {}) {
    const row = h("tr", { class: "field-row" },
      h("td", {}, h("input", { type: "text", name: "name", "aria-label": "field name", value: f.name || "" })),
      h("td", {}, h("select", { name: "type", "aria-label": "field type" },
        TYPES.map((t) => h("option", { value: t, selected: t === (f.type || "string") }, t)))),
      h("td", {}, h("input", { type: "checkbox", name: "required", "aria-label": "required", checked: !!f.required })),
      h("td", {}, h("input", { type: "number", step: "any", name: "min", "aria-label": "min", class: "narrow" })),
      h("td", {}, h("input", { type: "number", step: "any", name: "max", "aria-label": "max", class: "narrow" })),
      h("td", {}, h("input", { type: "text", name: "enum", "aria-label": "allowed values" })),
      h("td", {}, h("input", { type: "text", name: "regex", "aria-label": "regex" })),
      h("td", {}, h("button", { class: "ghost small", type: "button", title: "remove this field",
        onclick: () => { row.remove(); sync(); } }, "✕")));
    fields.append(row);
    sync();
  }

  /** The request body, read from the form (empty inputs are left out). */
  function body() {
    const out = { name: name.value.trim(), fields: [] };
    for (const row of fields.querySelectorAll("tr")) {
      const get = (n) => row.querySelector(`[name=${n}]`);
      const f = { name: get("name").value.trim(), type: get("type").value };
      if (get("required").checked) f.required = true;
      for (const bound of ["min", "max"]) if (get(bound).value !== "") f[bound] = Number(get(bound).value);
      const choices = get("enum").value.split(",").map((v) => v.trim()).filter(Boolean);
      if (choices.length) f.enum = choices;
      if (get("regex").value) f.regex = get("regex").value;
      out.fields.push(f);
    }
    if (eventTime.value) out.event_time = eventTime.value;
    const key = [...keys.querySelectorAll("input:checked")].map((i) => i.value);
    if (key.length) out.key = key;
    if (idField.value) out.id = idField.value;
    return out;
  }

  /** Keep the event time, id and key choices in step with the fields, and the preview. */
  function sync() {
    const named = [...fields.querySelectorAll("tr")].map((row) => ({
      name: row.querySelector("[name=name]").value.trim(), type: row.querySelector("[name=type]").value,
    })).filter((f) => f.name);
    const choose = (select, list, label) => {
      const was = select.value;
      fill(select, h("option", { value: "" }, label), list.map((f) => h("option", { value: f.name, selected: f.name === was }, f.name)));
    };
    choose(eventTime, named.filter((f) => f.type === "timestamp"), "(receive time)");
    choose(idField, named.filter((f) => f.type === "string" || f.type === "int"), "(none)");
    const checked = new Set([...keys.querySelectorAll("input:checked")].map((i) => i.value));
    fill(keys, named.map((f) => h("label", {}, h("input", { type: "checkbox", value: f.name, checked: checked.has(f.name) }), ` ${f.name}`)));
    preview.textContent = JSON.stringify(body(), null, 2);
  }

  async function submit() {
    create.disabled = true;
    fill(answer);
    try {
      const s = await api("/v1/streams", { method: "POST", body: body() });
      location.hash = `#/streams/${enc(s.name)}`;
    } catch (err) {
      fill(answer, errorBox(err));
    } finally {
      create.disabled = false;
    }
  }

  addField({ name: "ts", type: "timestamp", required: true });
  addField({ name: "value", type: "float" });
  eventTime.value = "ts";
  sync();
  name.focus();
  return () => {};
}
