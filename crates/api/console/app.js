// The modelgen operator console: a hash-routed single page over the JSON API
// and the admin endpoints (README, "Console"). Every piece of data is put in
// the page with textContent (never as HTML), so nothing a user sent can run.

import { ApiFailure, blobUrl, call, query, setToken, token, whenUnauthorized } from "./api.js";
import { hbars, lines, progressBar, seconds, sparkline, stackedBars } from "./charts.js";

const app = document.getElementById("app");
/** "unknown" until probed; "token" when the service wants one; "open" when not. */
let authMode = "unknown";
/** The current page's refresh timer. */
let timer = null;
/** Bumped on each navigation: an answer for an older page is dropped. */
let generation = 0;
/** A message for the next sign-in page (e.g. a token refused mid-session). */
let signInNote = null;
/** The notice shown on the current page after an action, and when it fades. */
let notice = null;
/** Queue depth samples of the Overview, for its sparkline (newest last). */
const queueSamples = [];
/** blob: URLs of input thumbnails already fetched, by `task/n`. */
const thumbs = new Map();

// ---------- DOM helpers ----------

/** `h("div", {class: "x", onclick: fn}, child, ...)`; strings become text. */
function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

function replace(node, ...children) {
  node.replaceChildren();
  append(node, children);
}

function badge(status) {
  return h("span", { class: `badge status-${status}` }, status);
}

function pad(n) {
  return String(n).padStart(2, "0");
}

/** An RFC 3339 instant in the browser's time zone, `2026-12-03 14:05:09`. */
function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function ago(iso) {
  if (!iso) return "";
  const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  if (s < 5) return "just now";
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}

function money(v) {
  if (v === null || v === undefined) return "–";
  return v.toLocaleString([], { minimumFractionDigits: 2, maximumFractionDigits: 4 });
}

function errorBox(err, retry) {
  const msg = err instanceof ApiFailure ? err.message : String(err);
  return h("div", { class: "state error", role: "alert" },
    h("strong", {}, "Could not load this page. "), msg,
    retry ? h("button", { class: "secondary small", onclick: retry }, "Try again") : null);
}

function loading(text) {
  return h("div", { class: "state loading" }, h("span", { class: "spinner", "aria-hidden": "true" }), text || "Loading…");
}

function empty(text, hint) {
  return h("div", { class: "state empty" }, h("strong", {}, text), hint ? h("p", {}, hint) : null);
}

function schedule(gen, fn, ms) {
  clearTimeout(timer);
  timer = setTimeout(() => {
    if (gen === generation && document.visibilityState !== "hidden") fn();
    else if (gen === generation) schedule(gen, fn, ms);
  }, ms);
}

function flash(kind, text) {
  notice = { kind, text, until: Date.now() + 8000 };
}

function noticeBox() {
  if (!notice || Date.now() > notice.until) return h("div", { id: "notice", class: "notice-slot" });
  return h("div", { id: "notice", class: `notice ${notice.kind}`, role: "status" }, notice.text);
}

// ---------- shell ----------

function shell(active) {
  const nav = [
    ["overview", "Overview"],
    ["tasks", "Tasks"],
    ["callbacks", "Callbacks"],
  ].map(([key, label]) =>
    h("a", { href: `#/${key}`, "data-nav": key, class: key === active ? "active" : null, "aria-current": key === active ? "page" : null }, label));
  const signOut = authMode === "token"
    ? h("button", { id: "signout", class: "ghost small", onclick: () => { setToken(null); location.hash = "#/signin"; } }, "Sign out")
    : h("span", { class: "auth-off", title: "API_AUTH_TOKEN is not set: the API is open" }, "auth off");
  const main = h("main", { id: "main" });
  replace(app,
    h("header", { class: "top" },
      h("a", { class: "brand", href: "#/overview" }, h("img", { src: "/console/favicon.svg", alt: "", width: 22, height: 22 }), "modelgen", h("span", {}, "console")),
      h("nav", {}, nav),
      signOut),
    main);
  return main;
}

// ---------- sign-in ----------

async function probeAuth() {
  try {
    await call("/admin/callbacks?limit=1", { auth: false });
    authMode = "open";
  } catch (e) {
    if (e.status === 401) authMode = "token";
    else throw e;
  }
}

