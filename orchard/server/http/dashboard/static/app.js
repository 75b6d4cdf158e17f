/* Orchard dashboard: draws each page from the server's JSON (/ui/api/...), keeps it live by
   polling, and sends writes with the session's CSRF token. No framework, no outside asset. */
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const MAIN = document.getElementById("main");
const STATUS = document.getElementById("status");
const POLL_MS = 2000;
let cleanups = [];

/* -- DOM helpers ------------------------------------------------------------------------ */

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function link(href, text, attrs) {
  return h("a", { href, onclick: (e) => { if (!e.ctrlKey && !e.metaKey) { e.preventDefault(); go(href); } }, ...attrs }, text);
}

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function table(caption, columns, rows, empty) {
  return h("table", {},
    h("caption", { class: "sr-only" }, caption),
    h("thead", {}, h("tr", {}, columns.map(([label]) => h("th", { scope: "col" }, label)))),
    h("tbody", {}, rows.length
      ? rows.map((row) => h("tr", {}, columns.map(([, cell]) => h("td", {}, cell(row)))))
      : h("tr", {}, h("td", { class: "empty", colspan: columns.length }, empty))));
}

/* Replace a section's content only when its data changed (keeps focus and scroll). */
function update(section, data, draw) {
  const key = JSON.stringify(data);
  if (section.dataset.last === key) return;
  section.dataset.last = key;
  section.replaceChildren(...[draw(data)].flat());
}

function badge(text, kind) { return h("span", { class: `badge ${kind || ""}` }, text); }

function since(seconds) {
  if (!seconds) return "";
  const at = new Date(seconds * 1000);
  return h("time", { datetime: at.toISOString(), title: at.toLocaleString() }, at.toLocaleTimeString());
}

/* -- the API -------------------------------------------------------------------------- */

async function answer(response) {
  if (response.status === 401) { location.assign("/"); throw new Error("signed out"); }
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw Object.assign(new Error(body.error || "failed"), { body, status: response.status });
  return body;
}

function getJSON(url) {
  return fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" }).then(answer);
}

function post(url, data) {
  return fetch(url, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": CSRF },
    body: JSON.stringify(data || {}),
  });
}

function say(text) { if (STATUS.textContent !== text) STATUS.textContent = text; }

/* Load now and every POLL_MS while the page is shown; errors draw once, in the page. */
function live(load) {
  let stopped = false;
  const tick = async () => {
    if (stopped || document.hidden) return;
    try { await load(); say(""); } catch (e) { if (e.status) { failed(e); stopped = true; } else say(`Not updated: ${e.message}`); }
  };
  tick();
  const timer = setInterval(tick, POLL_MS);
  cleanups.push(() => { stopped = true; clearInterval(timer); });
}

function failed(error) {
  MAIN.replaceChildren(h("h1", {}, error.status === 404 ? "Not found" : "Error"),
    h("p", { class: "error", role: "alert" }, error.message), link("/", "Back to compute"));
}

/* -- routing ------------------------------------------------------------------------- */

const ROUTES = [
  [/^\/$/, overviewPage],
  [/^\/ui\/clusters\/([^/]+)$/, clusterPage],
  [/^\/ui\/clusters\/([^/]+)\/nodepools\/([^/]+)$/, nodepoolPage],
  [/^\/ui\/deployments\/([^/]+)$/, deploymentPage],
  [/^\/ui\/models$/, modelsPage],
  [/^\/ui\/models\/([^/]+)\/([^/]+)$/, modelPage],
  [/^\/ui\/models\/([^/]+)\/([^/]+)\/versions\/([^/]+)$/, versionPage],
  [/^\/ui\/(new|edit)\/(cluster|nodepool|deployment)$/, formPage],
];

function go(href) { history.pushState(null, "", href); render(); }

function render() {
  cleanups.forEach((fn) => fn());
  cleanups = [];
  const path = location.pathname;
  for (const [pattern, page] of ROUTES) {
    const match = path.match(pattern);
    if (match) {
      MAIN.replaceChildren();
      page(...match.slice(1).map(decodeURIComponent));
      MAIN.focus();
      return;
    }
  }
  failed({ status: 404, message: `No page at ${path}.` });
}

window.addEventListener("popstate", render);
const enc = encodeURIComponent;

/* -- compute: clusters, nodepools, deployments ----------------------------------------- */

