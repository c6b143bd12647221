// Writing pipelines: the "new pipeline" page, and the replace / drop controls of a
// pipeline's page. The server checks the SQL; its error is marked at its line and column.

import { api, enc } from "./api.js";
import { errorBox, fill, h } from "./dom.js";
import { SqlEditor } from "./editor.js";

function template(stream) {
  const s = stream || "my_stream";
  return `CREATE PIPELINE ${s}_per_minute AS
SELECT window_start, window_end, count(*) AS events
FROM TUMBLE(${s}, ts, INTERVAL '1 minute')
GROUP BY window_start, window_end`;
}

/** The page at #/create/pipeline. */
export function mount(root) {
  const editor = new SqlEditor({ label: "pipeline SQL", testid: "pipeline-sql-input", rows: 12 });
  const answer = h("div", { class: "answer", "data-testid": "pipeline-answer" });
  const streams = h("div", { class: "chips small muted" });
  const create = h("button", { type: "submit", "data-testid": "create-pipeline" }, "Create pipeline");
  root.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/" }, "Overview"), " / new pipeline"),
    h("h1", {}, "New pipeline"),
    h("section", { class: "card" },
      h("form", { onsubmit: (e) => { e.preventDefault(); submit(); } },
        editor.root, answer, h("div", { class: "row" }, create,
          h("span", { class: "muted small" }, "CREATE PIPELINE name AS SELECT … — the SQL reference is docs/sql.md"))),
      streams),
  );
  // The example goes in only while nobody has started writing (the streams load late).
  let touched = false;
  editor.area.addEventListener("focus", () => { touched = true; }, { once: true });
  api("/v1/streams").then(({ streams: list }) => {
    const names = list.map((s) => s.name);
    if (!touched && !editor.value) editor.value = template(names[0]);
    fill(streams, h("span", {}, "Streams:"), names.length ? names.map((n) => h("code", { class: "chip" }, n)) : "none yet");
  }).catch((err) => fill(answer, errorBox(err)));

  async function submit() {
    create.disabled = true;
    fill(answer);
    try {
      const p = await api("/v1/pipelines", { method: "POST", body: { sql: editor.value } });
      location.hash = `#/pipelines/${enc(p.name)}`;
    } catch (err) {
      fill(answer, errorBox(err));
      editor.showError(err);
    } finally {
      create.disabled = false;
    }
  }
  return () => {};
}

/**
 * Edit and drop controls for the pipeline ``name``. ``view`` is the read-only SQL;
 * ``answer`` shows outcomes; ``onReplaced(status)`` runs after a replace.
 * Returns ``{buttons, panel}`` to place on the page.
 */
export function pipelineControls(name, { view, answer, currentSql, onReplaced }) {
  const path = `/v1/pipelines/${enc(name)}`;
  const editor = new SqlEditor({ label: "pipeline SQL", testid: "pipeline-sql-input", rows: 10 });
  const confirmBox = h("div", { class: "confirm", hidden: true });
  const editing = h("div", { hidden: true }, editor.root, confirmBox);
  const tables = `${name}, ${name}_late and ${name}_errors`;

  const edit = h("button", { class: "ghost", type: "button", "data-testid": "edit-sql", onclick: startEdit }, "Edit SQL");
  const drop = h("button", { class: "ghost danger", type: "button", "data-testid": "drop", onclick: askDrop }, "Drop…");

  function startEdit() {
    editor.value = currentSql();
    view.hidden = true;
    editing.hidden = false;
    edit.disabled = true;
    askReplace(false);
  }

  function stopEdit() {
    view.hidden = false;
    editing.hidden = true;
    edit.disabled = false;
  }

  // Step 1 shows the replace button; step 2 asks to confirm the reset.
  function askReplace(confirming) {
    confirmBox.hidden = false;
    if (!confirming) {
      fill(confirmBox, h("div", { class: "row" },
        h("button", { type: "button", "data-testid": "replace", onclick: () => askReplace(true) }, "Replace pipeline…"),
        h("button", { class: "ghost", type: "button", onclick: stopEdit }, "Cancel")));
      return;
    }
    fill(confirmBox, h("div", { class: "alert warn", "data-testid": "replace-confirm" },
      h("p", {}, h("b", {}, "Replace keeping state "),
        "when the change allows it (a new filter or output column): windows, offsets and tables carry over, "
        + "and the server says what state would be dropped otherwise. "
        + `Replace and reset state drops its state and its tables (${tables}) `
        + "and re-reads the stream from its start (or its WITH start option). The new SQL is checked first: "
        + "if it has an error, nothing changes."),
      h("div", { class: "row" },
        h("button", { type: "button", "data-testid": "confirm-keep", onclick: () => replace(false) }, "Replace keeping state"),
        h("button", { type: "button", "data-testid": "confirm-replace", onclick: () => replace(true) }, "Replace and reset state"),
        h("button", { class: "ghost", type: "button", onclick: () => askReplace(false) }, "Keep editing"))));
  }

  async function replace(reset) {
    fill(answer);
    try {
      const body = reset ? { sql: editor.value, reset_state: true } : { sql: editor.value };
      const status = await api(path, { method: "PUT", body });
      stopEdit();
      fill(answer, h("div", { class: "alert ok", "data-testid": "replaced" }, reset
        ? "Replaced: state and tables reset; the pipeline is re-reading the stream."
        : "Replaced: state, offsets and tables kept; the new SQL applies to rows from here on."));
      onReplaced(status);
    } catch (err) {
      askReplace(false);
      fill(answer, errorBox(err));
      editor.showError(err);
    }
  }

  function askDrop() {
    const alsoTables = h("input", { type: "checkbox", "data-testid": "drop-tables" });
    fill(answer, h("div", { class: "alert warn", "data-testid": "drop-confirm" },
      h("p", {}, h("b", {}, `Drop pipeline ${name}? `), "It stops and is removed; this cannot be undone."),
      h("p", {}, h("label", {}, alsoTables, ` also drop its tables (${tables})`)),
      h("div", { class: "row" },
        h("button", { class: "danger", type: "button", "data-testid": "confirm-drop", onclick: () => dropIt(alsoTables.checked) },
          "Drop pipeline"),
        h("button", { class: "ghost", type: "button", onclick: () => fill(answer) }, "Cancel"))));
  }

  async function dropIt(dropTables) {
    try {
      await api(`${path}?drop_tables=${dropTables}`, { method: "DELETE" });
      location.hash = "#/";
    } catch (err) {
      fill(answer, errorBox(err));
    }
  }

  return { buttons: [edit, drop], panel: editing };
}