function signInPage() {
  const input = h("input", { id: "token", type: "password", name: "token", autocomplete: "current-password", required: true, placeholder: "API_AUTH_TOKEN", "aria-describedby": "signin-help" });
  const error = h("div", { id: "signin-error", class: "form-error", role: "alert" });
  if (signInNote) replace(error, signInNote);
  signInNote = null;
  const button = h("button", { id: "signin-submit", type: "submit" }, "Sign in");
  const form = h("form", { id: "signin", class: "card signin", novalidate: true },
    h("div", { class: "brand big" }, h("img", { src: "/console/favicon.svg", alt: "", width: 34, height: 34 }), "modelgen", h("span", {}, "console")),
    h("h1", {}, "Sign in"),
    h("p", { id: "signin-help", class: "muted" }, "Paste the service's API token (API_AUTH_TOKEN). It stays in this browser tab only and is sent with each call as a bearer token."),
    h("label", { for: "token" }, "API token"), input, error, button);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const value = input.value.trim();
    if (!value) {
      replace(error, "Enter the token.");
      return;
    }
    button.disabled = true;
    replace(button, "Checking…");
    setToken(value);
    try {
      await call("/admin/callbacks?limit=1", { quiet401: true });
      const next = sessionStorage.getItem("modelgen.console.next") || "#/overview";
      sessionStorage.removeItem("modelgen.console.next");
      location.hash = next === "#/signin" ? "#/overview" : next;
      route();
    } catch (e) {
      setToken(null);
      replace(error, e.status === 401 ? "That token was refused (401): it is not this service's API_AUTH_TOKEN." : `Could not check the token: ${e.message}`);
      button.disabled = false;
      replace(button, "Sign in");
      input.select();
    }
  });
  replace(app, h("div", { class: "center" }, form));
  input.focus();
}

whenUnauthorized(() => {
  setToken(null);
  authMode = "token";
  signInNote = "Your token was refused; sign in again.";
  location.hash = "#/signin";
});

// ---------- overview ----------

const OUTCOMES = [
  { key: "completed", label: "completed", cls: "bar-ok" },
  { key: "failed", label: "failed", cls: "bar-bad" },
  { key: "cancelled", label: "cancelled", cls: "bar-muted" },
];

function card(label, value, sub, extra) {
  return h("div", { class: "card stat" }, h("div", { class: "stat-label" }, label), h("div", { class: "stat-value" }, value), sub ? h("div", { class: "stat-sub" }, sub) : null, extra || null);
}

function overview(params) {
  const gen = generation;
  const win = params.get("window") === "24h" ? "24h" : "1h";
  const main = shell("overview");
  const updated = h("span", { class: "muted small", id: "updated" });
  const body = h("div", { id: "overview" }, loading("Loading the last " + (win === "1h" ? "hour" : "day") + "…"));
  replace(main,
    h("div", { class: "toolbar" },
      h("h1", {}, "Overview"),
      h("div", { class: "segmented", role: "group", "aria-label": "Window" },
        h("a", { href: "#/overview?window=1h", class: win === "1h" ? "on" : null, id: "window-1h" }, "Last hour"),
        h("a", { href: "#/overview?window=24h", class: win === "24h" ? "on" : null, id: "window-24h" }, "Last 24 h")),
      updated),
    body);
  const load = async () => {
    try {
      const s = await call(`/admin/stats${query({ window: win })}`);
      if (gen !== generation) return;
      queueSamples.push(s.queue.depth);
      if (queueSamples.length > 120) queueSamples.shift();
      renderOverview(body, s);
      replace(updated, `Updated ${when(s.to).slice(11)} · refreshes every ${win === "1h" ? 5 : 30} s`);
    } catch (e) {
      if (gen !== generation) return;
      replace(body, errorBox(e, load));
    }
    schedule(gen, load, win === "1h" ? 5000 : 30000);
  };
  load();
}

