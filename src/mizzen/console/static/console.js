// The Mizzen console's front end: plain DOM code, no framework. Data comes from /console/api/* (Prometheus,
// Jaeger) and the control plane's own API (/apis/*, /debug/*), all authenticated by the session cookie.
"use strict";

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return e;
};

async function api(path, options = {}) {
  const r = await fetch(path, { credentials: "same-origin", ...options });
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (!r.ok) {
    if (r.status === 401) showLoggedOut();
    throw new Error((body && body.error) || `${r.status} ${r.statusText}`);
  }
  return body;
}

function showLoggedOut() {
  document.body.replaceChildren(el("p", { id: "logged-out" },
    "Not logged in (or the session expired): run `mizzen dashboard` to open the console."));
}

const ns = () => $("#namespace").value.trim();
const fmt = (v, digits = 2) => (v == null || Number.isNaN(v) ? "-" : Number(v).toFixed(digits));
const pct = (v) => (v == null ? "-" : `${(100 * v).toFixed(1)}%`);

function health(success) {
  if (success == null) return ["n/a", "health-na"];
  if (success >= 0.999) return ["healthy", "health-ok"];
  if (success >= 0.8) return ["degraded", "health-degraded"];
  return ["failure", "health-failure"];
}

// --- pages ------------------------------------------------------------------------------------------------
const pages = {};
let current = null;
let timer = null;

function show(name) {
  if (!pages[name]) name = "graph";
  current = name;
  document.querySelectorAll(".page").forEach((p) => p.classList.toggle("active", p.id === `page-${name}`));
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === name));
  refresh();
}

// Every refresh supersedes the ones still under way (a selection changed, the page switched): only the
// latest may render (an answer that comes late for an earlier selection is dropped) and schedule the next
// one (so there is only ever one periodic refresh).
let generation = 0;

async function refresh() {
  clearTimeout(timer);
  const mine = ++generation;
  const latest = () => mine === generation;
  try { await pages[current](latest); } catch (e) { console.error(e); }
  if (!latest()) return;
  if (current === "graph" || current === "services" || current === "workloads" || current === "proxies") {
    timer = setTimeout(refresh, 5000);
  }
}

// --- graph ------------------------------------------------------------------------------------------------
let cy = null;

function edgeLabel(e) {
  const lock = e.mtls ? "\u{1F512} " : "";
  const p95 = e.p95 == null ? "" : ` ${fmt(e.p95, 0)}ms`;
  return `${lock}${fmt(e.rate)}rps ${e.percent.toFixed(0)}%${p95}`;
}

let shownView = null;   // the view the graph was laid out for

// The graph and its edge table are replaced together, from one answer: they never show different data.
pages.graph = async function (latest = () => true) {
  const view = $("#graph-view").value;
  const msg = $("#graph-message");
  let g;
  try {
    g = await api(`/console/api/graph?view=${encodeURIComponent(view)}&namespace=${encodeURIComponent(ns())}` +
                  `&window=${encodeURIComponent($("#graph-window").value)}`);
  } catch (e) {
    if (latest()) msg.textContent = e.message;
    return;
  }
  if (!latest()) return;
  msg.textContent = g.edges.length ? "" : "No traffic in this window: send some requests.";
  const elements = [];
  for (const n of g.nodes) {
    const data = { id: n.id, label: n.label, kind: n.kind };
    if (n.parent) data.parent = n.parent;
    elements.push({ data });
  }
  for (const e of g.edges) {
    const state = e.errorRate >= 0.1 ? "failure" : e.errorRate > 0 ? "degraded" : "ok";
    elements.push({ data: { id: e.id, source: e.source, target: e.target, label: edgeLabel(e), state,
                            mtls: e.mtls ? "yes" : "no", percent: e.percent } });
  }
  if (!cy) {
    cy = cytoscape({
      container: $("#cy"),
      style: [
        { selector: "node", style: { label: "data(label)", "font-size": 11, "text-valign": "bottom",
          "background-color": "#4a90d9", width: 26, height: 26 } },
        { selector: "node[kind = 'service']", style: { shape: "triangle", "background-color": "#7b61ff" } },
        { selector: "node[kind = 'unknown']", style: { "background-color": "#999" } },
        { selector: "node[kind = 'box']", style: { "background-color": "#eef4fb", "border-color": "#9db6d3",
          "border-width": 1, "text-valign": "top", shape: "round-rectangle" } },
        { selector: "edge", style: { width: 2, "curve-style": "bezier", "target-arrow-shape": "triangle",
          label: "data(label)", "font-size": 9, "line-color": "#2e7d32", "target-arrow-color": "#2e7d32",
          "text-background-color": "#fff", "text-background-opacity": 0.8 } },
        { selector: "edge[state = 'degraded']", style: { "line-color": "#ef6c00", "target-arrow-color": "#ef6c00" } },
        { selector: "edge[state = 'failure']", style: { "line-color": "#c62828", "target-arrow-color": "#c62828" } },
      ],
    });
    window.mizzenGraph = cy;   // for tests and the curious
  }
  const ids = new Set(elements.map((x) => x.data.id));
  const known = new Set(cy.elements().map((x) => x.id()));
  const same = view === shownView && ids.size === known.size && [...ids].every((i) => known.has(i));
  shownView = view;
  if (same) {
    for (const x of elements) cy.getElementById(x.data.id).data(x.data);
  } else {
    cy.elements().remove();
    cy.add(elements);
    cy.layout({ name: "breadthfirst", directed: true, spacingFactor: 1.2, padding: 20 }).run();
  }
  $("#graph-summary").textContent = `${g.nodes.length} nodes, ${g.edges.length} edges`;
  const names = Object.fromEntries(g.nodes.map((n) => [n.id, `${n.label}${n.namespace ? " (" + n.namespace + ")" : ""}`]));
  $("#graph-edges tbody").replaceChildren(...g.edges.map((e) => el("tr", { "data-edge": e.id },
    el("td", {}, names[e.source] || e.source), el("td", {}, names[e.target] || e.target), el("td", {}, fmt(e.rate)),
    el("td", { class: "share" }, `${e.percent.toFixed(1)}%`), el("td", {}, pct(e.errorRate)),
    el("td", {}, fmt(e.p95, 1)), el("td", {}, e.mtls ? "\u{1F512}" : "-"))));
};

