// The dashboard shell: sign-in, navigation by URL hash, one page mounted at a time.
// Each page module exports mount(root, params) and returns a function that stops it.

import { ApiError, checkKey, onAnswer, session } from "./api.js";
import { h } from "./dom.js";
import * as alerts from "./alerts.js";
import * as overview from "./overview.js";
import * as pipeline from "./pipeline.js";
import * as newPipeline from "./pipeline_edit.js";
import * as query from "./query.js";
import * as sinks from "./sinks.js";
import * as sources from "./sources.js";
import * as stream from "./stream.js";
import * as newStream from "./stream_new.js";

const ROUTES = [
  [/^#?\/?$/, overview, "overview"],
  [/^#\/streams\/([^/]+)$/, stream, "overview"],
  [/^#\/pipelines\/([^/]+)$/, pipeline, "overview"],
  [/^#\/query$/, query, "query"],
  [/^#\/sources$/, sources, "sources"],
  [/^#\/sinks$/, sinks, "sinks"],
  [/^#\/create\/pipeline$/, newPipeline, "overview"],
  [/^#\/create\/stream$/, newStream, "overview"],
  [/^#\/alerts$/, alerts, "alerts"],
  [/^#\/alerts\/([^/]+)$/, alerts, "alerts"],
];

const app = document.getElementById("app");
const topbar = document.getElementById("topbar");
const conn = document.getElementById("conn");
let stopPage = null;

function unmount() {
  if (stopPage) stopPage();
  stopPage = null;
}

function showSignIn(message = "") {
  unmount();
  topbar.hidden = true;
  const view = document.getElementById("signin-template").content.cloneNode(true);
  app.replaceChildren(view);
  const form = document.getElementById("signin-form");
  const note = document.getElementById("signin-message");
  note.textContent = message;
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const key = form.key.value.trim();
    note.textContent = "";
    form.querySelector("button").disabled = true;
    try {
      await checkKey(key);
      session.set(key);
      route();
    } catch (err) {
      note.textContent =
        err instanceof ApiError && err.status === 401 ? `Key refused: ${err.message}` : `Cannot sign in: ${err.message}`;
    } finally {
      form.querySelector("button").disabled = false;
    }
  });
  form.key.focus();
}

function route() {
  if (!session.key) {
    showSignIn();
    return;
  }
  topbar.hidden = false;
  const hash = location.hash || "#/";
  const found = ROUTES.map(([re, page, nav]) => [re.exec(hash), page, nav]).find(([m]) => m);
  unmount();
  const root = h("div", { class: "page" });
  app.replaceChildren(root);
  if (!found) {
    root.append(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "Back to the overview")));
    return;
  }
  const [match, page, nav] = found;
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === nav);
  stopPage = page.mount(root, match.slice(1).map(decodeURIComponent));
  window.scrollTo(0, 0);
}

onAnswer((status, error) => {
  conn.className = `conn ${status === 0 || status >= 500 ? "bad" : "ok"}`;
  conn.title = error ? `${error.code}: ${error.message}` : "connected";
  if (status === 401 && session.key) {
    session.clear();
    showSignIn(`Signed out: ${error.message}. Sign in with a valid key.`);
  }
});

document.getElementById("signout").addEventListener("click", () => {
  session.clear();
  showSignIn("Signed out.");
});

window.addEventListener("hashchange", route);
route();