function deploymentState(d) {
  const m = d.deployment_metrics || {};
  const live = m.live_replicas || 0, desired = m.desired_replicas || 0;
  if (d.status === "DISABLED" || d.status === 1) return badge("disabled", "wait");
  if (desired === 0 && live === 0) return badge("scaled to zero");
  return live >= desired ? badge("ready") : badge("scaling", "wait");
}

function deploymentTable(deployments) {
  return table("Deployments", [
    ["Deployment", (d) => link(`/ui/deployments/${enc(d.id)}`, d.id)],
    ["Model", (d) => link(`/ui/models/${enc(d.worker.model.app_id)}/${enc(d.worker.model.id)}`, `${d.worker.model.app_id}/${d.worker.model.id}`)],
    ["Version", (d) => d.worker.model.model_version.id],
    ["Nodepools", (d) => d.nodepools.map((p) => `${p.compute_cluster.id}/${p.id}`).join(", ")],
    ["Min / max replicas", (d) => `${d.autoscale_config.min_replicas} / ${d.autoscale_config.max_replicas}`],
    ["Live / desired", (d) => `${(d.deployment_metrics || {}).live_replicas || 0} / ${(d.deployment_metrics || {}).desired_replicas || 0}`],
    ["Status", deploymentState],
  ], deployments, "No deployments yet.");
}

function overviewPage() {
  const clusters = h("section", { "aria-labelledby": "clusters-h" });
  const deployments = h("section");
  MAIN.append(h("h1", { id: "clusters-h" }, "Compute clusters"),
    h("div", { class: "actions" }, link("/ui/new/cluster", "New compute cluster", { class: "button" })),
    clusters, h("h2", {}, "All deployments"), deployments);
  live(async () => {
    const data = await getJSON("/ui/api/overview");
    update(clusters, data.clusters, (rows) => table("Compute clusters", [
      ["Cluster", (c) => link(`/ui/clusters/${enc(c.id)}`, c.id)],
      ["Description", (c) => c.description],
      ["Provider", (c) => c.cloud_provider.id],
      ["Region", (c) => c.region],
      ["Type", (c) => c.cluster_type],
    ], rows, "No compute clusters yet."));
    update(deployments, data.deployments, deploymentTable);
  });
}

function deleteBox(kind, id, body, after) {
  const box = h("div", { class: "delete-confirm", hidden: true });
  const input = h("input", { id: "confirm-name", autocomplete: "off", "aria-describedby": "confirm-error" });
  const error = h("p", { id: "confirm-error", class: "field-error", "aria-live": "polite" });
  const form = h("form", { onsubmit: async (e) => {
    e.preventDefault();
    try {
      await answer(await post(`/ui/api/forms/${kind}/delete`, { ...body, id, confirm: input.value }));
      go(after);
    } catch (err) { error.textContent = (err.body && err.body.fields && err.body.fields.confirm) || err.message; input.focus(); }
  } }, h("label", { for: "confirm-name" }, `Type the name “${id}” to delete this ${kind}:`), " ", input,
  " ", h("button", { type: "submit", class: "danger" }, `Delete ${kind}`), error);
  box.append(form);
  const open = h("button", { type: "button", class: "secondary", "aria-expanded": "false", onclick: () => {
    box.hidden = !box.hidden; open.setAttribute("aria-expanded", String(!box.hidden)); if (!box.hidden) input.focus();
  } }, `Delete ${kind}…`);
  return [open, box];
}

function clusterPage(cc) {
  const info = h("section"), pools = h("section");
  const [del, box] = deleteBox("cluster", cc, {}, "/");
  MAIN.append(h("p", { class: "crumbs" }, link("/", "Compute"), " / ", cc),
    h("h1", {}, `Compute cluster ${cc}`),
    h("div", { class: "actions" }, link(`/ui/new/nodepool?cluster=${enc(cc)}`, "New nodepool", { class: "button" }),
      link(`/ui/edit/cluster?id=${enc(cc)}`, "Edit", { class: "button secondary" }), del), box, info,
    h("h2", {}, "Nodepools"), pools);
  live(async () => {
    const data = await getJSON(`/ui/api/clusters/${enc(cc)}`);
    const c = data.cluster;
    update(info, c, () => facts([["Description", c.description], ["Provider", c.cloud_provider.id],
      ["Region", c.region], ["Type", c.cluster_type], ["Managed by", c.managed_by]]));
    update(pools, data.nodepools, (rows) => table("Nodepools", [
      ["Nodepool", (n) => link(`/ui/clusters/${enc(cc)}/nodepools/${enc(n.id)}`, n.id)],
      ["Instance types", (n) => n.instance_types.map((t) => t.id).join(", ")],
      ["Capacity", (n) => ((n.node_capacity_type || {}).capacity_types || []).map((t) => (t === 2 || t === "SPOT_INSTANCE" ? "spot" : "on-demand")).join(", ")],
      ["Min / max instances", (n) => `${n.min_instances} / ${n.max_instances}`],
      ["Nodes", (n) => String(n.node_count)],
      ["Status", (n) => nodepoolStatus(n)],
    ], rows, "No nodepools yet."));
  });
}