function renderOverview(body, s) {
  const long = s.window === "24h";
  const per = long ? "15 min" : "minute";
  const rate = s.success_rate === null ? "–" : `${(s.success_rate * 100).toFixed(s.success_rate === 1 ? 0 : 1)} %`;
  const cards = h("div", { class: "cards" },
    card("Success rate", rate, `${s.completed} completed · ${s.failed} failed · ${s.cancelled} cancelled`),
    card("Created → completed", `${seconds(s.latency.p50_ms)}`, `p50 · p95 ${seconds(s.latency.p95_ms)} · ${s.latency.count} tasks`),
    card("Queue depth", String(s.queue.depth), s.queue.oldest_queued_at ? `oldest waiting since ${ago(s.queue.oldest_queued_at)}` : `${s.queue.processing} running upstream`, sparkline(queueSamples, "Queue depth, recent samples")),
    card("Callbacks", h("span", {}, h("span", { id: "cb-pending" }, String(s.callbacks.pending)), " pending"),
      h("a", { href: "#/callbacks", class: s.callbacks.dead ? "dead-link bad" : "dead-link" }, `${s.callbacks.dead} dead`)),
    card("Spend today", money(s.spend_today.cost), `${s.spend_today.completed} completed since ${when(s.spend_today.since).slice(11, 16)} (UTC midnight)`));
  const errorsByStatus = s.upstream_errors.map((e) => ({
    label: e.status === "none" ? "no answer" : `HTTP ${e.status}`,
    value: e.submits + e.polls,
    detail: `${e.submits} submits, ${e.polls} polls`,
  }));
  const anyEnded = s.completed + s.failed + s.cancelled > 0;
  const anyErrors = errorsByStatus.length > 0;
  replace(body,
    cards,
    s.truncated ? h("div", { class: "notice warn" }, "More than 100 000 events fell in this window: the charts count the oldest 100 000.") : null,
    h("div", { class: "charts", id: "overview-charts" },
      h("section", { class: "card chart-card wide" },
        h("h2", {}, `Tasks ended per ${per}`), legend(OUTCOMES),
        anyEnded ? stackedBars(s.buckets, OUTCOMES, `Tasks ended per ${per} by outcome`, long, true) : empty("No task ended in this window.")),
      h("section", { class: "card chart-card" },
        h("h2", {}, "Created → completed"), legend([{ label: "p50", cls: "p50" }, { label: "p95", cls: "p95" }]),
        s.latency.count ? lines(s.buckets, [{ key: "p50_ms", label: "p50", cls: "p50" }, { key: "p95_ms", label: "p95", cls: "p95" }], "Created to completed time, p50 and p95", long) : empty("No completed task in this window.")),
      h("section", { class: "card chart-card" },
        h("h2", {}, `Upstream errors per ${per}`),
        anyErrors ? [stackedBars(s.buckets, [{ key: "upstream_errors", label: "errors", cls: "bar-bad" }], `Failed upstream calls per ${per}`, long),
          h("h3", {}, "By HTTP status"), hbars(errorsByStatus, "Failed upstream calls by HTTP status")]
          : empty("No upstream errors in this window.", "Failed submits and polls (429, 5xx, timeouts) would show here."))));
}

function legend(items) {
  return h("div", { class: "legend" }, items.map((i) => h("span", {}, h("i", { class: `swatch ${i.cls}` }), i.label)));
}

// ---------- tasks ----------

const STATUSES = ["submitted", "processing", "completed", "failed", "cancelled"];
const TYPES = ["default", "edit", "outfit"];

/** `2026-12-03T10:00:00Z` → the `datetime-local` value in the browser's zone. */
function toLocalInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function select(name, label, options, value) {
  return h("label", {}, label,
    h("select", { name, id: `filter-${name}` }, h("option", { value: "" }, "any"), options.map((o) => h("option", { value: o, selected: o === value }, o))));
}

