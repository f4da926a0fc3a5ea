// The dashboard's pages: each reads the service's own HTTP API (/v3/...) with the session
// cookie; a request that changes something sends the session's CSRF token in a header.
// Charts are uPlot's (static/vendor/uplot). No framework: each page is a function below.
"use strict";

const PAGE = document.body.dataset.page;
const ADMIN = document.body.dataset.admin === "true";
const CSRF = {
  header: document.querySelector('meta[name="csrf-header"]')?.content,
  token: document.querySelector('meta[name="csrf-token"]')?.content,
};
const POLL_MS = 3000;

// -- helpers --------------------------------------------------------------------------------

async function api(path, options = {}) {
  const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
  if (options.method && options.method !== "GET") headers[CSRF.header] = CSRF.token;
  const answer = await fetch(path, Object.assign({}, options, { headers, credentials: "same-origin" }));
  if (answer.status === 401) {
    location.assign("/ui/sign-in?next=" + encodeURIComponent(location.pathname + location.search));
    throw new Error("signed out");
  }
  const body = (answer.headers.get("Content-Type") || "").includes("json") ? await answer.json() : null;
  if (!answer.ok) {
    const message = body?.error?.message || `${answer.status} ${answer.statusText}`;
    const error = new Error(message);
    error.status = answer.status;
    throw error;
  }
  return body;
}