function nodepoolStatus(n) {
  const code = (n.status || "").toString();
  const text = n.status_description ? `${code.toLowerCase()}: ${n.status_description}` : code.toLowerCase() || "ready";
  return badge(text, /ERROR/.test(code) ? "bad" : "");
}

function nodepoolPage(cc, np) {
  const info = h("section"), deps = h("section");
  const [del, box] = deleteBox("nodepool", np, { cluster: cc }, `/ui/clusters/${enc(cc)}`);
  MAIN.append(h("p", { class: "crumbs" }, link("/", "Compute"), " / ", link(`/ui/clusters/${enc(cc)}`, cc), " / ", np),
    h("h1", {}, `Nodepool ${np}`),
    h("div", { class: "actions" }, link(`/ui/new/deployment?nodepool=${enc(cc)}/${enc(np)}`, "New deployment", { class: "button" }),
      link(`/ui/edit/nodepool?cluster=${enc(cc)}&id=${enc(np)}`, "Edit", { class: "button secondary" }), del), box, info,
    h("h2", {}, "Deployments"), deps);
  live(async () => {
    const data = await getJSON(`/ui/api/clusters/${enc(cc)}/nodepools/${enc(np)}`);
    const n = data.nodepool;
    update(info, n, () => facts([["Description", n.description],
      ["Instance types", n.instance_types.map((t) => t.id).join(", ")],
      ["Min / max instances", `${n.min_instances} / ${n.max_instances}`],
      ["Nodes", String(n.node_count)], ["Status", nodepoolStatus(n)]]));
    update(deps, data.deployments, deploymentTable);
  });
}

/* -- a deployment's page -------------------------------------------------------------- */

const AUTOSCALE = [["min_replicas", "Min replicas"], ["max_replicas", "Max replicas"],
  ["soft_min_replicas", "Soft min replicas"], ["traffic_history_seconds", "Traffic history (s)"],
  ["scale_up_delay_seconds", "Scale-up delay (s)"], ["scale_down_delay_seconds", "Scale-down delay (s)"],
  ["scale_to_zero_delay_seconds", "Scale-to-zero delay (s)"], ["disable_packing", "Disable packing"]];

function deploymentPage(id) {
  const parts = Object.fromEntries(["summary", "autoscale", "replicas", "charts", "events"].map((k) => [k, h("section", { id: k })]));
  const [del, box] = deleteBox("deployment", id, {}, "/");
  const tryBox = h("section", { "aria-labelledby": "try-h" });
  MAIN.append(h("p", { class: "crumbs" }, link("/", "Compute"), " / deployment ", id),
    h("h1", {}, `Deployment ${id}`),
    h("div", { class: "actions" }, link(`/ui/edit/deployment?id=${enc(id)}`, "Edit", { class: "button secondary" }), del), box,
    parts.summary, h("h2", {}, "Replicas"), parts.replicas, h("h2", {}, "Last hour"), parts.charts,
    h("h2", { id: "try-h" }, "Try it"), tryBox, h("h2", {}, "Autoscaling"), parts.autoscale,
    h("h2", {}, "Scaling events"), parts.events, h("h2", { id: "logs-h" }, "Replica logs"),
    followLog(`/ui/api/deployments/${enc(id)}/logs`, "logs-h", "No replica output yet."));
  let tryDrawn = false;
  live(async () => {
    const data = await getJSON(`/ui/api/deployments/${enc(id)}${tryDrawn ? "" : "?version=1"}`);
    drawDeployment(parts, data);
    if (!tryDrawn) { tryBox.append(tryIt(id, data.version)); tryDrawn = true; }
  });
}

