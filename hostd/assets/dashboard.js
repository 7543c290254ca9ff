// The dashboard's script: loads each view into its own frame, independently, and
// keeps the modules' facts (state, lag, dead letters, last error) current from /modules
// (this node's modules; those of peers, marked data-node, keep what the page said).
//
// A view is fetched (so that its HTTP status is known), then shown in its frame
// with srcdoc; a 4xx/5xx answer, a network error or no answer within the view's
// data-timeout-s shows the frame's error box instead. Nothing here waits for
// another view. Texts from answers are only ever set with textContent.
"use strict";

/** The query string of a view's form: one key per parameter, repeated for lists. */
function formQuery(form) {
  const query = new URLSearchParams();
  for (const param of form.querySelectorAll(".param")) {
    const name = param.dataset.param;
    if (param.dataset.widget === "checkbox") {
      query.append(name, param.querySelector("input").checked ? "true" : "false");
      continue;
    }
    for (const input of param.querySelectorAll("input")) {
      if (input.value.trim() !== "") query.append(name, input.value);
    }
  }
  return query.toString();
}

/** The message of hostd's JSON error body, or the start of whatever else came. */
function errorMessage(status, statusText, body) {
  try {
    const error = JSON.parse(body).error;
    if (error && error.message) return `${status} ${error.code || statusText}: ${error.message}`;
  } catch (ignored) { /* not JSON: show the text */ }
  const text = body.trim().slice(0, 300);
  return `${status} ${statusText}${text ? ": " + text : ""}`;
}

/** Shows one of the frame's states: idle, loading, loaded or error (the CSS shows the parts). */
function setState(view, state, message) {
  const frame = view.querySelector(".frame");
  frame.dataset.state = state;
  view.querySelector(".error-text").textContent = message || "";
}

/** Fits a shown frame to its page's height, now and whenever that page changes size. */
function fitHeight(iframe) {
  const fit = () => {
    // the page's own box, not scrollHeight, which is never less than the frame (it would only grow)
    const page = iframe.contentDocument && iframe.contentDocument.documentElement;
    const height = page ? Math.ceil(page.getBoundingClientRect().height) : 0;
    iframe.style.height = Math.min(Math.max(height + 4, 60), 4000) + "px";
  };
  fit();
  const frameWindow = iframe.contentWindow;
  if (frameWindow && frameWindow.ResizeObserver) {
    new frameWindow.ResizeObserver(fit).observe(iframe.contentDocument.documentElement);
  }
}

/** Fetches a view with its form's parameters and shows it, or its error. */
async function loadView(view) {
  const query = formQuery(view.querySelector("form"));
  const url = view.dataset.url + (query ? "?" + query : "");
  view.querySelector(".view-link").href = url;
  const attempt = (Number(view.dataset.attempt) || 0) + 1;  // a newer submit wins over an older answer
  view.dataset.attempt = String(attempt);
  const current = () => view.dataset.attempt === String(attempt);
  const timeoutS = Math.min(Number(view.dataset.timeoutS) || 35, 3600);
  const aborter = new AbortController();
  const timer = setTimeout(() => aborter.abort(), timeoutS * 1000);
  setState(view, "loading");
  let response, body;
  try {
    response = await fetch(url, {signal: aborter.signal, credentials: "same-origin",
                                 headers: {Accept: "text/html"}});
    body = await response.text();
  } catch (err) {
    if (current()) {
      setState(view, "error", aborter.signal.aborted ? `no answer within ${timeoutS} s`
                                                     : `hostd could not be reached (${err.message})`);
    }
    return;
  } finally {
    clearTimeout(timer);
  }
  if (!current()) return;
  if (!response.ok) {
    setState(view, "error", errorMessage(response.status, response.statusText, body));
    return;
  }
  const iframe = view.querySelector("iframe");
  iframe.onload = () => {
    if (!current()) return;
    setState(view, "loaded");  // shown first: a hidden frame's page has no height to measure
    fitHeight(iframe);
  };
  iframe.srcdoc = body;
}