function tasksPage(params) {
  const gen = generation;
  const main = shell("tasks");
  const filters = {
    user_id: params.get("user_id") || "",
    status: params.get("status") || "",
    type: params.get("type") || "",
    from: params.get("from") || "",
    to: params.get("to") || "",
  };
  const form = h("form", { class: "filters card", id: "filters" },
    h("label", {}, "User", h("input", { name: "user_id", id: "filter-user", value: filters.user_id, placeholder: "user id", autocomplete: "off" })),
    select("status", "Status", STATUSES, filters.status),
    select("type", "Type", TYPES, filters.type),
    h("label", {}, "Created from", h("input", { type: "datetime-local", name: "from", value: toLocalInput(filters.from) })),
    h("label", {}, "to", h("input", { type: "datetime-local", name: "to", value: toLocalInput(filters.to) })),
    h("div", { class: "filter-actions" },
      h("button", { type: "submit" }, "Apply"),
      h("a", { href: "#/tasks", class: "button ghost" }, "Clear")));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const data = new FormData(form);
    const iso = (v) => (v ? new Date(v).toISOString() : "");
    location.hash = "#/tasks" + query({
      user_id: data.get("user_id").trim(),
      status: data.get("status"),
      type: data.get("type"),
      from: iso(data.get("from")),
      to: iso(data.get("to")),
    });
  });
  const list = h("div", { id: "task-list-wrap" }, loading("Loading tasks…"));
  const updated = h("span", { class: "muted small", id: "updated" });
  replace(main, h("div", { class: "toolbar" }, h("h1", {}, "Tasks"), updated), form, list);

  let rows = [];
  let cursor = null;
  let paged = false;
  const filtered = Object.values(filters).some((v) => v);
  const render = () => {
    if (!rows.length) {
      replace(list, filtered ? empty("No task matches these filters.", "Widen the time range or clear a filter.")
        : empty("No tasks yet.", "Tasks created through POST /models/default, /models/edit or /models/outfit appear here within seconds."));
      return;
    }
    const table = h("table", { id: "task-list", class: "table" },
      h("thead", {}, h("tr", {}, ["Task", "User", "Type", "Status", "Progress", "Created", "Took", "Cost"].map((c) => h("th", {}, c)))),
      h("tbody", {}, rows.map(taskRow)));
    replace(list, h("div", { class: "card table-card" }, table),
      cursor ? h("div", { class: "more" }, h("button", { class: "secondary", id: "load-more", onclick: more }, "Load more")) : h("p", { class: "muted small end" }, `${rows.length} task${rows.length === 1 ? "" : "s"} · end of list`));
  };
  const load = async () => {
    try {
      const page = await call(`/tasks${query({ ...filters, limit: 25 })}`);
      if (gen !== generation) return;
      rows = page.items;
      cursor = page.next_cursor;
      render();
      replace(updated, paged ? "" : `Updated ${when(new Date().toISOString()).slice(11)} · refreshes every 3 s`);
    } catch (e) {
      if (gen !== generation) return;
      replace(list, errorBox(e, load));
    }
    if (!paged) schedule(gen, load, 3000);
  };
  const more = async (ev) => {
    paged = true;
    clearTimeout(timer);
    replace(updated, "Auto-refresh paused while paging");
    ev.target.disabled = true;
    try {
      const page = await call(`/tasks${query({ ...filters, limit: 25, cursor })}`);
      if (gen !== generation) return;
      rows = rows.concat(page.items);
      cursor = page.next_cursor;
      render();
    } catch (e) {
      ev.target.disabled = false;
      flash("bad", `Could not load more: ${e.message}`);
    }
  };
  load();
}

function taskRow(t) {
  const took = t.completed_at ? seconds(new Date(t.completed_at) - new Date(t.created_at)) : "";
  const link = h("a", { href: `#/tasks/${encodeURIComponent(t.task_id)}`, class: "mono" }, t.task_id);
  return h("tr", { "data-task-id": t.task_id, "data-status": t.status, onclick: (ev) => { if (ev.target.tagName !== "A") location.hash = `#/tasks/${encodeURIComponent(t.task_id)}`; } },
    h("td", { "data-label": "Task" }, link),
    h("td", { "data-label": "User" }, t.user_id),
    h("td", { "data-label": "Type" }, t.type),
    h("td", { "data-label": "Status", class: "status" }, badge(t.status), t.error_code ? h("span", { class: "code" }, ` ${t.error_code}`) : null),
    h("td", { "data-label": "Progress" }, progress(t.progress, t.status)),
    h("td", { "data-label": "Created", title: when(t.created_at) }, ago(t.created_at)),
    h("td", { "data-label": "Took" }, took),
    h("td", { "data-label": "Cost" }, t.cost === null ? "" : money(t.cost)));
}