function drawDeployment(parts, data) {
  const d = data.deployment, m = d.worker.model;
  const metrics = d.deployment_metrics || {};
  update(parts.summary, [d, data.problem, data.in_flight, data.queued], () => facts([
    ["Model", link(`/ui/models/${enc(m.app_id)}/${enc(m.id)}/versions/${enc(m.model_version.id)}`, `${m.app_id}/${m.id} version ${m.model_version.id}`)],
    ["Nodepools", d.nodepools.map((p) => link(`/ui/clusters/${enc(p.compute_cluster.id)}/nodepools/${enc(p.id)}`, `${p.compute_cluster.id}/${p.id}`))],
    ["Status", deploymentState(d)],
    ["Live / desired replicas", h("span", { id: "live-desired" }, `${metrics.live_replicas || 0} / ${metrics.desired_replicas || 0}`)],
    ["In flight / queued", `${data.in_flight} / ${data.queued}`],
    ["Problem", data.problem || "none"],
  ]));
  update(parts.autoscale, d.autoscale_config, (a) => facts(AUTOSCALE.map(([k, label]) => [label, String(a[k])])));
  update(parts.replicas, data.replicas, (rows) => table("Replicas", [
    ["Replica", (r) => r.id], ["Nodepool", (r) => r.nodepool], ["Instance", (r) => r.instance_id],
    ["Where", (r) => r.where], ["State", (r) => badge(r.state, r.state === "ready" ? "" : "wait")],
    ["Since", (r) => since(r.since)],
  ], rows, data.orchestrated ? "No replicas: scaled to zero." : "This server does not start replicas."));
  const charts = window.OrchardCharts;
  parts.charts.className = "charts";
  update(parts.charts, data.series, (points) => [
    charts.drawChart("Request rate", "req/s", points, [{ key: "rate", name: "rate" }], 3600),
    charts.drawChart("Latency", "ms", points, [{ key: "p50", name: "p50" }, { key: "p99", name: "p99" }], 3600),
    charts.drawChart("Queue depth", "calls", points, [{ key: "queued", name: "queued" }], 3600),
    charts.drawChart("Replicas", "replicas", points, [{ key: "live", name: "live" }, { key: "desired", name: "desired" }], 3600)]);
  update(parts.events, data.events, (events) => events.length
    ? h("ol", { class: "events", tabindex: "0", "aria-label": "Scaling events, oldest first" }, events.map((e) => h("li", {}, e)))
    : h("p", { class: "help" }, "No events yet."));
}

function followLog(url, labelledBy, emptyText) {
  const pre = h("pre", { class: "log", tabindex: "0", "aria-labelledby": labelledBy, "aria-live": "off" }, emptyText);
  const source = new EventSource(url);
  let empty = true;
  source.onmessage = (e) => {
    const lines = JSON.parse(e.data);
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
    if (empty) { pre.textContent = ""; empty = false; }
    pre.append(lines.join("\n") + "\n");
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  };
  source.addEventListener("problem", (e) => { pre.append(`\n[${JSON.parse(e.data)}]\n`); source.close(); });
  cleanups.push(() => source.close());
  return pre;
}

function tryIt(id, version) {
  const methods = ((version || {}).method_signatures || []).filter((s) => /UNARY_(UNARY|STREAMING)/.test(s.method_type));
  const text = h("textarea", { id: "try-text", rows: 3, required: true });
  const method = h("select", { id: "try-method" }, methods.map((s) => h("option", { value: s.name, selected: s.method_type === "UNARY_STREAMING" && !methods.some((o, i) => i < methods.indexOf(s) && o.method_type === "UNARY_STREAMING") }, `${s.name} (${s.method_type === "UNARY_STREAMING" ? "streams" : "unary"})`)));
  const out = h("output", { id: "try-output", class: "answer", for: "try-text", "aria-live": "polite" });
  const send = h("button", { type: "submit" }, "Send");
  const form = h("form", { class: "try", onsubmit: async (e) => {
    e.preventDefault();
    send.disabled = true; out.textContent = ""; out.classList.remove("error");
    try { await streamAnswer(id, text.value, method.value, out); } finally { send.disabled = false; }
  } }, h("label", { for: "try-text" }, "Text to send"), text,
  methods.length ? [h("label", { for: "try-method" }, "Method"), method] : null, send,
  h("p", { class: "help", id: "try-help" }, "The answer appears below as it arrives."), out);
  return form;
}