function showError(error) {
  const box = document.getElementById("error");
  box.textContent = error ? String(error.message || error) : "";
  box.hidden = !error;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// A state is a word and a colour: readable without colour.
function stateBadge(state) {
  return el("span", { class: `state state-${(state || "").toLowerCase()}`, text: (state || "-").toLowerCase() });
}

function when(iso) {
  if (!iso) return "-";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

function seconds(from, to) {
  if (!from) return null;
  return ((to ? new Date(to) : new Date()) - new Date(from)) / 1000;
}

function duration(s) {
  if (s === null || s === undefined || Number.isNaN(s)) return "-";
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

function bytes(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function every(ms, work) {
  let timer = null;
  const tick = async () => {
    let again = true;
    try { again = (await work()) !== false; showError(null); } catch (error) { showError(error); }
    if (again) timer = setTimeout(tick, ms);
  };
  tick();
  return () => clearTimeout(timer);
}

const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"];

// Integer steps get integer ticks only (1, 2, 5, 10, ...): no "step 2.5".
const INTEGER_STEPS = [1, 2, 5].flatMap((m) => [1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8].map((p) => m * p)).sort((a, b) => a - b);

// One uPlot chart: x = step (or `axis: "time"`, the wall time each point was seen), a series
// per entry of `lines` ({label, points: [{step, value, time}], color?, bold?, dashed?}).
function lineChart(holder, title, lines, axis = "step") {
  const xOf = axis === "time" ? (p) => Date.parse(p.time) / 1000 : (p) => p.step;
  const xs = [...new Set(lines.flatMap((l) => l.points.map(xOf)))].sort((a, b) => a - b);
  const index = new Map(xs.map((s, i) => [s, i]));
  const data = [xs];
  for (const line of lines) {
    const ys = new Array(xs.length).fill(null);
    for (const p of line.points) ys[index.get(xOf(p))] = p.value;
    data.push(ys);
  }
  const integers = axis === "step" && xs.every(Number.isInteger);
  const width = Math.max(260, Math.min(holder.clientWidth || 440, 440));
  const options = {
    title,
    width,
    height: 240,
    scales: { x: { time: axis === "time" } },
    axes: [{ label: axis === "time" ? "wall time" : "step", ...(integers ? { incrs: INTEGER_STEPS } : {}) }, {}],
    series: [
      { label: axis === "time" ? "time" : "step" },
      ...lines.map((line, i) => ({
        label: line.label,
        stroke: line.color || PALETTE[i % PALETTE.length],
        width: line.bold ? 3 : 1.5,
        dash: line.dashed ? [6, 4] : undefined,
        spanGaps: true,
        points: { show: xs.length < 60 },
      })),
    ],
  };
  const counts = lines.map((l) => l.points.length).join(",");
  const box = el("figure", { class: "chart", "data-metric": title, "data-points": String(xs.length), "data-line-points": counts, "data-axis": axis });
  holder.append(box);
  return new uPlot(options, data, box);
}

// The page's "by step" / "by wall time" buttons: `draw(axis)` redraws with the chosen one.
function axisSwitch(draw) {
  let axis = "step";
  for (const button of document.querySelectorAll(".axis-switch button")) {
    button.addEventListener("click", () => {
      axis = button.dataset.axis;
      for (const b of document.querySelectorAll(".axis-switch button")) b.setAttribute("aria-pressed", String(b === button));
      draw(axis);
    });
  }
  return () => axis;
}

// A list read `limit` rows at a time and polled every `ms`, with its Newer and Older buttons:
// `load(offset)` shows that page and returns its answer's next_offset. Returns restart(offset).
function pagedList(ms, limit, load) {
  const older = document.getElementById("older");
  const newer = document.getElementById("newer");
  let offset = 0;
  const tick = async () => {
    const next = await load(offset);
    older.disabled = next === null;
    newer.disabled = offset === 0;
  };
  let stop = every(ms, tick);
  const restart = (to) => { offset = Math.max(0, to); stop(); stop = every(ms, tick); };
  older.addEventListener("click", () => restart(offset + limit));
  newer.addEventListener("click", () => restart(offset - limit));
  return restart;
}

// -- runs list ------------------------------------------------------------------------------

function runsPage() {
  const form = document.getElementById("filters");
  const tbody = document.querySelector("#runs tbody");
  const count = document.getElementById("count");
  const limit = 100;
  const params = new URLSearchParams(location.search);
  for (const field of ["state", "name", "experiment"]) {
    if (params.get(field)) form.elements[field].value = params.get(field);
  }

  async function load(offset) {
    const query = new URLSearchParams({ limit, offset });
    if (ADMIN) query.set("all", "true");
    for (const field of ["state", "name", "experiment"]) {
      const value = form.elements[field].value.trim();
      if (value) query.set(field, value);
    }
    const page = await api("/v3/models?" + query);
    tbody.replaceChildren(...page.models.map(runRow));
    // For benchmarks/browser.py: when the first rows were on the page (ms since navigation).
    if (page.models.length && !performance.getEntriesByName("dlaas:first-rows").length) {
      performance.mark("dlaas:first-rows");
    }
    const shown = page.models.length;
    count.textContent = page.total
      ? `${offset + 1}–${offset + shown} of ${page.total} runs`
      : "No runs" + (query.has("state") || query.has("name") || query.has("experiment") ? " match these filters." : " yet.");
    return page.next_offset;
  }

  // The runs chosen to compare, kept while the list refreshes; the button opens them.
  const chosen = new Set();
  const compare = document.getElementById("compare");
  const showChosen = () => {
    compare.disabled = chosen.size < 2 || chosen.size > 10;
    compare.textContent = chosen.size ? `Compare ${chosen.size} selected` : "Compare selected";
  };
  compare.addEventListener("click", () => location.assign(`/ui/compare?runs=${[...chosen].join(",")}`));
  showChosen();

  function runRow(run) {
    const reason = run.state === "FAILED" ? `${run.error_code || ""} ${run.status_message || ""}`.trim() : "";
    const box = el("input", { type: "checkbox", "aria-label": `compare ${run.model_id}`, checked: chosen.has(run.model_id) });
    box.addEventListener("change", () => { box.checked ? chosen.add(run.model_id) : chosen.delete(run.model_id); showChosen(); });
    return el(
      "tr",
      { "data-run-id": run.model_id },
      el("td", {}, box),
      el("td", {}, el("a", { href: `/ui/runs/${run.model_id}`, text: run.name || run.model_id }),
        el("div", { class: "muted small", text: run.model_id }),
        run.experiment ? el("div", { class: "small" }, el("a", { href: `/ui/experiments/${run.experiment.id}`, text: `trial ${run.experiment.trial}` })) : null),
      ADMIN ? el("td", { text: run.user }) : null,
      el("td", {}, stateBadge(run.state)),
      el("td", { text: run.resource }),
      el("td", { text: run.worker || "-" }),
      el("td", { text: when(run.submitted_at) }),
      el("td", { text: duration(seconds(run.submitted_at, run.ended_at)) }),
      el("td", { class: "reason", text: reason }),
    );
  }

  const restart = pagedList(POLL_MS, limit, load);
  let typing = null;
  form.addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(() => restart(0), 250); });
  form.addEventListener("submit", (e) => { e.preventDefault(); restart(0); });
}

// -- a run ----------------------------------------------------------------------------------

// What a run used, in words with units, by the part of its life it belongs to.
const USAGE_GROUPS = [
  ["Staging", {
    staged_objects: ["Objects staged", (v) => `${v} objects`],
    staged_bytes: ["Bytes staged", bytes],
    cached_objects: ["From the node's cache", (v) => `${v} objects`],
    cached_bytes: ["From the node's cache, bytes", bytes],
    fetched_objects: ["From the store", (v) => `${v} objects`],
    fetched_bytes: ["From the store, bytes", bytes],
    staging_seconds: ["Staging took", duration],
    staging_cpu_seconds: ["Staging's CPU time", duration],
  }],
  ["Environment", {
    environment_seconds: ["Environment ready in", duration],
  }],
  ["Execution", {
    peak_rss_bytes: ["Peak memory", bytes],
    cpu_seconds: ["CPU time", duration],
    gpu_utilization_mean: ["GPU utilisation, mean", (v) => `${v} %`],
    gpu_utilization_max: ["GPU utilisation, peak", (v) => `${v} %`],
    gpu_memory_peak_bytes: ["GPU memory, peak", bytes],
    metric_points: ["Metric points", (v) => `${v} points`],
    metric_points_dropped: ["Metric points dropped", (v) => `${v} points`],
  }],
  ["Storing", {
    stored_objects: ["Objects stored", (v) => `${v} objects`],
    stored_bytes: ["Bytes stored", bytes],
    storing_seconds: ["Storing took", duration],
  }],
];

function usageFacts(usage) {
  const facts = [];
  const shown = new Set();
  for (const [group, labels] of USAGE_GROUPS) {
    const rows = Object.entries(labels).filter(([key]) => usage?.[key] !== undefined);
    if (!rows.length) continue;
    facts.push(el("dt", { class: "group", "data-group": group.toLowerCase(), text: group }), el("dd", { class: "group" }));
    for (const [key, [label, format]] of rows) {
      facts.push(el("dt", { text: label }), el("dd", { "data-usage": key, text: format(usage[key]) }));
      shown.add(key);
    }
    if (group === "Staging" && usage?.staged_bytes && usage?.staging_seconds) {
      facts.push(el("dt", { text: "Staging rate" }), el("dd", { text: `${bytes(usage.staged_bytes / usage.staging_seconds)}/s` }));
    }
  }
  const rest = Object.entries(usage || {}).filter(([key]) => !shown.has(key));
  if (rest.length) facts.push(el("dt", { class: "group", text: "Other" }), el("dd", { class: "group" }));
  for (const [key, value] of rest) {
    facts.push(el("dt", { text: key.replaceAll("_", " ") }), el("dd", { "data-usage": key, text: String(value) }));
  }
  return facts.length ? facts : [el("dd", { class: "muted", text: "Nothing measured yet." })];
}

function timeline(history, endedAt) {
  const rows = [];
  const bar = [];
  history.forEach((entry, i) => {
    const end = history[i + 1]?.at || (i === history.length - 1 ? (endedAt || null) : null);
    const last = i === history.length - 1;
    const terminal = ["COMPLETED", "FAILED", "HALTED"].includes(entry.state);
    const span = terminal ? null : seconds(entry.at, end);
    rows.push(el("tr", { "data-state": entry.state },
      el("td", {}, stateBadge(entry.state)),
      el("td", { text: when(entry.at) }),
      el("td", { text: terminal ? "-" : (end ? when(end) : last ? "now" : "-") }),
      el("td", { text: terminal ? "-" : duration(span) }),
      el("td", { text: [entry.error_code, entry.message].filter(Boolean).join(" ") })));
    if (!terminal) bar.push({ state: entry.state, span: Math.max(span || 0, 0.001) });
  });
  const total = bar.reduce((sum, b) => sum + b.span, 0) || 1;
  const segments = bar.map((b) => el("span", {
    class: `segment state-${b.state.toLowerCase()}`, style: `flex-grow: ${b.span / total}`,
    title: `${b.state.toLowerCase()}: ${duration(b.span)}`, text: b.state.toLowerCase(),
  }));
  return { rows, segments };
}

function followLog(runId, onEnd) {
  const pre = document.getElementById("log");
  const status = document.getElementById("log-status");
  const search = document.getElementById("log-search");
  const lines = [];
  const render = () => {
    const needle = search.value.trim().toLowerCase();
    const shown = needle ? lines.filter((l) => l.toLowerCase().includes(needle)) : lines;
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
    pre.textContent = shown.join("\n");
    status.textContent = needle ? `(${shown.length} of ${lines.length} lines match)` : `(${lines.length} lines)`;
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  };
  search.addEventListener("input", render);
  const source = new EventSource(`/v3/models/${runId}/logs?follow=true`);
  source.addEventListener("log", (e) => { lines.push(...e.data.split("\n")); render(); });
  source.addEventListener("end", (e) => { source.close(); status.dataset.ended = e.data; onEnd(); render(); });
  source.onerror = () => { if (source.readyState === EventSource.CLOSED) status.textContent += " (disconnected)"; };
  return source;
}

function runPage() {
  const runId = document.body.dataset.runId;
  const cancel = document.getElementById("cancel");
  const remove = document.getElementById("delete");
  let ended = false;
  let lastMetrics = "";

  async function load() {
    const run = await api(`/v3/models/${runId}`);
    document.getElementById("run-name").textContent = run.name || run.model_id;
    document.getElementById("run-state").replaceChildren(stateBadge(run.state));
    document.getElementById("run-facts").textContent = [
      run.model_id, `${run.framework.name} ${run.framework.version}`, `${run.resource} (${run.gpu_count} GPU)`,
      run.worker ? `on ${run.worker}` : null, run.gpus?.length ? `GPUs ${run.gpus.join(",")}` : null,
      ADMIN ? `owner ${run.user}` : null, run.experiment ? `trial ${run.experiment.trial} of ${run.experiment.id}` : null,
    ].filter(Boolean).join(" · ");
    const { rows, segments } = timeline(run.history, run.ended_at);
    document.querySelector("#timeline tbody").replaceChildren(...rows);
    document.getElementById("timeline-bar").replaceChildren(...segments);
    document.getElementById("usage").replaceChildren(...usageFacts(run.usage));
    const terminal = ["COMPLETED", "FAILED", "HALTED"].includes(run.state);
    cancel.disabled = terminal || Boolean(run.cancel_requested);
    remove.disabled = false;
    await loadMetrics();
    if (terminal && !ended) { ended = true; await loadResults(run); }
    return !terminal;
  }

  let shownMetrics = {};
  const axis = axisSwitch(() => drawMetrics());

  async function loadMetrics() {
    const answer = await api(`/v3/models/${runId}/metrics`);
    const key = JSON.stringify(Object.values(answer.metrics).map((m) => [m.count, m.last?.step]));
    if (key === lastMetrics) return;
    lastMetrics = key;
    shownMetrics = answer.metrics;
    drawMetrics();
  }

  function drawMetrics() {
    const charts = document.getElementById("charts");
    charts.replaceChildren();
    const names = Object.keys(shownMetrics);
    document.getElementById("metrics-none").hidden = names.length > 0;
    for (const name of names) {
      const metric = shownMetrics[name];
      const best = metric.best ? `; best ${metric.best.value} at step ${metric.best.step}` : "";
      lineChart(charts, `${name} (${metric.goal || "-"}${best})`, [{ label: name, points: metric.points }], axis());
    }
  }

  async function loadResults(run) {
    const where = document.getElementById("results-where");
    const tbody = document.querySelector("#results tbody");
    try {
      const answer = await api(`/v3/models/${runId}/results`);
      const loc = answer.results_location;
      where.textContent = `${answer.files.length} files, ${bytes(answer.total_bytes)}, in ${loc.type} bucket ${loc.bucket}, under ${loc.prefix}`;
      tbody.replaceChildren(...answer.files.map((f) => el("tr", {},
        el("td", {}, el("a", { href: `/v3/models/${runId}/results/${f.path.split("/").map(encodeURIComponent).join("/")}`, download: f.path.split("/").pop(), text: f.path })),
        el("td", { text: bytes(f.size) }))));
    } catch (error) {
      where.textContent = `Results not readable: ${error.message}`;
    }
  }

  function confirmThen(text, action) {
    const dialog = document.getElementById("confirm");
    document.getElementById("confirm-text").textContent = text;
    dialog.returnValue = "";
    dialog.addEventListener("close", async () => {
      if (dialog.returnValue !== "yes") return;
      try { await action(); showError(null); } catch (error) { showError(error); }
    }, { once: true });
    dialog.showModal();
  }

  cancel.addEventListener("click", () => confirmThen(`Cancel run ${runId}? Its command is stopped; it ends HALTED.`, async () => {
    await api(`/v3/models/${runId}`, { method: "PATCH", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ status: "halt" }) });
    cancel.disabled = true;
    await load();
  }));
  remove.addEventListener("click", () => confirmThen(`Delete run ${runId} from the service? (Its results stay in your bucket.)`, async () => {
    await api(`/v3/models/${runId}`, { method: "DELETE" });
    location.assign("/ui/");
  }));

  every(POLL_MS, load);
  followLog(runId, () => {});
}

