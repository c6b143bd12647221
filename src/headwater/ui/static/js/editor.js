// A small SQL editor: a textarea laid over a highlighted copy of its text (same font,
// same padding, scrolled in step), with the cursor's line and column below it and an
// error mark at the line and column the server reported.

import { h } from "./dom.js";

const KEYWORDS = new Set(
  ("SELECT FROM WHERE GROUP BY ORDER HAVING LIMIT OFFSET AS AND OR NOT IN IS NULL LIKE ILIKE BETWEEN CASE "
    + "WHEN THEN ELSE END JOIN LEFT RIGHT INNER OUTER FULL CROSS ON USING UNION ALL DISTINCT WITH CREATE "
    + "PIPELINE INTERVAL TRUE FALSE ASC DESC CAST OVER PARTITION ROWS RANGE PRECEDING FOLLOWING CURRENT "
    + "ROW EXISTS SHOW TABLES DESCRIBE EXPLAIN FILTER WINDOW QUALIFY EXCLUDE REPLACE").split(" "),
);
const WINDOWS = new Set(["TUMBLE", "HOP", "SESSION", "DEDUP"]); // the pipeline FROM forms

// One alternative per token class; the last catches any other single character.
const TOKEN = /(--[^\n]*|\/\*[\s\S]*?(?:\*\/|$))|('(?:[^']|'')*'?)|("(?:[^"]|"")*"?)|(\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)|([A-Za-z_][\w$]*)|(\s+)|([\s\S])/y;

/** ``[start, end, class]`` for each token of ``text`` (class "" for plain text). */
export function tokens(text) {
  const out = [];
  TOKEN.lastIndex = 0;
  let m;
  while (TOKEN.lastIndex < text.length && (m = TOKEN.exec(text))) {
    const start = m.index;
    const end = TOKEN.lastIndex;
    let cls = "";
    if (m[1]) cls = "tok-com";
    else if (m[2]) cls = "tok-str";
    else if (m[3]) cls = "tok-id";
    else if (m[4]) cls = "tok-num";
    else if (m[5]) {
      const word = m[5].toUpperCase();
      const call = /^\s*\(/.test(text.slice(end, end + 8));
      if (WINDOWS.has(word) && call) cls = "tok-win";
      else if (KEYWORDS.has(word)) cls = "tok-kw";
      else if (call) cls = "tok-fn";
    }
    out.push([start, end, cls]);
  }
  return out;
}

/** The character offset of a 1-based line and column in ``text``. */
export function offsetOf(text, line, column) {
  let offset = 0;
  for (let l = 1; l < line; l += 1) {
    const nl = text.indexOf("\n", offset);
    if (nl < 0) return text.length;
    offset = nl + 1;
  }
  const lineEnd = text.indexOf("\n", offset);
  return Math.min(offset + column - 1, lineEnd < 0 ? text.length : lineEnd);
}

/**
 * Where the server says a SQL error is: ``{line, column}`` from the error's details
 * (``line``/``column``, or ``position: "line L, column C"``), else from its message.
 */
export function errorPosition(err) {
  const details = (err && err.body && err.body.error && err.body.error.details) || {};
  if (Number.isInteger(details.line)) return { line: details.line, column: details.column || 1 };
  const text = `${details.position || ""} ${(err && err.message) || ""}`;
  const m = /line (\d+), column (\d+)/i.exec(text) || /LINE (\d+):/.exec(text);
  return m ? { line: Number(m[1]), column: Number(m[2] || 1) } : null;
}

export class SqlEditor {
  constructor({ value = "", label = "SQL", testid = "sql", rows = 8 } = {}) {
    this.mark = null; // {line, column, message}
    this.area = h("textarea", {
      class: "editor-input", rows, spellcheck: "false", wrap: "off", autocapitalize: "off",
      "aria-label": label, "data-testid": testid,
    });
    this.layer = h("pre", { class: "editor-layer", "aria-hidden": "true" });
    this.where = h("span", { class: "muted small editor-where" });
    this.note = h("span", { class: "editor-note small", role: "alert" });
    this.root = h("div", { class: "editor", "data-testid": `${testid}-editor` },
      h("div", { class: "editor-box" }, this.layer, this.area),
      h("div", { class: "editor-foot" }, this.note, h("span", { class: "spacer" }), this.where));
    this.area.value = value;
    this.area.addEventListener("input", () => {
      this.clearError();
      this.paint();
    });
    this.area.addEventListener("scroll", () => this.follow());
    for (const ev of ["keyup", "click", "select", "input"]) this.area.addEventListener(ev, () => this.cursor());
    this.paint();
    this.cursor();
  }

  get value() {
    return this.area.value;
  }

  set value(text) {
    this.area.value = text;
    this.clearError();
    this.paint();
  }

  /** Mark the server's error at its position; returns whether it had one. */
  showError(err) {
    const at = errorPosition(err);
    if (!at) {
      this.clearError();
      return false;
    }
    this.mark = at;
    this.root.dataset.errorLine = String(at.line);
    this.root.dataset.errorColumn = String(at.column);
    this.note.textContent = `Error at line ${at.line}, column ${at.column}`;
    this.paint();
    const offset = offsetOf(this.area.value, at.line, at.column);
    this.area.focus();
    this.area.setSelectionRange(offset, offset);
    this.cursor();
    this.scrollToMark();
    return true;
  }

  clearError() {
    if (!this.mark) return;
    this.mark = null;
    delete this.root.dataset.errorLine;
    delete this.root.dataset.errorColumn;
    this.note.textContent = "";
    this.paint();
  }

  /** Redraw the highlighted copy: one block per line, the error's token and line marked. */
  paint() {
    const text = this.area.value;
    const errAt = this.mark ? offsetOf(text, this.mark.line, this.mark.column) : -1;
    const lines = [h("span", { class: "editor-line" })];
    for (const [start, end, cls] of tokens(text)) {
      const isErr = errAt >= start && errAt < end && !/^\s+$/.test(text.slice(start, end));
      const klass = [cls, isErr ? "tok-err" : ""].filter(Boolean).join(" ");
      text.slice(start, end).split("\n").forEach((piece, i) => {
        if (i > 0) lines.push(h("span", { class: "editor-line" }));
        if (piece) lines[lines.length - 1].append(klass ? h("span", { class: klass }, piece) : piece);
      });
    }
    if (this.mark) {
      const line = lines[Math.min(this.mark.line, lines.length) - 1];
      line.classList.add("line-err");
      if (!line.querySelector(".tok-err")) line.append(h("span", { class: "tok-err tok-eol" }, " "));
    }
    for (const line of lines) if (!line.childNodes.length) line.append("\u200b");
    this.layer.replaceChildren(...lines);
    this.follow();
  }

  follow() {
    this.layer.scrollTop = this.area.scrollTop;
    this.layer.scrollLeft = this.area.scrollLeft;
  }

  scrollToMark() {
    const err = this.layer.querySelector(".tok-err");
    if (!err) return;
    const box = this.area;
    const top = err.offsetTop - box.clientHeight / 2;
    box.scrollTop = Math.max(0, top);
    box.scrollLeft = Math.max(0, err.offsetLeft - box.clientWidth / 2);
    this.follow();
  }

  cursor() {
    const before = this.area.value.slice(0, this.area.selectionStart);
    const line = before.split("\n").length;
    const column = before.length - before.lastIndexOf("\n");
    this.where.textContent = `line ${line}, column ${column}`;
  }
}