/** Adds another input to a list parameter, like the one before it. */
function addItem(button) {
  const items = button.closest(".param").querySelector(".items");
  const input = items.querySelector("input").cloneNode();
  input.value = "";
  input.required = false;
  items.append(input);
  input.focus();
}

/** The line that says what went wrong: a traceback's last non-blank line (as hostd's page shows it). */
function errorSummary(text, limit = 300) {
  const lines = (text || "").split("\n").map(line => line.trim()).filter(Boolean);
  const last = lines.length ? lines[lines.length - 1] : "";
  return last.length <= limit ? last : last.slice(0, limit - 1) + "\u2026";
}

/** Shows a number, or "?" when the status has none. */
function shown(value) {
  return value === undefined || value === null ? "?" : String(value);
}

/** Puts one module's live status (an entry of /modules) into its section. */
function showStatus(section, status) {
  section.dataset.state = status.state;
  const badge = section.querySelector(".module-state");
  badge.className = `state module-state state-${status.state}`;
  badge.textContent = status.state;
  section.querySelector(".state-rebuilding").hidden = !status.rebuilding;
  section.querySelector(".lag").textContent = shown(status.lag);
  section.querySelector(".handled").textContent = shown(status.handled);
  section.querySelector(".restarts").textContent = shown(status.restarts);
  section.querySelector(".pid").textContent = status.pid === null || status.pid === undefined ? "-" : String(status.pid);
  const dead = section.querySelector(".dead-letters");
  dead.classList.toggle("bad", Boolean(status.dead_letters));
  if (status.dead_letters) {
    const link = document.createElement("a");
    link.href = `/modules/${encodeURIComponent(section.dataset.module)}/dead_letters`;
    link.textContent = String(status.dead_letters);
    dead.replaceChildren(link);
  } else {
    dead.textContent = shown(status.dead_letters);
  }
  const details = section.querySelector(".last-error");
  details.hidden = !status.last_error;
  details.querySelector(".error-summary").textContent = errorSummary(status.last_error);
  details.querySelector(".traceback").textContent = status.last_error || "";
}

/** Shows the count of modules in each state at the top of the page. */
function showStateCounts(sections) {
  const counts = new Map();
  for (const section of sections) counts.set(section.dataset.state, (counts.get(section.dataset.state) || 0) + 1);
  const line = document.querySelector(".states");
  if (!line) return;
  const parts = [`${sections.length} module${sections.length === 1 ? "" : "s"}: `];
  for (const state of [...counts.keys()].sort()) {
    const badge = document.createElement("span");
    badge.className = `state state-${state}`;
    badge.textContent = `${counts.get(state)} ${state}`;
    parts.push(badge, " ");
  }
  line.replaceChildren(...parts);
}

/** Asks /modules again and updates every module's facts; a failed request changes nothing. */
async function refreshStatus() {
  if (document.hidden) return;
  let statuses;
  try {
    const response = await fetch("/modules", {credentials: "same-origin", headers: {Accept: "application/json"}});
    if (!response.ok) return;
    statuses = await response.json();
  } catch (ignored) {
    return;  // hostd busy or restarting: the next round tries again
  }
  const sections = [...document.querySelectorAll("section.module")];
  for (const section of sections) {
    if (section.dataset.node) continue;  // a peer's module: /modules is this node's only
    if (statuses[section.dataset.module]) showStatus(section, statuses[section.dataset.module]);
  }
  showStateCounts(sections);
}

document.addEventListener("DOMContentLoaded", () => {
  const refreshS = Number(document.body.dataset.refreshS);
  if (refreshS > 0) setInterval(refreshStatus, refreshS * 1000);
  for (const view of document.querySelectorAll("article.view")) {
    const form = view.querySelector("form");
    form.addEventListener("submit", event => {
      event.preventDefault();
      loadView(view);
    });
    for (const button of form.querySelectorAll(".add-item")) {
      button.addEventListener("click", () => addItem(button));
    }
    if ("autoload" in view.dataset) loadView(view);
  }
});