// -- experiments ----------------------------------------------------------------------------

function experimentsPage() {
  const tbody = document.querySelector("#experiments tbody");
  const limit = 100;
  pagedList(POLL_MS * 2, limit, async (offset) => {
    const answer = await api(`/v3/experiments?limit=${limit}&offset=${offset}`);
    const shown = answer.experiments.length;
    document.getElementById("count").textContent = answer.total
      ? `${offset + 1}–${offset + shown} of ${answer.total} experiments` : "No experiments yet.";
    tbody.replaceChildren(...answer.experiments.map((x) => el("tr", { "data-experiment-id": x.experiment_id },
      el("td", {}, el("a", { href: `/ui/experiments/${x.experiment_id}`, text: x.name || x.experiment_id })),
      el("td", {}, stateBadge(x.state)),
      el("td", { text: `${x.method} (${x.sampler})` }),
      el("td", { text: `${x.direction} ${x.objective}` }),
      el("td", { text: `${x.trials.started} of ${x.trials.planned}` }),
      el("td", { text: x.best ? `${x.best.objective} (trial ${x.best.trial})` : "-" }),
      el("td", { text: when(x.created_at) }))));
    return answer.next_offset;
  });
}

function experimentPage() {
  const id = document.body.dataset.experimentId;
  let drawn = "";
  every(POLL_MS, async () => {
    const x = await api(`/v3/experiments/${id}`);
    document.getElementById("experiment-name").textContent = x.name || x.experiment_id;
    document.getElementById("experiment-state").replaceChildren(stateBadge(x.state));
    document.getElementById("experiment-facts").textContent = [
      x.experiment_id, `${x.method} search (${x.sampler})`, `${x.direction} ${x.objective}`,
      `${x.trials.started} of ${x.trials.planned} trials started`, x.status_message,
    ].filter(Boolean).join(" · ");
    document.querySelector("#leaderboard tbody").replaceChildren(...x.leaderboard.map((t) => {
      const early = (t.message || "").startsWith("stopped early");
      return el("tr", { "data-trial": t.trial, class: t.best ? "best" : early ? "stopped-early" : null },
        el("td", { text: t.trial }),
        el("td", {}, el("a", { href: `/ui/runs/${t.run_id}`, text: t.run_id })),
        el("td", {}, stateBadge(t.state), early ? el("div", { class: "small", text: t.message }) : null),
        el("td", { text: Object.entries(t.values).map(([k, v]) => `${k}=${v}`).join(", ") }),
        el("td", { text: t.objective ?? "-" }),
        el("td", { text: t.objective_step ?? "-" }),
        el("td", {}, t.best ? el("strong", { class: "best-mark", text: "★ best" }) : early ? el("span", { class: "early-mark", text: "stopped early" }) : null));
    }));
    const trialRuns = x.leaderboard.map((t) => t.run_id).slice(0, 10);
    const link = document.getElementById("compare-trials");
    link.hidden = trialRuns.length < 2;
    link.href = `/ui/compare?runs=${trialRuns.join(",")}`;
    const key = JSON.stringify(x.leaderboard.map((t) => [t.trial, t.state, t.objective_step]));
    if (key !== drawn) {
      drawn = key;
      await drawCurves(x);
    }
    return x.state === "RUNNING";
  });
}