function progress(p, status) {
  return h("span", { class: "progress-wrap" }, progressBar(p, `status-${status}`), h("span", { class: "small muted" }, `${p} %`));
}

// ---------- task detail ----------

const KIND_LABELS = {
  created: "Created",
  claimed: "Claimed",
  submitted: "Submitted upstream",
  submit_failed: "Submit failed",
  polled: "Polled",
  poll_failed: "Poll failed",
  snoozed: "Put off",
  downloaded: "Images stored",
  completed: "Completed",
  failed: "Failed",
  cancelled: "Cancelled",
  retried: "Retried by an operator",
  callback_attempt: "Callback attempt",
  callback_delivered: "Callback delivered",
  callback_dead: "Callback dead",
  callback_redelivered: "Callback redelivery queued",
};
const GOOD = new Set(["submitted", "completed", "downloaded", "callback_delivered"]);
const BAD = new Set(["submit_failed", "poll_failed", "failed", "callback_dead"]);

function tone(e) {
  if (BAD.has(e.kind)) return "bad";
  if (e.kind === "callback_attempt") return e.http_status >= 200 && e.http_status < 300 ? "good" : "bad";
  if (GOOD.has(e.kind)) return "good";
  return "neutral";
}

function eventDetails(e) {
  const parts = [];
  if (e.replica) parts.push(["replica", e.replica]);
  if (e.attempt !== null) parts.push(["attempt", e.attempt]);
  if (e.upstream_task_id) parts.push(["upstream id", e.upstream_task_id]);
  if (e.upstream_status) parts.push(["upstream", e.upstream_status]);
  if (e.progress !== null) parts.push(["progress", `${e.progress} %`]);
  if (e.http_status !== null) parts.push(["HTTP", e.http_status]);
  if (e.latency_ms !== null) parts.push(["latency", seconds(e.latency_ms)]);
  if (e.error_code !== null) parts.push(["code", e.error_code]);
  return parts;
}

function timeline(events, createdAt) {
  if (!events.length) return empty("No timeline entries.", "Entries older than EVENT_RETENTION are deleted.");
  const t0 = new Date(createdAt).getTime();
  return h("ol", { id: "timeline", class: "timeline" }, events.map((e) => {
    const offset = new Date(e.at).getTime() - t0;
    return h("li", { class: `tone-${tone(e)}`, "data-kind": e.kind, "data-seq": e.seq },
      h("div", { class: "tl-time", title: when(e.at) }, when(e.at).slice(11), h("span", { class: "muted" }, ` +${seconds(Math.max(offset, 0))}`)),
      h("div", { class: "tl-body" },
        h("div", { class: "tl-kind" }, KIND_LABELS[e.kind] || e.kind),
        h("div", { class: "tl-details" }, eventDetails(e).map(([k, v]) => h("span", { class: "kv" }, h("span", { class: "k" }, k), " ", h("span", { class: "v" }, String(v))))),
        e.message ? h("div", { class: "tl-message" }, e.message) : null));
  }));
}

function field(label, value, cls) {
  return [h("dt", {}, label), h("dd", { class: cls || null }, value === null || value === undefined || value === "" ? "–" : value)];
}

async function action(button, label, fn, after) {
  button.disabled = true;
  const old = button.textContent;
  replace(button, `${label}…`);
  try {
    const text = await fn();
    flash("good", text);
  } catch (e) {
    flash("bad", `${label} failed: ${e.message}`);
  }
  button.disabled = false;
  replace(button, old);
  after();
}