// --- charts -----------------------------------------------------------------------------------------------
function chart(title, points, unit) {
  const w = 300, h = 110, pad = 28;
  const box = el("div", { class: "chart" }, el("h4", {}, title));
  const svgNS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("width", w); svg.setAttribute("height", h);
  const vals = points.map((p) => p[1]).filter((v) => Number.isFinite(v));
  if (!points.length || !vals.length) { box.append(el("div", {}, "no data")); return box; }
  const t0 = points[0][0], t1 = points[points.length - 1][0] || t0 + 1;
  const max = Math.max(...vals) || 1;
  const xy = (p) => [pad + ((p[0] - t0) / Math.max(1, t1 - t0)) * (w - pad - 4), h - 14 - (p[1] / max) * (h - 24)];
  const path = document.createElementNS(svgNS, "polyline");
  path.setAttribute("points", points.filter((p) => Number.isFinite(p[1])).map((p) => xy(p).join(",")).join(" "));
  path.setAttribute("fill", "none"); path.setAttribute("stroke", "#4a90d9"); path.setAttribute("stroke-width", "2");
  const label = document.createElementNS(svgNS, "text");
  label.setAttribute("x", 2); label.setAttribute("y", 12); label.setAttribute("font-size", "10");
  label.textContent = `max ${fmt(max)}${unit}`;
  svg.append(path, label);
  box.append(svg);
  return box;
}

async function charts(target, kind, namespace, name, direction) {
  const q = `kind=${kind}&namespace=${encodeURIComponent(namespace)}&name=${encodeURIComponent(name)}&direction=${direction}`;
  target.replaceChildren(el("h3", {}, `${direction} of ${kind} ${name}`));
  try {
    const s = await api(`/console/api/metrics?${q}`);
    target.append(el("div", { class: "charts" }, chart("Request rate", s.rate, " rps"),
      chart("Success rate", s.success, ""), chart("p50 latency", s.p50, " ms"),
      chart("p90 latency", s.p90, " ms"), chart("p99 latency", s.p99, " ms")));
  } catch (e) { target.append(el("div", { class: "message" }, e.message)); }
}

// --- services, workloads ----------------------------------------------------------------------------------
async function healthByWorkload() {
  try { return await api(`/console/api/health?namespace=${encodeURIComponent(ns())}`); } catch (e) { return {}; }
}

pages.services = async function (latest = () => true) {
  const [svcs, h] = await Promise.all([api(`/apis/objects?kind=Service&namespace=${encodeURIComponent(ns())}`),
                                       healthByWorkload()]);
  if (!latest()) return;
  const rows = [];
  for (const s of svcs.items) {
    const name = s.metadata.name, namespace = s.metadata.namespace;
    const sel = (s.spec && s.spec.selector) || {};
    // a service's health: the workloads it selects (by app label, the Bookinfo convention)
    let rate = 0, errors = 0, seen = false;
    for (const [key, v] of Object.entries(h)) {
      const [wns, wl] = key.split("/");
      if (wns === namespace && sel.app && wl.startsWith(sel.app)) {
        seen = true; rate += v.rate; if (v.success != null) errors += v.rate * (1 - v.success);
      }
    }
    const success = seen && rate > 0 ? 1 - errors / rate : null;
    const [hl, hc] = health(success);
    const ports = ((s.spec && s.spec.ports) || []).map((p) => `${p.name || ""} ${p.port}`).join(", ");
    rows.push(el("tr", { class: "clickable", onclick: () => charts($("#service-detail"), "service", namespace, name, "inbound") },
      el("td", {}, name), el("td", {}, namespace), el("td", {}, ports), el("td", {}, seen ? fmt(rate) : "-"),
      el("td", {}, pct(success)), el("td", { class: hc }, hl)));
  }
  $("#services-table tbody").replaceChildren(...rows);
};