async function streamAnswer(id, text, method, out) {
  const response = await post(`/ui/api/deployments/${enc(id)}/predict`, { text, method });
  if (!response.ok) { const body = await response.json().catch(() => ({})); out.textContent = body.error || `HTTP ${response.status}`; out.classList.add("error"); return; }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffered.indexOf("\n")) >= 0) {
      const line = JSON.parse(buffered.slice(0, cut));
      buffered = buffered.slice(cut + 1);
      if (line.text !== undefined) out.append(line.text);
      if (line.error) { out.append(line.error); out.classList.add("error"); }
      if (line.done) out.dataset.done = "true";
    }
  }
}

/* -- models ------------------------------------------------------------------------- */

function versionStatus(v) {
  const code = ((v.status || {}).code || "").toString();
  return badge(code.replace(/^MODEL_/, "").toLowerCase() || "unknown", /FAIL/.test(code) ? "bad" : /TRAINED/.test(code) ? "" : "wait");
}

function modelsPage() {
  const list = h("section");
  MAIN.append(h("h1", {}, "Models"), h("p", { class: "help" }, "Upload with ", h("code", {}, "orchard model upload ./folder"), "."), list);
  live(async () => {
    const data = await getJSON("/ui/api/models");
    update(list, data.models, (rows) => table("Models", [
      ["Model", (m) => link(`/ui/models/${enc(m.app_id)}/${enc(m.id)}`, m.id)],
      ["App", (m) => m.app_id], ["Type", (m) => m.model_type_id],
      ["Latest version", (m) => (m.model_version || {}).id || ""],
    ], rows, "No models yet."));
  });
}

function modelPage(app, model) {
  const list = h("section");
  MAIN.append(h("p", { class: "crumbs" }, link("/ui/models", "Models"), " / ", `${app}/${model}`), h("h1", {}, `Model ${model}`), h("h2", {}, "Versions"), list);
  live(async () => {
    const data = await getJSON(`/ui/api/models/${enc(app)}/${enc(model)}`);
    update(list, data.versions, (rows) => table("Versions", [
      ["Version", (v) => link(`/ui/models/${enc(app)}/${enc(model)}/versions/${enc(v.id)}`, v.id)],
      ["Status", versionStatus], ["Created", (v) => v.created_at || ""],
      ["Methods", (v) => (v.method_signatures || []).map((s) => s.name).join(", ")],
    ], rows, "No versions."));
  });
}

function signature(s) {
  const fields = (list) => (list || []).map((f) => `${f.name}: ${(f.type || "").toString().toLowerCase()}`).join(", ");
  return [s.name, (s.method_type || "").toString().toLowerCase().replace("_", " → "), fields(s.input_fields), fields(s.output_fields)];
}

function versionPage(app, model, version) {
  const info = h("section"), methods = h("section");
  MAIN.append(h("p", { class: "crumbs" }, link("/ui/models", "Models"), " / ", link(`/ui/models/${enc(app)}/${enc(model)}`, `${app}/${model}`), " / ", version),
    h("h1", {}, `Version ${version} of ${model}`), info, h("h2", {}, "Method signatures"), methods,
    h("h2", { id: "build-h" }, "Build log"),
    followLog(`/ui/api/models/${enc(app)}/${enc(model)}/versions/${enc(version)}/log`, "build-h", "No build output yet."));
  live(async () => {
    const v = (await getJSON(`/ui/api/models/${enc(app)}/${enc(model)}/versions/${enc(version)}`)).version;
    update(info, v.status, () => facts([["Build status", versionStatus(v)], ["Says", (v.status || {}).description || ""]]));
    update(methods, v.method_signatures, (rows) => table("Methods", [
      ["Method", (s) => signature(s)[0]], ["Shape", (s) => signature(s)[1]],
      ["Inputs", (s) => signature(s)[2]], ["Outputs", (s) => signature(s)[3]],
    ], rows || [], "No signatures yet (the version has not been built)."));
  });
}

/* -- forms ------------------------------------------------------------------------- */

const DEFAULTS = {
  cluster: { "cloud_provider.id": "local", region: "local", cluster_type: "dedicated", managed_by: "user", "visibility.gettable": "10" },
  nodepool: { "node_capacity_type.capacity_types": "1", min_instances: "0", max_instances: "1" },
  deployment: { scheduling_choice: "4", status: "0", "autoscale_config.min_replicas": "0", "autoscale_config.max_replicas": "1" },
};
const fieldId = (name) => `f-${name.replace(/[^A-Za-z0-9]/g, "-")}`;