function callbackTable(rows, id, after, withTask) {
  if (!rows.length) return empty(id === "task-callbacks" ? "No callback for this task." : "None.", null);
  return h("div", { class: "card table-card" }, h("table", { id, class: "table" },
    h("thead", {}, h("tr", {}, [withTask ? "Task" : null, "Event", "Type", "Status", "Attempts", "Last error", "When", ""].filter((c) => c !== null).map((c) => h("th", {}, c)))),
    h("tbody", {}, rows.map((c) => h("tr", { "data-event-id": c.event_id, "data-status": c.status },
      withTask ? h("td", { "data-label": "Task" }, h("a", { href: `#/tasks/${encodeURIComponent(c.task_id)}`, class: "mono" }, c.task_id)) : null,
      h("td", { "data-label": "Event", class: "mono small" }, c.event_id),
      h("td", { "data-label": "Type" }, c.event_type),
      h("td", { "data-label": "Status" }, badge(c.status)),
      h("td", { "data-label": "Attempts" }, String(c.attempts)),
      h("td", { "data-label": "Last error", class: "error-text" }, c.last_error || ""),
      h("td", { "data-label": "When", title: when(c.delivered_at || c.next_attempt_at) },
        c.status === "delivered" ? `delivered ${ago(c.delivered_at)}` : c.status === "pending" ? `next ${when(c.next_attempt_at).slice(11)}` : `since ${ago(c.next_attempt_at)}`),
      h("td", { class: "actions" }, c.status === "pending" ? null : h("button", {
        class: "small secondary redeliver", "data-event-id": c.event_id,
        onclick: (ev) => action(ev.target, "Redeliver", async () => {
          await call(`/admin/callbacks/${encodeURIComponent(c.event_id)}/redeliver`, { method: "POST" });
          return `Callback ${c.event_id} queued for delivery again.`;
        }, after),
      }, "Redeliver")))))));
}

function taskDetail(id) {
  const gen = generation;
  const main = shell("tasks");
  const body = h("div", { id: "task-detail" }, loading("Loading the task…"));
  replace(main, h("a", { href: "#/tasks", class: "back" }, "← Tasks"), body);
  const enc = encodeURIComponent(id);
  let inputs = null;
  const load = async () => {
    let task;
    let events;
    let callbacks;
    try {
      [task, events, callbacks] = await Promise.all([
        call(`/tasks/${enc}`),
        call(`/tasks/${enc}/events`),
        call(`/admin/callbacks${query({ task_id: id, limit: 100 })}`),
      ]);
      if (inputs === null) inputs = (await call(`/admin/tasks/${enc}/inputs`)).items;
    } catch (e) {
      if (gen !== generation) return;
      replace(body, e.status === 404 ? empty(`Task ${id} does not exist.`, "It may have been mistyped, or erased.") : errorBox(e, load));
      if (e.status !== 404) schedule(gen, load, 5000);
      return;
    }
    if (gen !== generation) return;
    renderTask(body, task, events.items, callbacks.items, inputs, load);
    const busy = !["completed", "failed", "cancelled"].includes(task.status) || callbacks.items.some((c) => c.status === "pending");
    schedule(gen, load, busy ? 1500 : 10000);
  };
  load();
}