pages.workloads = async function (latest = () => true) {
  let pods = [];
  try { pods = (await api("/apis/pods")).items || []; } catch (e) { pods = []; }
  const h = await healthByWorkload();
  if (!latest()) return;
  const rows = [];
  for (const item of pods) {
    const p = item.object || item;
    const meta = p.metadata || {};
    if (ns() && meta.namespace !== ns()) continue;
    const st = p.status || {};
    const cs = st.containerStatuses || [];
    const ready = `${cs.filter((c) => c.ready).length}/${cs.length}`;
    const restarts = cs.reduce((a, c) => a + (c.restartCount || 0), 0);
    const wl = (meta.labels && meta.labels.app && meta.labels.version) ? `${meta.labels.app}-${meta.labels.version}` : meta.name;
    const hv = h[`${meta.namespace}/${wl}`];
    const [hl, hc] = health(hv ? hv.success : null);
    rows.push(el("tr", { class: "clickable", onclick: () => charts($("#workload-detail"), "workload", meta.namespace, wl, "inbound") },
      el("td", {}, meta.name), el("td", {}, meta.namespace), el("td", {}, st.phase || ""), el("td", {}, ready),
      el("td", {}, restarts), el("td", {}, hv ? fmt(hv.rate) : "-"), el("td", {}, pct(hv ? hv.success : null)),
      el("td", { class: hc }, hl)));
  }
  $("#workloads-table tbody").replaceChildren(...rows);
};

// --- config -----------------------------------------------------------------------------------------------
function toYaml(v, indent = "") {
  if (v === null || v === undefined) return "null";
  if (Array.isArray(v)) {
    if (!v.length) return "[]";
    return v.map((x) => {
      const inner = toYaml(x, indent + "  ");
      return `\n${indent}- ${typeof x === "object" && x !== null ? inner.trimStart() : inner}`;
    }).join("");
  }
  if (typeof v === "object") {
    const keys = Object.keys(v);
    if (!keys.length) return "{}";
    return keys.map((k) => {
      const x = v[k];
      const inner = toYaml(x, indent + "  ");
      const block = typeof x === "object" && x !== null && (Array.isArray(x) ? x.length : Object.keys(x).length);
      return `\n${indent}${k}:${block ? inner : " " + inner}`;
    }).join("");
  }
  if (typeof v === "string") return /^[\w./:@-]*$/.test(v) && v !== "" && !/^(true|false|null|[0-9.]+)$/.test(v) ? v : JSON.stringify(v);
  return String(v);
}

pages.config = async function (latest = () => true) {
  const q = ns() ? `?namespace=${encodeURIComponent(ns())}` : "";
  const [objs, analysis] = await Promise.all([api(`/apis/objects${q}`), api(`/debug/analyze${q}`)]);
  if (!latest()) return;
  const findings = {};
  for (const m of analysis.messages || []) {
    const key = `${m.kind}/${m.namespace}/${m.name}`;
    (findings[key] = findings[key] || []).push(m);
  }
  const rows = [];
  for (const o of objs.items) {
    if (!o.apiVersion || !/istio\.io/.test(o.apiVersion)) continue;
    const key = `${o.kind}/${o.metadata.namespace}/${o.metadata.name}`;
    const f = findings[key] || [];
    const cell = el("td", { class: "findings" }, ...(f.length ? f.map((m) =>
      el("div", { class: `finding-${m.level || m.severity || "Warning"}` },
        m.message.startsWith(`[${m.code}]`) ? m.message : `[${m.code}] ${m.message}`)) : ["\u2713"]));
    rows.push(el("tr", { class: "clickable", "data-object": key, onclick: () => { $("#config-yaml").textContent = toYaml(o).trimStart(); } },
      el("td", {}, o.kind), el("td", {}, o.metadata.name), el("td", {}, o.metadata.namespace), cell));
  }
  $("#config-table tbody").replaceChildren(...rows);
};

