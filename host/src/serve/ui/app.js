// The runs page: runs newest first, a run's timeline live, the webhook
// agents. Plain DOM, no dependencies; everything from runs is set as text.
"use strict";

const main = document.getElementById("main");
const live = document.getElementById("live");
const PAGE = 50;
const POLL_MS = 2000;
const SHORT = 160;
let needsToken = false;
let stopView = () => {};

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function show(...nodes) {
  main.replaceChildren(...nodes.flat());
}

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (response.status === 401) {
    needsToken = true;
    throw new Unauthorized();
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const message = body && body.error ? `${body.error.kind}: ${body.error.message}` : `HTTP ${response.status}`;
    throw new Error(message);
  }
  return body;
}

function failed(err, retry) {
  if (err instanceof Unauthorized) return login(retry);
  show(el("p", { class: "error-text", role: "alert" }, String(err.message || err)));
}

function login(retry) {
  stopView();
  const input = el("input", { type: "password", id: "token", autocomplete: "current-password", "aria-label": "Token" });
  const said = el("p", { class: "error-text", role: "alert" });
  const form = el("form", { class: "login", onsubmit: async (event) => {
    event.preventDefault();
    try {
      await api("/ui/login", { method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ token: input.value }) });
      retry();
    } catch (err) {
      said.textContent = err instanceof Unauthorized ? "That is not this server's token." : String(err.message);
    }
  } },
    el("h1", {}, "This server asks for its token"),
    el("p", { class: "muted" }, "The token flue serve was started with (--token or FLUE_SERVE_TOKEN). ",
      "It is kept in a cookie only this server can read."),
    el("div", { class: "row" }, input, el("button", { class: "primary", type: "submit" }, "Continue")),
    said);
  show(form);
  input.focus();
}

function hashRoute() {
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  return { path: path || "/", params: new URLSearchParams(query || "") };
}