function renderTask(body, t, events, callbacks, inputs, reload) {
  const terminal = ["completed", "failed", "cancelled"].includes(t.status);
  const actions = h("div", { class: "actions-bar" },
    !terminal ? h("button", { id: "cancel-task", class: "danger", onclick: (ev) => {
      if (!confirm(`Cancel task ${t.task_id}?`)) return;
      action(ev.target, "Cancel", async () => { await call(`/tasks/${encodeURIComponent(t.task_id)}/cancel`, { method: "POST" }); return "Task cancelled; its callback is queued."; }, reload);
    } }, "Cancel task") : null,
    t.status === "failed" ? h("button", { id: "retry-task", onclick: (ev) => action(ev.target, "Retry", async () => {
      await call(`/admin/tasks/${encodeURIComponent(t.task_id)}/retry`, { method: "POST" });
      return "Task put back in the queue; it keeps its id.";
    }, reload) }, "Retry task") : null,
    callbacks.filter((c) => c.status !== "pending").slice(0, 1).map((c) => h("button", { id: "redeliver-task-callback", class: "secondary", onclick: (ev) => action(ev.target, "Redeliver", async () => {
      await call(`/admin/callbacks/${encodeURIComponent(c.event_id)}/redeliver`, { method: "POST" });
      return `Callback ${c.event_id} queued for delivery again.`;
    }, reload) }, "Redeliver callback")));

  const why = t.status === "failed"
    ? h("div", { class: "why card", id: "why" }, h("h2", {}, "Why it failed"),
      h("p", {}, h("span", { class: "code" }, `code ${t.error_code ?? "–"}`), " ", t.error_message || "no message"),
      h("p", { class: "muted small" }, "The timeline below shows each upstream call and its answer."))
    : null;

  const images = t.images.length
    ? h("div", { class: "images" }, t.images.map((img, i) => h("a", { href: img.image_url, target: "_blank", rel: "noopener noreferrer", class: "result" },
      h("img", { class: "result-image", src: img.image_url, alt: `Result image ${i + 1} of ${t.task_id}`, loading: "eager" }))))
    : empty(t.status === "completed" ? "No image stored." : terminal ? "No result: the task did not complete." : "No result yet.", null);

  const inputsBox = h("div", { class: "thumbs", id: "inputs" });
  if (!inputs.length) replace(inputsBox, h("span", { class: "muted small" }, "No input images."));
  for (const input of inputs) {
    const key = `${t.task_id}/${input.n}`;
    const label = input.source === "upload" ? "upload" : input.source === "result" ? "base model" : "URL";
    const slot = h("figure", { class: "thumb" }, h("div", { class: "thumb-img" }, input.available ? h("span", { class: "spinner" }) : h("span", { class: "muted small" }, input.source === "url" ? "not stored" : "deleted")), h("figcaption", {}, `#${input.n} · ${label}`));
    inputsBox.append(slot);
    if (!input.available) continue;
    const show = (url) => replace(slot.firstChild, h("img", { src: url, alt: `Input ${input.n} (${label})`, class: "input-image" }));
    if (thumbs.has(key)) show(thumbs.get(key));
    else blobUrl(`/admin/tasks/${encodeURIComponent(t.task_id)}/inputs/${input.n}`)
      .then((url) => { thumbs.set(key, url); show(url); })
      .catch((e) => replace(slot.firstChild, h("span", { class: "error-text small" }, e.message)));
  }

  const dl = h("dl", { class: "fields" },
    field("User", t.user_id),
    field("Type", t.type + (t.angle ? ` · ${t.angle}` : "")),
    field("Status", badge(t.status)),
    field("Progress", `${t.progress} %`),
    field("Base model", t.base_model_task_id ? h("a", { href: `#/tasks/${encodeURIComponent(t.base_model_task_id)}`, class: "mono" }, t.base_model_task_id) : null),
    field("Request id", t.request_id, "mono"),
    field("Created", when(t.created_at)),
    field("Queued", when(t.queued_at)),
    field("Submitted", when(t.submitted_at)),
    field("Ended", when(t.completed_at)),
    field("Updated", when(t.updated_at)),
    t.queue_position !== null ? field("Queue position", `${t.queue_position} ahead · starts ~${when(t.estimated_start_at).slice(11)}`) : null,
    field("Cost", t.cost === null ? null : money(t.cost)),
    field("Retries", String(t.retries)),
    field("Callback to", t.callback_url || "CALLBACK_URL (the service's)", t.callback_url ? "mono" : undefined),
    t.error_code ? field("Error", `${t.error_code}: ${t.error_message || ""}`, "error-text") : null);

  replace(body,
    h("div", { class: "toolbar" }, h("h1", { class: "mono task-title" }, t.task_id), h("span", { id: "task-status" }, badge(t.status)), actions),
    noticeBox(),
    why,
    h("div", { class: "detail-grid" },
      h("section", { class: "card" }, h("h2", {}, "Task"), dl),
      h("section", { class: "card" }, h("h2", {}, "Result"), images, h("h2", {}, "Inputs"), inputsBox)),
    h("section", { class: "card" }, h("h2", {}, `Timeline `, h("span", { class: "muted small" }, `${events.length} entries, oldest first`)), timeline(events, t.created_at)),
    h("section", {}, h("h2", {}, "Callbacks"), callbackTable(callbacks, "task-callbacks", reload, false)));
}

// ---------- callbacks ----------