// --- proxies ----------------------------------------------------------------------------------------------
pages.proxies = async function (latest = () => true) {
  const sync = await api("/debug/syncz");
  if (!latest()) return;
  const cell = (t) => {
    if (!t) return el("td", {}, "-");
    if (t.nack) return el("td", { class: "health-failure", title: t.nack.message || "" }, "NACKED");
    return el("td", { class: t.status === "SYNCED" ? "health-ok" : "health-degraded" }, t.status);
  };
  $("#proxies-table tbody").replaceChildren(...sync.map((p) => {
    const t = p.types || {};
    return el("tr", {}, el("td", {}, p.proxy), cell(t.CDS), cell(t.LDS), cell(t.EDS), cell(t.RDS));
  }));
  const sel = $("#sim-proxy");
  if (!sel.options.length) sel.replaceChildren(...sync.map((p) => el("option", { value: p.proxy }, p.proxy)));
};

// --- traces -----------------------------------------------------------------------------------------------
pages.traces = async function () {
  const sel = $("#trace-service");
  if (sel.options.length) return;
  try {
    const s = await api("/console/api/services");
    sel.replaceChildren(...s.services.map((x) => el("option", { value: x }, x)));
    $("#traces-message").textContent = "";
  } catch (e) { $("#traces-message").textContent = e.message; }
};

function spanTree(t) {
  const box = el("div", { class: "trace" }, el("h3", {}, `Trace ${t.traceID} (${fmt(t.duration_us / 1000, 1)} ms)`));
  const depth = {};
  for (const s of t.spans) depth[s.id] = s.parent && depth[s.parent] != null ? depth[s.parent] + 1 : 0;
  const total = Math.max(1, t.duration_us);
  for (const s of t.spans) {
    const bar = el("div", { class: `span-bar${s.error ? " error" : ""}` });
    bar.style.left = `${(100 * s.start_us) / total}%`;
    bar.style.width = `${Math.max(0.5, (100 * s.duration_us) / total)}%`;
    const name = el("div", { class: "span-name" }, `${"\u00a0\u00a0".repeat(depth[s.id])}${s.service}: ${s.operation}`);
    box.append(el("div", { class: "span-row", "data-span": s.id, "data-service": s.service }, name,
      el("div", { class: "span-bar-wrap" }, bar), el("span", {}, ` ${fmt(s.duration_us / 1000, 1)} ms`)));
  }
  return box;
}

async function findTraces() {
  const svc = $("#trace-service").value;
  if (!svc) return;
  try {
    const r = await api(`/console/api/traces?service=${encodeURIComponent(svc)}&limit=20`);
    $("#traces-table tbody").replaceChildren(...r.traces.map((t) => el("tr", { class: "clickable", "data-trace": t.traceID,
      onclick: () => $("#trace-detail").replaceChildren(spanTree(t)) },
      el("td", {}, t.traceID.slice(0, 12)), el("td", {}, t.root), el("td", {}, t.spans.length),
      el("td", {}, fmt(t.duration_us / 1000, 1)))));
    $("#traces-message").textContent = r.traces.length ? "" : "No traces yet for this service.";
  } catch (e) { $("#traces-message").textContent = e.message; }
}

// --- simulate ---------------------------------------------------------------------------------------------
pages.simulate = async function () {
  if (!$("#sim-proxy").options.length) await pages.proxies();
};

async function simulate(ev) {
  ev.preventDefault();
  const body = { proxyID: $("#sim-proxy").value, url: $("#sim-url").value, method: $("#sim-method").value };
  const h = $("#sim-header").value.trim();
  if (h) body.header = [h];
  try {
    const r = await api("/debug/simulate", { method: "POST", headers: { "Content-Type": "application/json" },
                                             body: JSON.stringify(body) });
    $("#sim-result").textContent = JSON.stringify(r, null, 2);
  } catch (e) { $("#sim-result").textContent = e.message; }
}

// --- start ------------------------------------------------------------------------------------------------
async function start() {
  try {
    const st = await api("/console/api/status");
    $("#backend-status").textContent = `Prometheus: ${st.prometheus ? "on" : "off"} · Jaeger: ${st.jaeger ? "on" : "off"}`;
    if (st.hint) $("#backend-status").title = st.hint;
  } catch (e) { return; }
  $("#graph-view").addEventListener("change", refresh);   // laid out anew when its answer comes
  $("#graph-window").addEventListener("change", refresh);
  $("#namespace").addEventListener("change", refresh);
  $("#trace-find").addEventListener("click", findTraces);
  $("#simulate-form").addEventListener("submit", simulate);
  $("#logout").addEventListener("click", async () => {
    await fetch("/console/logout", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" });
    showLoggedOut();
  });
  window.addEventListener("hashchange", () => show(location.hash.slice(1)));
  show(location.hash.slice(1) || "graph");
}

start();