function route() {
  stopView();
  stopView = () => {};
  live.textContent = "";
  const { path, params } = hashRoute();
  for (const link of document.querySelectorAll("header nav a")) {
    const current = (link.id === "nav-agents") === path.startsWith("/agents");
    if (current) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
  const run = path.match(/^\/runs\/([^/]+)$/);
  if (run) return runPage(decodeURIComponent(run[1]));
  if (path === "/agents") return agentsPage();
  return runsPage(params);
}

function duration(ms) {
  if (ms === null || ms === undefined) return "";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}

function when(ms) {
  return ms ? new Date(ms).toLocaleString() : "";
}

function status(text) {
  return el("span", { class: `status ${text}` }, text);
}

function short(text, max = SHORT) {
  const value = String(text ?? "");
  return value.length > max ? value.slice(0, max) + "…" : value;
}

// Shown shortened, with the whole text one click (or Enter) away.
function expandable(text, max = SHORT) {
  const value = String(text ?? "");
  if (value.length <= max) return el("code", {}, value);
  return el("details", {}, el("summary", {}, el("code", {}, short(value, max))), el("pre", {}, value));
}

// ---- Runs ----------------------------------------------------------------

function runsPage(params) {
  const query = {
    agent: params.get("agent") || "",
    status: params.get("status") || "",
    id: params.get("id") || "",
    before: params.get("before") || "",
  };
  const field = (name, label) => el("label", {}, label,
    el("input", { name, value: query[name], size: 16, placeholder: "any" }));
  const statusSelect = el("select", { name: "status" },
    ["", "queued", "running", "succeeded", "failed", "cancelled", "interrupted"].map((s) =>
      el("option", { value: s, selected: s === query.status }, s || "any")));
  const form = el("form", { class: "filters", role: "search", onsubmit: (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const next = new URLSearchParams();
    for (const name of ["agent", "status", "id"]) if (data.get(name)) next.set(name, data.get(name));
    location.hash = `#/?${next}`;
  } },
    field("agent", "Agent"), el("label", {}, "Status", statusSelect), field("id", "Id (invocation or run)"),
    el("button", { type: "submit" }, "Filter"),
    el("a", { href: "#/" }, "Clear"));
  const body = el("tbody", { id: "runs" });
  const table = el("table", {},
    el("thead", {}, el("tr", {}, ["Run", "Agent", "Id", "Status", "Started", "Duration", "Outcome"].map((h) =>
      el("th", { scope: "col" }, h)))),
    body);
  const pager = el("div", { class: "pager" });
  show(el("h1", {}, "Runs"), form, table, pager);

  const load = async () => {
    const search = new URLSearchParams({ limit: PAGE });
    for (const [name, value] of Object.entries(query)) if (value) search.set(name, value);
    const page = await api(`/runs?${search}`);
    body.replaceChildren(...page.runs.map(runRow));
    if (!page.runs.length) body.append(el("tr", {}, el("td", { colspan: 7, class: "muted" }, "No runs yet.")));
    const links = [];
    if (query.before) links.push(el("a", { href: "#/?" + new URLSearchParams(Object.entries(query)
      .filter(([k, v]) => v && k !== "before")) }, "← Newest"));
    if (page.next) {
      const next = new URLSearchParams(Object.entries(query).filter(([, v]) => v));
      next.set("before", page.next);
      links.push(el("a", { href: `#/?${next}`, id: "older" }, "Older →"));
    }
    pager.replaceChildren(...links);
    live.textContent = query.before ? "" : `updated ${new Date().toLocaleTimeString()}`;
  };
  let timer = null;
  const poll = async () => {
    try {
      await load();
    } catch (err) {
      clearTimeout(timer);
      return failed(err, route);
    }
    // Only the newest page changes as runs come: it alone is kept live.
    if (!query.before) timer = setTimeout(poll, document.hidden ? POLL_MS * 5 : POLL_MS);
  };
  stopView = () => clearTimeout(timer);
  poll();
}

function runRow(run) {
  const outcome = run.error ? el("span", { class: "error-text" }, `${run.error.kind}: ${short(run.error.message, 80)}`)
    : run.status === "succeeded" ? "result" : "";
  return el("tr", { class: "run-row", "data-run": run.runId },
    el("td", {}, el("a", { href: `#/runs/${encodeURIComponent(run.runId)}`, class: "mono" }, run.runId)),
    el("td", {}, run.agent), el("td", { class: "mono" }, run.id), el("td", {}, status(run.status)),
    el("td", {}, when(run.createdMs)), el("td", { class: "num" }, duration(run.durationMs)), el("td", {}, outcome));
}

// ---- One run ---------------------------------------------------------------

async function runPage(runId) {
  let record;
  try {
    record = await api(`/runs/${encodeURIComponent(runId)}`);
  } catch (err) {
    return failed(err, route);
  }
  const summary = el("dl", { class: "summary", id: "summary" });
  const timeline = el("ol", { class: "timeline", id: "timeline", "aria-live": "polite" });
  const outcome = el("div", { id: "outcome" });
  const cancel = el("button", { type: "button", id: "cancel", onclick: async () => {
    cancel.disabled = true;
    try { await api(`/runs/${encodeURIComponent(runId)}/cancel`, { method: "POST" }); } catch (err) { cancel.textContent = String(err.message); }
  } }, "Cancel run");
  const fillSummary = (r) => {
    const rows = [["Status", status(r.status)], ["Agent", r.agent], ["Id", el("code", {}, r.id)],
      ["Started", when(r.createdMs)],
      ["Duration", r.finishedMs ? duration(r.finishedMs - r.createdMs) : "going on"],
      ["Journal", `${r.journalEntries || 0} entries`]];
    summary.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    cancel.hidden = !(r.status === "running" || r.status === "queued");
  };
  fillSummary(record);
  const kept = el("section", { id: "kept" });
  show(el("h1", {}, "Run ", el("code", {}, runId)), summary, cancel, el("h2", {}, "Timeline"), timeline, outcome, kept);
  keptForId(record, kept);

  const view = new Timeline(timeline);
  const source = new EventSource(`/runs/${encodeURIComponent(runId)}/events`);
  live.textContent = "live";
  const finish = async (ok, data) => {
    source.close();
    live.textContent = "";
    view.closeText();
    outcome.replaceChildren(ok
      ? el("div", { class: "outcome ok" }, el("strong", {}, "Result"), el("pre", { id: "result" }, JSON.stringify(data.result, null, 2)))
      : el("div", { class: "outcome fail", role: "alert" }, el("strong", { class: "error-text" },
          `Failed: ${data.error?.kind || "error"}`), el("pre", { id: "error" }, data.error?.message || "")));
    try { fillSummary(await api(`/runs/${encodeURIComponent(runId)}`)); } catch (_) { /* the outcome is shown */ }
  };
  source.addEventListener("event", (message) => view.add(JSON.parse(message.data)));
  source.addEventListener("result", (message) => finish(true, JSON.parse(message.data)));
  source.addEventListener("error", (message) => {
    // A frame named `error` is the run's failure; without data, the
    // connection dropped and the browser tries again by itself.
    if (message.data) finish(false, JSON.parse(message.data));
    else live.textContent = "reconnecting…";
  });
  source.addEventListener("open", () => { live.textContent = "live"; });
  stopView = () => source.close();
}

// What the agent keeps for the run's id: its conversations and its sandbox.
async function keptForId(record, into) {
  let sessions;
  try {
    sessions = await api(`/sessions/${encodeURIComponent(record.agent)}/${encodeURIComponent(record.id)}`);
  } catch (_) {
    return; // Nothing kept for this id (404), or not readable: nothing to show.
  }
  const parts = [el("h2", {}, `Kept for id ${record.id}`)];
  if (sessions.sandbox) {
    parts.push(el("p", {}, `Sandbox ${sessions.sandbox.id} on ${sessions.sandbox.connector} (${sessions.sandbox.state})`));
  }
  for (const session of sessions.sessions || []) {
    const messages = (session.messages || []).map((message) => {
      const [role, body] = Object.entries(message)[0] || ["message", message];
      const text = typeof body === "string" ? body : body && typeof body.text === "string" && body.text ? body.text : JSON.stringify(body);
      return el("li", {}, el("strong", {}, role.toLowerCase()), " ", expandable(text, 300));
    });
    parts.push(el("details", {}, el("summary", {}, `Conversation ${session.harness}/${session.session}: ${messages.length} messages`),
      el("ul", {}, messages)));
  }
  into.replaceChildren(...parts);
}

class Timeline {
  constructor(list) {
    this.list = list;
    this.text = null;
    // How deep in sub-agents the events are (between task-started and
    // task-finished); their steps are indented.
    this.depth = 0;
  }

  step(kind, cls, ...parts) {
    const depth = Math.min(this.depth, 4);
    const classes = depth ? `${cls} nested nested-${depth}` : cls;
    const item = el("li", { class: classes, "data-kind": kind }, el("div", { class: "step" }, el("span", { class: "kind" }, kind), ...parts));
    this.list.append(item);
    return item;
  }

  closeText() {
    this.text = null;
  }

  add(event) {
    switch (event.type) {
      case "run-started":
        return this.step("started", "ok", el("span", {}, event.agent));
      case "run-finished":
        this.closeText();
        return this.step("finished", event.ok ? "ok" : "fail", el("span", { class: "dur" }, duration(event.duration_ms)));
      case "sandbox":
        return this.step("sandbox", "ok", el("span", {}, `${event.action} ${event.id}`),
          el("span", { class: "detail" }, `${event.connector}; ${event.detail}`));
      case "operation": {
        // A file looked for and not there is how agents ask (AGENTS.md,
        // a cache): marked, but not as a failure.
        const error = event.error;
        const missing = error && error.kind === "not-found";
        const cls = !error ? "ok op" : missing ? "miss op" : "fail op";
        return this.step(event.op, cls, el("span", { class: "target" }, expandable(event.target)),
          el("span", { class: "dur" }, duration(event.duration_ms)),
          error ? el("span", { class: missing ? "detail" : "error-text" }, `${error.kind}: ${error.message}`)
            : el("span", { class: "detail" }, event.detail || ""));
      }
      case "log": {
        const bad = event.level === "error";
        return this.step("log", bad ? "fail" : "", el("span", { class: "detail" }, `${event.source} ${event.level}`),
          el("span", { class: "target" }, expandable(event.message, 400)));
      }
      case "model-text": {
        if (!this.text) {
          const item = this.step("model", "model");
          this.text = el("p", { class: "model-text" });
          item.append(this.text);
        }
        this.text.append(event.text);
        return;
      }
      case "model-turn": {
        const parts = [el("span", {}, `turn ${event.turn} · ${event.model}`), el("span", { class: "dur" }, duration(event.duration_ms)),
          el("span", { class: "detail" }, `${event.input_tokens} tokens in, ${event.output_tokens} out, ${event.tool_calls} tool call(s)`)];
        if (this.text) this.text.parentElement.querySelector(".step").append(...parts);
        else this.step("model", "model", ...parts);
        this.closeText();
        return;
      }
      case "tool-call": {
        this.closeText();
        const item = this.step("tool", event.is_error ? "fail" : "ok", el("strong", {}, event.tool),
          el("span", { class: "target" }, expandable(event.arguments)), el("span", { class: "dur" }, duration(event.duration_ms)),
          el("span", { class: event.is_error ? "error-text" : "detail" }, `${event.is_error ? "failed, " : ""}${event.result_bytes} B back`));
        if (event.result) {
          const cut = event.result.length < event.result_bytes ? " (its start)" : "";
          item.append(el("div", { class: "tool-result" }, el("span", { class: "detail" }, `result${cut}: `), expandable(event.result, 120)));
        }
        return item;
      }
      case "task-started": {
        this.closeText();
        const item = this.step("task", "model", el("strong", {}, event.agent), el("span", { class: "target" }, expandable(event.description || "")),
          el("span", { class: "detail" }, `sub-agent ${event.task} · ${event.model}`));
        this.depth += 1;
        return item;
      }
      case "task-finished":
        this.closeText();
        this.depth = Math.max(0, this.depth - 1);
        return this.step("task end", event.ok ? "ok" : "fail", el("span", {}, `${event.task} ${event.ok ? "answered" : "failed"}`),
          el("span", { class: "dur" }, duration(event.duration_ms)), el("span", { class: "detail" }, `${event.turns} turn(s)`));
      default:
        return this.step(event.type || "event", "", el("span", { class: "target" }, expandable(JSON.stringify(event))));
    }
  }
}

// ---- Agents ----------------------------------------------------------------

async function agentsPage() {
  let listed;
  try {
    listed = await api("/agents");
  } catch (err) {
    return failed(err, route);
  }
  const cards = listed.agents.map(agentCard);
  show(el("h1", {}, "Agents"),
    ...(cards.length ? cards : [el("p", { class: "muted" }, "No webhook agents: set webhook = true for one in flue.toml.")]));
}

function agentCard(agent) {
  const id = el("input", { name: "id", value: "try-1", size: 14, "aria-label": `Id for ${agent.name}` });
  const payload = el("textarea", { name: "payload", "aria-label": `Payload for ${agent.name}` }, "{}");
  const answer = el("div", { "aria-live": "polite" });
  const auth = needsToken ? ` -H "Authorization: Bearer $FLUE_SERVE_TOKEN"` : "";
  const curl = `curl ${location.origin}/agents/${agent.name}/ID${auth} --json '{}'`;
  const send = async (wait) => {
    let body;
    try {
      body = JSON.stringify(JSON.parse(payload.value || "null"));
    } catch (err) {
      answer.replaceChildren(el("p", { class: "error-text", role: "alert" }, `The payload is not JSON: ${err.message}`));
      return;
    }
    const headers = { "content-type": "application/json" };
    if (!wait) headers["x-webhook"] = "true";
    answer.replaceChildren(el("p", { class: "muted" }, wait ? "Running…" : "Starting…"));
    try {
      const response = await api(`/agents/${encodeURIComponent(agent.name)}/${encodeURIComponent(id.value)}`,
        { method: "POST", headers, body });
      if (!wait) {
        location.hash = `#/runs/${encodeURIComponent(response.runId)}`;
        return;
      }
      answer.replaceChildren(el("p", {}, "Run ", el("a", { href: `#/runs/${encodeURIComponent(response.runId)}` }, response.runId)),
        el("pre", {}, JSON.stringify(response.result, null, 2)));
    } catch (err) {
      if (err instanceof Unauthorized) return login(route);
      answer.replaceChildren(el("p", { class: "error-text", role: "alert" }, String(err.message)));
    }
  };
  return el("section", { class: "agent", "data-agent": agent.name },
    el("h2", {}, agent.name), agent.description ? el("p", {}, agent.description) : null,
    el("p", { class: "muted" }, `sandbox ${agent.sandbox}${agent.sandboxPerId ? ", one per id" : ""}` +
      (agent.deadlineSecs ? `; deadline ${agent.deadlineSecs} s` : "")),
    el("pre", {}, curl),
    el("div", { class: "row" }, el("label", {}, "Id", id)),
    el("label", {}, "Payload (JSON)", payload),
    el("div", { class: "row" },
      el("button", { type: "button", class: "primary", onclick: () => send(false) }, "Start and watch"),
      el("button", { type: "button", onclick: () => send(true) }, "Run and wait")),
    answer);
}

window.addEventListener("hashchange", route);
route();