async function drawCurves(x) {
  const lines = [];
  for (const t of [...x.leaderboard].sort((a, b) => a.trial - b.trial)) {
    try {
      const answer = await api(`/v3/models/${t.run_id}/metrics?name=${encodeURIComponent(x.objective)}`);
      const points = answer.metrics[x.objective]?.points || [];
      const early = (t.message || "").startsWith("stopped early");
      if (points.length) lines.push({ label: `trial ${t.trial}${t.best ? " (best)" : ""}${early ? " (stopped early)" : ""}`, points, bold: t.best, dashed: early });
    } catch (error) {
      if (error.status !== 404) throw error; // not reported yet, or the run was deleted
    }
  }
  const charts = document.getElementById("charts");
  charts.replaceChildren();
  document.getElementById("curves-none").hidden = lines.length > 0;
  if (lines.length) lineChart(charts, `${x.objective} by trial`, lines);
}

// -- runs compared -----------------------------------------------------------------------------

// The manifest as dotted paths and their values (`training_data.bucket`), to find what differs.
function flatten(value, prefix = "", out = {}) {
  if (value && typeof value === "object" && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
  } else {
    out[prefix] = Array.isArray(value) ? JSON.stringify(value) : String(value ?? "");
  }
  return out;
}

function comparePage() {
  const ids = document.body.dataset.runIds.split(",");
  const color = (i) => PALETTE[i % PALETTE.length];
  let runs = [], answers = [], drawn = "";
  const axis = axisSwitch(() => draw());

  function differences() {
    const head = document.querySelector("#differences thead tr");
    head.replaceChildren(el("th", { text: "" }), ...runs.map((run, i) => el("th", { "data-run-id": run.model_id },
      el("span", { class: "swatch", style: `background: ${color(i)}` }), " ",
      el("a", { href: `/ui/runs/${run.model_id}`, text: run.name || run.model_id }),
      el("div", { class: "muted small", text: run.model_id }))));
    const fixed = [
      ["Framework", (r) => `${r.framework.name} ${r.framework.version}`],
      ["Size", (r) => `${r.resource} (${r.gpu_count} GPU)`],
      ["Command", (r) => r.command],
      ["Hyperparameters", (r) => Object.entries(r.experiment?.values || {}).map(([k, v]) => `${k}=${v}`).join(", ") || "-"],
      ["State", (r) => r.state.toLowerCase()],
    ];
    const rows = fixed.map(([label, of]) => [label, runs.map(of)]);
    const flat = runs.map((r) => flatten(r.manifest));
    const paths = [...new Set(flat.flatMap(Object.keys))].sort();
    for (const path of paths) {
      if (["execution.command", "execution.resource", "framework.name", "framework.version"].includes(path)) continue;
      const values = flat.map((f) => f[path] ?? "-");
      if (new Set(values).size > 1) rows.push([`manifest ${path}`, values]);
    }
    const names = [...new Set(answers.flatMap((a) => Object.keys(a.metrics)))].sort();
    for (const name of names) {
      rows.push([`${name}, last`, answers.map((a) => a.metrics[name]?.last ? `${a.metrics[name].last.value} (step ${a.metrics[name].last.step})` : "-")]);
      rows.push([`${name}, best`, answers.map((a) => a.metrics[name]?.best ? `${a.metrics[name].best.value} (step ${a.metrics[name].best.step})` : "-")]);
    }
    document.querySelector("#differences tbody").replaceChildren(...rows.map(([label, values]) => el("tr",
      { class: new Set(values).size > 1 ? "differs" : null, "data-row": label },
      el("th", { text: label }), ...values.map((v) => el("td", { text: v })))));
  }

  function draw() {
    const charts = document.getElementById("charts");
    charts.replaceChildren();
    const names = [...new Set(answers.flatMap((a) => Object.keys(a.metrics)))].sort();
    document.getElementById("metrics-none").hidden = names.length > 0;
    for (const name of names) {
      // Every run a line in every chart, in the same colour: one with no such metric stays empty.
      lineChart(charts, name, runs.map((run, i) => ({
        label: `${run.name || run.model_id} (${run.model_id})`, color: color(i), points: answers[i].metrics[name]?.points || [],
      })), axis());
    }
  }

  every(POLL_MS, async () => {
    runs = await Promise.all(ids.map((id) => api(`/v3/models/${id}`)));
    answers = await Promise.all(ids.map((id) => api(`/v3/models/${id}/metrics`)));
    differences();
    const key = JSON.stringify(answers.map((a) => Object.values(a.metrics).map((m) => [m.count, m.last?.step])));
    if (key !== drawn) { drawn = key; draw(); }
    return runs.some((r) => !["COMPLETED", "FAILED", "HALTED"].includes(r.state));
  });
}