function control(field, value, editing) {
  const id = fieldId(field.name);
  const described = [field.help ? `${id}-help` : null, `${id}-error`].filter(Boolean).join(" ");
  const common = { id, name: field.name, "aria-describedby": described };
  if (field.kind === "checkbox") return h("input", { ...common, type: "checkbox", checked: value === true });
  if (field.kind === "select") {
    return h("select", common, field.options.map(([v, label]) => h("option", { value: v, selected: String(value) === v }, label)));
  }
  return h("input", { ...common, type: field.kind === "number" ? "number" : "text", min: field.kind === "number" ? 0 : null,
    value: value ?? "", readonly: editing && field.fixed, autocomplete: "off" });
}

async function formPage(mode, kind) {
  const query = new URLSearchParams(location.search);
  const editing = mode === "edit";
  const spec = await getJSON(`/ui/api/forms/${kind}?${query}`).catch((e) => { failed(e); return null; });
  if (!spec) return;
  const values = editing ? spec.values : { ...DEFAULTS[kind] };
  if (!editing && query.get("cluster")) values["compute_cluster.id"] = query.get("cluster");
  if (!editing && query.get("nodepool")) values.nodepools = query.get("nodepool");
  const top = h("p", { class: "error", role: "alert", id: "form-error", tabindex: "-1" });
  const form = h("form", { class: "resource", novalidate: true }, spec.fields.map((f) => h("div", { class: "field" },
    h("label", { for: fieldId(f.name) }, f.label),
    h("div", { class: "control" }, control(f, values[f.name], editing),
      f.help ? h("p", { class: "help", id: `${fieldId(f.name)}-help` }, f.help) : null,
      h("p", { class: "field-error", id: `${fieldId(f.name)}-error`, "aria-live": "polite" })))),
  h("div", {}), h("div", { class: "actions" }, h("button", { type: "submit" }, editing ? "Save" : `Create ${kind}`),
    h("button", { type: "button", class: "secondary", onclick: () => downloadYaml(kind, form) }, "Download YAML")));
  form.addEventListener("submit", (e) => { e.preventDefault(); submitForm(kind, form, editing, top); });
  MAIN.append(h("h1", {}, `${editing ? "Edit" : "New"} ${kind}`), top, form);
}

function formValues(form) {
  const values = {};
  for (const input of form.querySelectorAll("[name]")) values[input.name] = input.type === "checkbox" ? input.checked : input.value;
  return values;
}

async function submitForm(kind, form, editing, top) {
  for (const node of form.querySelectorAll(".field-error")) node.textContent = "";
  for (const node of form.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
  top.textContent = "";
  try {
    const saved = (await answer(await post(`/ui/api/forms/${kind}`, { values: formValues(form), edit: editing }))).saved;
    go(kind === "cluster" ? `/ui/clusters/${enc(saved.id)}`
      : kind === "nodepool" ? `/ui/clusters/${enc(saved.compute_cluster.id)}/nodepools/${enc(saved.id)}`
      : `/ui/deployments/${enc(saved.id)}`);
  } catch (err) { showErrors(form, top, err); }
}

function showErrors(form, top, err) {
  const fields = (err.body && err.body.fields) || {};
  let first = null;
  for (const [name, message] of Object.entries(fields)) {
    const input = name ? form.querySelector(`#${fieldId(name)}`) : null;
    if (!input) { top.textContent = top.textContent ? `${top.textContent}; ${message}` : message; continue; }
    input.setAttribute("aria-invalid", "true");
    form.querySelector(`#${fieldId(name)}-error`).textContent = message;
    first = first || input;
  }
  if (!Object.keys(fields).length) top.textContent = err.message;
  if (first) first.focus(); else top.focus();
}

async function downloadYaml(kind, form) {
  const response = await post(`/ui/api/forms/${kind}/yaml`, { values: formValues(form) });
  if (!response.ok) { showErrors(form, document.getElementById("form-error"), await answer(response).catch((e) => e)); return; }
  const name = (response.headers.get("Content-Disposition") || "").match(/filename="([^"]+)"/);
  const url = URL.createObjectURL(await response.blob());
  const a = h("a", { href: url, download: name ? name[1] : `${kind}.yaml` });
  document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

render();