function callbacksPage() {
  const gen = generation;
  const main = shell("callbacks");
  const body = h("div", { id: "callbacks" }, loading("Loading deliveries…"));
  const testResult = h("div", { id: "test-result", class: "test-slot" });
  const sendTest = h("button", { id: "send-test", class: "secondary", onclick: async () => {
    sendTest.disabled = true;
    replace(sendTest, "Sending…");
    try {
      const r = await call("/admin/callbacks/test", { method: "POST" });
      replace(testResult, h("div", { class: `notice ${r.delivered ? "good" : "bad"}`, "data-delivered": String(r.delivered) },
        h("strong", {}, r.delivered ? "Test event delivered. " : "Test event refused. "),
        `HTTP ${r.http_status ?? "none"} in ${seconds(r.latency_ms)}`, r.signed ? " · signed" : " · unsigned (no CALLBACK_SIGNING_SECRET)",
        r.error ? h("div", { class: "small" }, r.error) : null,
        h("div", { class: "small muted mono" }, r.event_id)));
    } catch (e) {
      replace(testResult, h("div", { class: "notice bad", "data-delivered": "false" }, `Could not send: ${e.message}`));
    }
    sendTest.disabled = false;
    replace(sendTest, "Send test event");
  } }, "Send test event");
  const redeliverAll = h("button", { id: "redeliver-all", onclick: (ev) => action(ev.target, "Redeliver all dead", async () => {
    const r = await call("/admin/callbacks/redeliver-dead", { method: "POST" });
    return `${r.redelivered} dead callback${r.redelivered === 1 ? "" : "s"} queued for delivery again.`;
  }, load) }, "Redeliver all dead");
  replace(main,
    h("div", { class: "toolbar" }, h("h1", {}, "Callbacks"), h("div", { class: "actions-bar" }, sendTest, redeliverAll)),
    h("p", { class: "muted small" }, "Deliveries of task outcomes to CALLBACK_URL, or to a task's own callback_url (shown on the task's page). A dead one gave up after its last attempt; redelivering keeps its webhook-id. The test event is signed like a real one; the receiver should answer 2xx and change nothing."),
    testResult, body);
  async function load() {
    try {
      const [dead, pending, delivered] = await Promise.all([
        call("/admin/callbacks?status=dead&limit=100"),
        call("/admin/callbacks?status=pending&limit=100"),
        call("/admin/callbacks?status=delivered&limit=10"),
      ]);
      if (gen !== generation) return;
      redeliverAll.disabled = dead.items.length === 0;
      replace(body, noticeBox(),
        h("h2", {}, "Dead ", h("span", { class: "count bad" }, String(dead.items.length))),
        dead.items.length ? callbackTable(dead.items, "dead-list", load, true) : empty("No dead callbacks.", "Every delivery reached the receiver or is still being retried."),
        h("h2", {}, "Pending ", h("span", { class: "count" }, String(pending.items.length))),
        pending.items.length ? callbackTable(pending.items, "pending-list", load, true) : empty("Nothing waiting.", null),
        h("h2", {}, "Recently delivered"),
        delivered.items.length ? callbackTable(delivered.items, "delivered-list", load, true) : empty("None yet.", null));
    } catch (e) {
      if (gen !== generation) return;
      replace(body, errorBox(e, load));
    }
    schedule(gen, load, 3000);
  }
  load();
}

// ---------- router ----------

async function route() {
  clearTimeout(timer);
  generation += 1;
  const gen = generation;
  if (notice && Date.now() > notice.until) notice = null;
  if (authMode === "unknown") {
    replace(app, h("div", { class: "center" }, loading("Connecting to the service…")));
    try {
      await probeAuth();
    } catch (e) {
      replace(app, h("div", { class: "center" }, errorBox(e, route)));
      return;
    }
    if (gen !== generation) return;
  }
  const hash = location.hash || "#/overview";
  const [path, qs] = hash.slice(1).split("?");
  const parts = path.split("/").filter(Boolean);
  if (authMode === "token" && !token()) {
    if (parts[0] !== "signin") sessionStorage.setItem("modelgen.console.next", hash);
    signInPage();
    return;
  }
  const params = new URLSearchParams(qs || "");
  switch (parts[0]) {
    case "signin":
      if (authMode === "open") location.hash = "#/overview";
      else signInPage();
      break;
    case undefined:
    case "overview":
      overview(params);
      break;
    case "tasks":
      if (parts[1]) taskDetail(decodeURIComponent(parts[1]));
      else tasksPage(params);
      break;
    case "callbacks":
      callbacksPage();
      break;
    default:
      replace(shell(""), empty("No such page.", "Use the menu above."));
  }
}

window.addEventListener("hashchange", route);
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") route();
});
route();