// -- the fleet ------------------------------------------------------------------------------

// The run holding GPU g of node n (its ledger), or undefined: free.
const holder = (n, g) => (n.runs || []).find((r) => r.gpus.includes(g))?.run_id;

function fleetPage() {
  every(POLL_MS, async () => {
    const [{ nodes }, { queues }] = await Promise.all([api("/v3/nodes"), api("/v3/queues")]);
    document.getElementById("nodes-count").textContent = `${nodes.length} nodes: ` + ["ready", "draining", "lost"]
      .map((s) => `${nodes.filter((n) => n.status === s).length} ${s}`).join(", ");
    document.getElementById("nodes").replaceChildren(...nodes.map((n) => {
      const gpus = n.gpus || [];
      return el("article", { class: `node node-${n.status}`, "data-node": n.name },
        el("h3", {}, `${n.name} `, el("span", { class: `status status-${n.status}`, text: n.status })),
        el("p", { class: "muted small", text: n.status === "lost" ? `last heard ${when(new Date(n.last_heartbeat * 1000).toISOString())}` : `${n.host || ""} · serves ${(n.sizes || []).join(", ")} · ${n.accelerator || "cpu"}` }),
        n.isolation ? el("p", { class: "small isolation", "data-sandbox": String(n.isolation.sandbox), text: `isolation: ${n.isolation.detail}` }) : null,
        gpus.length ? el("ul", { class: "gpus" }, ...gpus.map((g) => el("li", { class: holder(n, g) ? "gpu busy" : "gpu free" },
          `GPU ${g}: `, holder(n, g) ? el("a", { href: `/ui/runs/${holder(n, g)}`, text: `busy, ${holder(n, g)}` }) : "free")))
          : el("p", { class: "small" }, n.status === "lost" ? "" : n.run ? el("a", { href: `/ui/runs/${n.run}`, text: `running ${n.run}` }) : "idle (no GPU)"));
    }));
    document.getElementById("queues").replaceChildren(...queues.map((q) => el("article", { class: "queue", "data-size": q.size },
      el("h3", { text: `${q.size}: ${q.pending} pending` }),
      q.runs.length ? el("ol", {}, ...q.runs.map((r) => el("li", { value: r.position },
        r.model_id ? el("a", { href: `/ui/runs/${r.model_id}`, text: `${r.name || r.model_id}${ADMIN ? ` (${r.user})` : ""}` }) : el("span", { class: "muted", text: "another user's run" }),
        ` · ${r.gpu_count} GPU · since ${when(r.submitted_at)}`))) : el("p", { class: "muted small", text: "empty" }))));
  });
}

const PAGES = { runs: runsPage, run: runPage, experiments: experimentsPage, experiment: experimentPage, compare: comparePage, fleet: fleetPage };
if (PAGES[PAGE]) PAGES[PAGE]();
