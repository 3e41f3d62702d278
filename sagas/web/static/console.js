// The sagactor console: a page over the console's JSON API (/api/...). Plain DOM, no
// framework, nothing loaded from elsewhere. Every text from the store is set with
// textContent or createTextNode, never parsed as HTML.
"use strict";

(function () {
  const CSRF = document.querySelector('meta[name="csrf-token"]').getAttribute("content");
  const POLL_MS = 2000;
  const IN_FLIGHT = ["running", "compensating"];
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (selector) => document.querySelector(selector);

  // -- building DOM safely ----------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = String(value);
      else if (name === "onclick") node.addEventListener("click", value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      node.setAttribute(name, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  }

  function sagaLink(sagaId) {
    return el("a", { href: "#/saga/" + encodeURIComponent(sagaId), class: "saga-link", text: sagaId });
  }

  function statusBadge(status, reason) {
    return el("span", { class: "status status-" + status, "data-status": status, text: status },
      reason ? el("span", { class: "reason", text: " " + reason }) : null);
  }

  function when(seconds, withMillis) {
    if (seconds === null || seconds === undefined) return "";
    const text = new Date(seconds * 1000).toISOString().replace("T", " ");
    return withMillis ? text.slice(0, 23) : text.slice(0, 19);
  }

  function ago(seconds) {
    if (seconds < 90) return seconds.toFixed(1) + " s";
    if (seconds < 5400) return (seconds / 60).toFixed(1) + " min";
    if (seconds < 172800) return (seconds / 3600).toFixed(1) + " h";
    return (seconds / 86400).toFixed(1) + " days";
  }

  // -- the API -----------------------------------------------------------------------------
  async function api(path, options) {
    const init = { credentials: "same-origin", headers: { Accept: "application/json" } };
    if (options && options.body !== undefined) {
      init.method = "POST";
      init.headers["Content-Type"] = "application/json";
      init.headers["X-CSRF-Token"] = CSRF;
      init.body = JSON.stringify(options.body);
    }
    const response = await fetch(path, init);
    if (response.status === 401) {
      window.location.assign("/login?next=" + encodeURIComponent("/" + window.location.hash));
      throw new Error("log in first");
    }
    let document_ = null;
    try {
      document_ = await response.json();
    } catch (err) {
      throw new Error(path + ": HTTP " + response.status);
    }
    if (!response.ok) {
      throw new Error((document_ && document_.error) || path + ": HTTP " + response.status);
    }
    return { body: document_, headers: response.headers };
  }

  function showProblem(message) {
    const box = $("#problem");
    if (!message) {
      box.hidden = true;
      return;
    }
    box.textContent = message;
    box.hidden = false;
  }

  let toastTimer = null;
  function toast(message) {
    const box = $("#toast");
    box.textContent = message;
    box.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { box.hidden = true; }, 8000);
  }

  function stamp() {
    $("#updated").textContent = "updated " + new Date().toISOString().slice(11, 19) + " UTC";
  }

  // -- routing -----------------------------------------------------------------------------
  // #/?status=..  the list; #/saga/ID  one saga; #/flows #/stuck #/members #/dead-letters
  function route() {
    const hash = window.location.hash || "#/";
    const [path, query] = hash.slice(1).split("?");
    const params = new URLSearchParams(query || "");
    if (path.startsWith("/saga/")) return { view: "saga", id: decodeURIComponent(path.slice(6)), params };
    const views = { "/flows": "flows", "/stuck": "stuck", "/members": "members", "/dead-letters": "dead" };
    return { view: views[path] || "list", params };
  }

  let current = route();

  function show(view) {
    for (const section of document.querySelectorAll("main > section")) {
      section.hidden = section.getAttribute("data-view") !== view;
    }
    for (const link of document.querySelectorAll("nav a")) {
      link.classList.toggle("active", link.getAttribute("data-nav") === view);
    }
  }

  async function render() {
    current = route();
    show(current.view);
    try {
      if (current.view === "list") await renderList(true);
      else if (current.view === "saga") await renderSaga(current.id);
      else if (current.view === "flows") await renderFlows();
      else if (current.view === "stuck") await renderStuck();
      else if (current.view === "members") await renderMembers();
      else if (current.view === "dead") await renderDead();
      showProblem(null);
      stamp();
    } catch (err) {
      showProblem(err.message);
    }
  }

  // -- the list ----------------------------------------------------------------------------
  const FILTERS = ["flow", "status", "reason", "since", "until", "prefix", "limit"];

  function toLocalInput(seconds) {  // a Unix time as a datetime-local value, in UTC
    return seconds ? new Date(Number(seconds) * 1000).toISOString().slice(0, 19) : "";
  }

  function fromLocalInput(value) {  // a datetime-local value, read as UTC
    if (!value) return "";
    const ms = Date.parse(value + (value.length === 16 ? ":00Z" : "Z"));
    return Number.isNaN(ms) ? "" : String(ms / 1000);
  }

  function listQuery(params) {
    const query = new URLSearchParams();
    for (const name of FILTERS) {
      const value = params.get(name);
      if (value) query.set(name, value);
    }
    query.set("offset", params.get("offset") || "0");
    if (!query.get("limit")) query.set("limit", "50");
    return query;
  }

  function fillFilters(params) {
    $("#filter-status").value = params.get("status") || "";
    $("#filter-reason").value = params.get("reason") || "";
    $("#filter-since").value = toLocalInput(params.get("since"));
    $("#filter-until").value = toLocalInput(params.get("until"));
    $("#filter-prefix").value = params.get("prefix") || "";
    $("#filter-limit").value = params.get("limit") || "50";
    const flow = params.get("flow") || "";
    const select = $("#filter-flow");
    if (flow && ![...select.options].some((o) => o.value === flow)) {
      select.appendChild(el("option", { value: flow, text: flow }));
    }
    select.value = flow;
  }

  async function fillFlowChoices() {
    const select = $("#filter-flow");
    const chosen = select.value;
    const { body } = await api("/api/flows");
    const names = [...new Set(body.map((f) => f.flow))].sort();
    clear(select).appendChild(el("option", { value: "", text: "any" }));
    for (const name of names) select.appendChild(el("option", { value: name, text: name }));
    if (chosen && !names.includes(chosen)) select.appendChild(el("option", { value: chosen, text: chosen }));
    select.value = chosen;
  }

  function readFilters() {
    const params = new URLSearchParams();
    const values = {
      flow: $("#filter-flow").value, status: $("#filter-status").value,
      reason: $("#filter-reason").value, since: fromLocalInput($("#filter-since").value),
      until: fromLocalInput($("#filter-until").value), prefix: $("#filter-prefix").value.trim(),
      limit: $("#filter-limit").value,
    };
    for (const [name, value] of Object.entries(values)) if (value) params.set(name, value);
    return params;
  }

  async function renderList(first) {
    const params = current.params;
    if (first) {
      fillFilters(params);
      fillFlowChoices().then(() => fillFilters(params)).catch(() => {});
    }
    const query = listQuery(params);
    const { body, headers } = await api("/api/sagas?" + query.toString());
    const more = headers.get("x-more") === "1";
    const tbody = clear($("#sagas tbody"));
    for (const saga of body) {
      tbody.appendChild(el("tr", { "data-saga-id": saga.saga_id, "data-status": saga.status },
        el("td", {}, sagaLink(saga.saga_id)),
        el("td", { text: saga.flow + " v" + saga.version }),
        el("td", { class: "status-cell" }, statusBadge(saga.status)),
        el("td", { text: saga.reason || "" }),
        el("td", { text: when(saga.started_at) }),
        el("td", { text: when(saga.updated_at) })));
    }
    $("#sagas-empty").hidden = body.length > 0;
    const offset = Number(query.get("offset"));
    const limit = Number(query.get("limit"));
    $("#page-prev").disabled = offset === 0;
    $("#page-next").disabled = !more;
    $("#page-info").textContent = body.length
      ? "sagas " + (offset + 1) + "–" + (offset + body.length) + (more ? " (more)" : "") : "";
    $("#page-prev").onclick = () => go(Math.max(0, offset - limit));
    $("#page-next").onclick = () => go(offset + limit);
  }

  function go(offset) {
    const params = new URLSearchParams(current.params);
    params.set("offset", String(offset));
    window.location.hash = "#/?" + params.toString();
  }

  function filterBody() {
    const body = {};
    for (const name of ["flow", "status", "reason", "since", "until", "prefix"]) {
      const value = current.params.get(name);
      if (value) body[name] = value;
    }
    return body;
  }

  function describeFilter(filter) {
    const parts = Object.entries(filter).map(([k, v]) => k + "=" + v);
    return parts.length ? parts.join(", ") : "no filter: every saga";
  }

  async function bulk(action) {
    const filter = filterBody();
    const preview = await api("/api/sagas/" + action, { body: { filter, dry_run: true, limit: 10000 } });
    const sagas = preview.body.sagas;
    if (!sagas.length) {
      toast("No saga to " + action + " matches (" + describeFilter(filter) + ").");
      return;
    }
    const shown = sagas.slice(0, 15).map((s) => "  " + s.saga_id + " (" + s.status + ")").join("\n");
    const rest = sagas.length > 15 ? "\n  … and " + (sagas.length - 15) + " more" : "";
    const verb = action === "cancel" ? "Cancel" : "Retry";
    if (!window.confirm(verb + " " + sagas.length + " saga" + (sagas.length === 1 ? "" : "s") +
        " matching " + describeFilter(filter) + "?\n\n" + shown + rest)) return;
    const done = await api("/api/sagas/" + action, { body: { saga_ids: sagas.map((s) => s.saga_id), limit: 10000 } });
    let message = action + ": " + done.body.recorded + " request" + (done.body.recorded === 1 ? "" : "s") + " recorded";
    if (done.body.no_owner) {
      message += "; " + done.body.no_owner + " with no live owner: run `saga " +
        (action === "cancel" ? "resume" : "retry ID") + "` to act on them";
    }
    toast(message);
    await renderList(false);
  }

  // -- one saga ----------------------------------------------------------------------------
  let shownSaga = null;

  function fact(list, name, value, title) {
    list.appendChild(el("dt", { text: name }));
    list.appendChild(el("dd", { title: title || null }, value));
  }

  async function renderSaga(sagaId) {
    const [shown, graph] = await Promise.all([
      api("/api/sagas/" + encodeURIComponent(sagaId)),
      api("/api/sagas/" + encodeURIComponent(sagaId) + "/graph"),
    ]);
    const saga = shown.body;
    const diagram = graph.body;
    const first = shownSaga === null || shownSaga.saga_id !== saga.saga_id;
    const changed = first || shownSaga.history.length !== saga.history.length ||
      shownSaga.status !== saga.status;
    shownSaga = saga;
    $("#saga-id").textContent = saga.saga_id;
    clear($("#saga-status")).appendChild(statusBadge(saga.status, saga.reason));
    $("#saga-status").setAttribute("data-status", saga.status);
    const facts = clear($("#saga-facts"));
    fact(facts, "flow", el("a", { href: "#/?flow=" + encodeURIComponent(saga.flow), text: saga.flow + " v" + saga.version }));
    fact(facts, "definition", el("code", { text: saga.definition.slice(0, 12) + "…" }), saga.definition);
    const started = saga.history.length ? saga.history[0].at : null;
    const updated = saga.history.length ? saga.history[saga.history.length - 1].at : null;
    fact(facts, "started", when(started, true) + " UTC");
    fact(facts, "last event", when(updated, true) + " UTC");
    fact(facts, "events", String(saga.history.length));
    const inFlight = IN_FLIGHT.includes(saga.status);
    const driven = $("#saga-driven");
    if (inFlight || saga.status === "failed") {
      driven.textContent = diagram.driven
        ? "A live process drives this saga: it acts on a cancel or retry within a moment."
        : "No live process drives this saga: a cancel or retry is recorded, and acted on once " +
          (saga.status === "failed" ? "`saga retry " + saga.saga_id + "` runs." : "`saga resume` runs.");
      driven.className = "driven " + (diagram.driven ? "yes" : "no");
    } else {
      driven.textContent = "";
      driven.className = "driven";
    }
    $("#cancel-saga").disabled = !inFlight;
    $("#retry-saga").disabled = saga.status !== "failed";
    if (changed) {
      renderDiagram(diagram);
      renderTimeline(saga);
      $("#saga-context").textContent = JSON.stringify(saga.context, null, 2);
    }
  }

  async function actOnSaga(action) {
    const saga = shownSaga;
    if (!saga) return;
    const question = action === "cancel"
      ? "Cancel saga " + saga.saga_id + "?\nBefore its pivot it is rolled back; after it, it carries on."
      : "Retry saga " + saga.saga_id + " where it stopped?";
    if (!window.confirm(question)) return;
    const done = await api("/api/sagas/" + encodeURIComponent(saga.saga_id) + "/" + action, { body: {} });
    $("#saga-note").textContent = done.body.message;
    toast(done.body.message);
    await renderSaga(saga.saga_id);
  }

  const NODE_W = 176, NODE_H = 46, COL_W = 226, ROW_H = 66, PAD = 16;

  function place(node) {
    return { x: PAD + node.column * COL_W, y: PAD + node.row * ROW_H };
  }

  function shorten(text, max) {
    return text.length > max ? text.slice(0, max - 1) + "…" : text;
  }

  function renderDiagram(diagram) {
    const box = clear($("#graph"));
    const problem = $("#graph-problem");
    problem.hidden = !diagram.error;
    problem.textContent = diagram.error ? "The flow's diagram cannot be drawn: " + diagram.error : "";
    $("#mermaid").textContent = diagram.mermaid || "";
    const routeList = clear($("#route"));
    const labels = {};
    for (const node of diagram.nodes) labels[node.id] = node.label;
    for (const state of diagram.route) {
      routeList.appendChild(el("li", { "data-state": state }, labels[state] || state));
    }
    if (!diagram.nodes.length) return;
    const width = PAD * 2 + (diagram.columns - 1) * COL_W + NODE_W;
    const height = PAD * 2 + (diagram.rows - 1) * ROW_H + NODE_H;
    const byId = {};
    for (const node of diagram.nodes) byId[node.id] = node;
    const drawing = svg("svg", { width, height, viewBox: "0 0 " + width + " " + height, role: "img",
      "aria-label": "the flow " + diagram.flow + " with the saga on it" });
    drawing.appendChild(svg("defs", {},
      svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
        svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }))));
    const edges = svg("g", { class: "edges" });
    for (const edge of diagram.edges) {
      const from = byId[edge.source], to = byId[edge.dest];
      if (!from || !to) continue;
      const a = place(from), b = place(to);
      const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x, y2 = b.y + NODE_H / 2;
      const bend = Math.max(30, (x2 - x1) / 2);
      const classes = ["edge"];
      if (edge.taken) classes.push("taken");
      if (edge.fork) classes.push("fork");
      if (edge.trigger) classes.push("trigger-" + edge.trigger);
      edges.appendChild(svg("path", {
        d: "M " + x1 + " " + y1 + " C " + (x1 + bend) + " " + y1 + ", " + (x2 - bend) + " " + y2 + ", " + x2 + " " + y2,
        class: classes.join(" "), "marker-end": "url(#arrow)",
        "data-source": edge.source, "data-dest": edge.dest,
      }, svg("title", {}, edge.source + " → " + edge.dest + ": " + edge.label)));
    }
    drawing.appendChild(edges);
    const nodes = svg("g", { class: "nodes" });
    for (const node of diagram.nodes) {
      const at = place(node);
      const classes = ["node", "kind-" + node.kind];
      if (node.status) classes.push("status-" + node.status);
      if (node.marked) classes.push("marked");
      const lines = node.label.split(": ");
      const head = shorten(lines[0], 26);
      const tail = lines.length > 1 ? shorten(lines.slice(1).join(": "), 28) : "";
      nodes.appendChild(svg("g", {
        class: classes.join(" "), "data-state": node.id, "data-status": node.status || "",
        transform: "translate(" + at.x + " " + at.y + ")",
      },
      svg("title", {}, node.label + (node.status ? " — " + node.status : "") + (node.marked ? " (marked)" : "")),
      svg("rect", { width: NODE_W, height: NODE_H, rx: node.kind === "terminal" ? 23 : 6 }),
      svg("text", { x: NODE_W / 2, y: tail ? 19 : 28, class: "head" }, head),
      tail ? svg("text", { x: NODE_W / 2, y: 35, class: "tail" }, tail) : null));
    }
    drawing.appendChild(nodes);
    box.appendChild(drawing);
  }

  function renderTimeline(saga) {
    const tbody = clear($("#timeline tbody"));
    const seqOf = {};
    for (const event of saga.history) seqOf[event.event_id] = event.seq;
    for (const event of saga.history) {
      let cause = "";
      if (event.causation_id && seqOf[event.causation_id] !== undefined) {
        cause = el("a", { href: "#ev-" + event.seq, class: "cause", "data-seq": seqOf[event.causation_id],
          onclick: (e) => {
            e.preventDefault();
            const row = document.getElementById("ev-" + seqOf[event.causation_id]);
            if (row) { row.scrollIntoView({ block: "center" }); row.classList.add("flash"); setTimeout(() => row.classList.remove("flash"), 1200); }
          },
          text: "#" + seqOf[event.causation_id] });
      } else if (event.causation_id) {
        cause = el("code", { text: event.causation_id });
      }
      const data = el("td", { class: "data" });
      if (event.data && typeof event.data.error === "string") {
        data.appendChild(el("pre", { class: "error", text: event.data.error }));
      }
      if (event.data && Object.keys(event.data).length) {
        data.appendChild(el("pre", { text: JSON.stringify(event.data, null, 2) }));
      }
      const kind = event.type.split(".")[1] || "";
      tbody.appendChild(el("tr", { id: "ev-" + event.seq, "data-seq": event.seq, "data-type": event.type,
        class: "ev ev-" + kind + " ev-" + event.type.replace(".", "-"), title: "event " + event.event_id },
        el("td", { text: String(event.seq) }),
        el("td", { text: when(event.at, true) }),
        el("td", { class: "type", text: event.type }),
        el("td", { text: event.step || "" }),
        el("td", { text: event.attempt === null ? "" : String(event.attempt) }),
        el("td", {}, cause),
        data));
    }
  }

  // -- flows, stuck, members, dead letters ---------------------------------------------------
  async function renderFlows() {
    const { body } = await api("/api/flows");
    const tbody = clear($("#flows tbody"));
    for (const flow of body) {
      const statuses = Object.entries(flow.statuses).map(([s, n]) => s + " " + n).join(", ");
      tbody.appendChild(el("tr", { "data-definition": flow.definition },
        el("td", {}, el("a", { href: "#/?flow=" + encodeURIComponent(flow.flow), text: flow.flow })),
        el("td", { text: "v" + flow.version }),
        el("td", {}, el("code", { text: flow.definition })),
        el("td", { text: String(flow.sagas) }),
        el("td", { text: statuses }),
        el("td", { text: when(flow.last_started_at) }),
        el("td", {}, el("button", { type: "button", text: "text", onclick: async () => {
          const { body: found } = await api("/api/definitions/" + flow.definition);
          const pre = $("#flow-text");
          pre.textContent = found.text;
          pre.hidden = false;
        } }))));
    }
  }

  async function renderStuck() {
    const after = $("#stuck-after").value || "300";
    const { body } = await api("/api/stuck?after=" + encodeURIComponent(after));
    const violations = clear($("#stuck-violations tbody"));
    for (const v of body.violations) {
      violations.appendChild(el("tr", {}, el("td", {}, sagaLink(v.saga_id)),
        el("td", { text: v.seq === null ? "" : String(v.seq) }), el("td", { text: v.rule }),
        el("td", { text: v.message })));
    }
    const stalled = clear($("#stuck-stalled tbody"));
    for (const s of body.stalled) {
      stalled.appendChild(el("tr", {}, el("td", {}, sagaLink(s.saga_id)),
        el("td", { text: s.flow + " v" + s.version }), el("td", {}, statusBadge(s.status)),
        el("td", { text: ago(s.idle) }), el("td", { text: s.driven ? "yes" : "no: run saga resume" })));
    }
  }

  async function renderMembers() {
    const { body } = await api("/api/members");
    $("#members-summary").textContent = body.members.length
      ? body.members.filter((m) => m.alive).length + " alive of " + body.members.length +
        " members; " + body.partitions + " partitions, " + body.unheld_partitions.length + " unheld"
      : "No members (a SQLite store usually has none: each saga's own process drives it).";
    const tbody = clear($("#members tbody"));
    for (const m of body.members) {
      tbody.appendChild(el("tr", {}, el("td", { text: m.member }), el("td", { text: m.host || "" }),
        el("td", { text: m.pid === null ? "" : String(m.pid) }), el("td", { text: m.alive ? "yes" : "no" }),
        el("td", { text: m.seen_ago === null ? "" : ago(m.seen_ago) }),
        el("td", { text: String(m.partitions.length) }), el("td", { text: m.runs.join(", ") }),
        el("td", { text: String(m.undriven) })));
    }
    const undriven = clear($("#undriven tbody"));
    for (const s of body.undriven) {
      undriven.appendChild(el("tr", {}, el("td", {}, sagaLink(s.saga_id)), el("td", { text: s.flow || "" }),
        el("td", { text: String(s.partition) }), el("td", { text: s.why }), el("td", { text: s.member || "" })));
    }
  }

  let deadShown = [];

  async function renderDead() {
    const info = await api("/api/info");
    const note = $("#dead-note");
    const tbody = clear($("#dead tbody"));
    if (!info.body.dead_letters) {
      note.textContent = "No broker given: start saga ui with --broker URL (SAGA_BROKER) to see the dead letters.";
      $("#dead-replay").disabled = $("#dead-purge").disabled = true;
      return;
    }
    const { body } = await api("/api/dead-letters");
    deadShown = body.dead_letters;
    note.textContent = body.dead_letters.length + " dead letter" + (body.dead_letters.length === 1 ? "" : "s") +
      " on " + body.broker + ".";
    $("#dead-replay").disabled = $("#dead-purge").disabled = !body.dead_letters.length;
    for (const d of body.dead_letters) {
      tbody.appendChild(el("tr", { "data-entry": d.entry },
        el("td", {}, el("input", { type: "checkbox", class: "pick", "data-entry": d.entry, "aria-label": "select " + d.entry })),
        el("td", { text: d.entry }), el("td", { text: d.service }),
        el("td", {}, d.saga_id ? sagaLink(String(d.saga_id)) : ""), el("td", { text: d.step || "" }),
        el("td", { text: d.phase || "" }), el("td", { text: d.attempt === null ? "" : String(d.attempt) }),
        el("td", { text: d.deliveries === null ? "" : String(d.deliveries) }), el("td", { text: d.reason }),
        el("td", { text: d.worker })));
    }
  }

  async function actOnDead(action) {
    const ids = [...document.querySelectorAll("#dead input.pick:checked")].map((i) => i.getAttribute("data-entry"));
    if (!ids.length) {
      toast("Select the dead letters to " + action + " first.");
      return;
    }
    if (!window.confirm((action === "replay" ? "Replay " : "Purge ") + ids.length + " dead letter" +
        (ids.length === 1 ? "" : "s") + "?\n\n" + ids.slice(0, 15).join("\n"))) return;
    const { body } = await api("/api/dead-letters/" + action, { body: { ids } });
    toast(action + ": " + body.dead_letters.length + " done" + (body.skipped.length ? ", " + body.skipped.length + " skipped" : ""));
    await renderDead();
  }

  // -- wiring ------------------------------------------------------------------------------
  function guarded(fn) {
    return async (...args) => {
      try {
        await fn(...args);
        showProblem(null);
      } catch (err) {
        showProblem(err.message);
      }
    };
  }

  $("#filters").addEventListener("submit", (event) => {
    event.preventDefault();
    window.location.hash = "#/?" + readFilters().toString();
  });
  $("#filter-clear").addEventListener("click", () => { window.location.hash = "#/"; });
  for (const id of ["#filter-flow", "#filter-status", "#filter-reason", "#filter-limit"]) {
    $(id).addEventListener("change", () => { window.location.hash = "#/?" + readFilters().toString(); });
  }
  $("#bulk-cancel").addEventListener("click", guarded(() => bulk("cancel")));
  $("#bulk-retry").addEventListener("click", guarded(() => bulk("retry")));
  $("#cancel-saga").addEventListener("click", guarded(() => actOnSaga("cancel")));
  $("#retry-saga").addEventListener("click", guarded(() => actOnSaga("retry")));
  $("#stuck-form").addEventListener("submit", (event) => { event.preventDefault(); guarded(renderStuck)(); });
  $("#dead-replay").addEventListener("click", guarded(() => actOnDead("replay")));
  $("#dead-purge").addEventListener("click", guarded(() => actOnDead("purge")));
  window.addEventListener("hashchange", () => {
    shownSaga = null;
    $("#saga-note").textContent = "";
    render();
  });

  let polling = false;
  async function poll() {
    if (polling || document.hidden || !$("#live").checked) return;
    polling = true;
    try {
      if (current.view === "list") await renderList(false);
      else if (current.view === "saga") await renderSaga(current.id);
      else if (current.view === "members") await renderMembers();
      else return;  // the stuck sagas (an audit of each in flight) refresh when asked
      showProblem(null);
      stamp();
    } catch (err) {
      showProblem(err.message);
    } finally {
      polling = false;
    }
  }
  setInterval(poll, POLL_MS);

  api("/api/info").then(({ body }) => {
    $("#store-url").textContent = body.store;
  }).catch((err) => showProblem(err.message));
  render();
})();
