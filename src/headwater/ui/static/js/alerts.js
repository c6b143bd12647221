// Alerts page: the rules, what fires now, and (per rule) its keys, history and snoozes.
// "#/alerts" lists every rule; "#/alerts/<name>" shows one. Both refresh every 2 s.

import { api, enc } from "./api.js";
import { dataTable, errorBox, every, fill, fmtNum, h, pill, timeEl } from "./dom.js";

const SNOOZES = [["15 minutes", 15], ["1 hour", 60], ["8 hours", 480], ["1 day", 1440]];
const SEVERITY_TONE = { critical: "bad", error: "bad", warning: "warn", info: "idle" };

const chosen = new Map(); // the duration picked per rule / key, kept across refreshes

function snoozeControl(name, key, after, answer) {
  const id = `${name}\u0000${key ?? ""}`;
  const pick = chosen.get(id) ?? 60;
  const select = h("select", { "aria-label": key ? `Snooze ${key} for` : `Snooze ${name} for`,
    onchange: () => chosen.set(id, Number(select.value)) },
  SNOOZES.map(([label, min]) => h("option", { value: String(min), selected: min === pick }, label)));
  const button = h("button", { type: "button", class: "ghost", onclick: async () => {
    const until = new Date(Date.now() + Number(select.value) * 60_000).toISOString();
    button.disabled = true;
    try {
      await api(`/v1/alerts/${enc(name)}/snooze`, { method: "POST", body: key ? { until, key } : { until } });
      fill(answer);
      await after();
    } catch (err) {
      fill(answer, errorBox(err));
    } finally {
      button.disabled = false;
    }
  } }, key ? "Snooze key" : "Snooze");
  return h("span", { class: "snooze" }, select, button);
}

function snoozedText(rule) {
  const all = (rule.snoozed || []).find((s) => s.key === null);
  if (all) return h("span", {}, "until ", timeEl(all.until));
  const keys = (rule.snoozed || []).length;
  return keys ? `${keys} key${keys > 1 ? "s" : ""}` : "–";
}

function mountList(root) {
  const answer = h("div", { class: "answer" });
  const rules = h("div", { "data-testid": "alert-rules" });
  const firing = h("div", { "data-testid": "alerts-firing" });
  root.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/" }, "Overview"), " / alerts"),
    h("div", { class: "title-row" }, h("h1", {}, "Alerts")),
    answer,
    h("section", { class: "card" }, h("h2", {}, "Firing now"), firing),
    h("section", { class: "card" }, h("h2", {}, "Rules"), rules),
  );

  async function refresh() {
    const list = (await api("/v1/alerts")).alerts;
    fill(rules, list.length === 0
      ? h("p", { class: "muted" }, "No alert rules yet: create one with POST /v1/alerts (see docs/alerts.md).")
      : h("table", { class: "data" },
        h("thead", {}, h("tr", {}, ["rule", "from", "condition", "severity", "firing", "pending", "snoozed", "", ""].map((c) => h("th", {}, c)))),
        h("tbody", {}, list.map((r) => h("tr", { "data-rule": r.name },
          h("td", {}, h("a", { href: `#/alerts/${enc(r.name)}` }, r.name)), h("td", {}, r.from),
          h("td", {}, h("code", {}, r.condition)), h("td", {}, pill(r.severity, SEVERITY_TONE[r.severity] || "idle")),
          h("td", { class: "num" }, fmtNum(r.firing)), h("td", { class: "num" }, fmtNum(r.pending)),
          h("td", { "data-testid": "snoozed" }, snoozedText(r)), h("td", {}, snoozeControl(r.name, null, refresh, answer)),
          h("td", { class: "muted small" }, r.error || ""))))));
    const hot = list.filter((r) => r.firing > 0);
    const details = await Promise.all(hot.map((r) => api(`/v1/alerts/${enc(r.name)}`)));
    const rows = details.flatMap((d) => d.keys.filter((k) => k.state === "firing")
      .map((k) => [d.name, k.key, d.severity, k.summary, k.firing_since]));
    fill(firing, rows.length === 0 ? h("p", { class: "muted" }, "Nothing fires now.")
      : dataTable(["rule", "key", "severity", "summary", "firing since"], rows));
  }

  return every(2000, refresh, (err) => fill(answer, errorBox(err)));
}

function mountRule(root, name) {
  const path = `/v1/alerts/${enc(name)}`;
  const answer = h("div", { class: "answer" });
  const facts = h("div", { class: "facts" });
  const keys = h("div", { "data-testid": "alert-keys" });
  const history = h("div", { "data-testid": "alert-history" });
  const controls = h("span");
  root.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/" }, "Overview"), " / ", h("a", { href: "#/alerts" }, "alerts"), " / rule"),
    h("div", { class: "title-row" }, h("h1", {}, name), h("span", { class: "spacer" }), controls),
    answer,
    h("section", { class: "card" }, h("h2", {}, "Rule"), facts),
    h("section", { class: "card" }, h("h2", {}, "Pending and firing keys"), keys),
    h("section", { class: "card" }, h("h2", {}, "History"), history),
  );
  fill(controls, snoozeControl(name, null, () => refresh(), answer));

  async function refresh() {
    const [r, ev] = await Promise.all([api(path), api(`${path}/events?limit=200`)]);
    fill(facts, [
      ["from", r.from], ["key", r.key], ["condition", h("code", {}, r.condition)], ["for", `${r.for_ms / 1000} s`],
      ["severity", r.severity], ["firing", fmtNum(r.firing)], ["pending", fmtNum(r.pending)],
      ["snoozed", snoozedText(r)], ["channels", r.channels.map((c) => c.kind).join(", ")],
      ["grouping", r.group_wait_ms === null ? "none" : `by [${r.group_by.join(", ")}], wait ${r.group_wait_ms / 1000} s, interval ${r.group_interval_ms / 1000} s`],
      ["dead letters", h("code", {}, r.dead_letters_table)],
    ].map(([k, v]) => h("div", { class: "fact" }, h("span", { class: "muted small" }, k), h("b", {}, v))));
    fill(keys, r.keys.length === 0 ? h("p", { class: "muted" }, "No key is pending or firing.")
      : h("table", { class: "data" },
        h("thead", {}, h("tr", {}, ["key", "state", "since", "summary", ""].map((c) => h("th", {}, c)))),
        h("tbody", {}, r.keys.map((k) => h("tr", { "data-key": k.key },
          h("td", {}, k.key), h("td", {}, pill(k.state, k.state === "firing" ? "bad" : "warn")),
          h("td", { class: "nowrap" }, timeEl(k.since)), h("td", {}, k.summary),
          h("td", {}, snoozeControl(name, k.key, refresh, answer)))))));
    const rows = ev.events.map((e) => [e.at, e.kind, e.key, e.status || "", e.channel || "",
      e.muted ? "muted" : (e.error || e.summary || "")]);
    fill(history, rows.length === 0 ? h("p", { class: "muted" }, "Nothing happened yet.")
      : dataTable(["at", "event", "key", "status", "channel", "detail"], rows));
  }

  return every(2000, refresh, (err) => fill(answer, errorBox(err)));
}

export function mount(root, [name]) {
  return name === undefined ? mountList(root) : mountRule(root, name);
}
