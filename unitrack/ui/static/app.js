// unitrack's web view: plain JavaScript, no build step. Every text from the store is untrusted: it reaches the
// page only through textContent (never innerHTML) and as figure data that plotly.js draws.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const EMBED = document.getElementById("unitrack-data");
  const REPORT = EMBED ? JSON.parse(EMBED.textContent) : null;
  const POLL_MS = 2000;
  const FIRST_ROWS = 100;
  const CHUNK_ROWS = 400;
  const FIRST_CHARTS_WAIT_MS = 3000;
  const DEFAULT_CHARTED = 10;
  const TIME_COLUMNS = new Set(["created", "started", "ended", "last_seen"]);
  const state = {
    runs: null, // the /api/runs payload
    byUid: new Map(),
    visible: null, // columns shown
    sort: { column: null, direction: 1 },
    selected: new Set(),
    metrics: [],
    chartSignature: "",
    zoom: new Map(), // metric -> [step_min, step_max]
    busy: false,
    pending: null,
    runsTag: null, // the ETag of the last /api/runs answer: a poll with nothing new gets 304 and no body
    first: null, // the first chart, asked for while the table loads (the first runs of the table)
  };

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  }

  function notice(text) {
    $("notice").textContent = text || "";
  }

  // ------------------------------------------------------------------------------------------------ data
  async function api(path, params, tag) {
    if (REPORT) return fromReport(path, params || []);
    const url = new URL(path, window.location.origin);
    for (const [key, value] of params || []) url.searchParams.append(key, value);
    const headers = { accept: "application/json" };
    if (tag) headers["if-none-match"] = tag;
    // A request the page preloaded (the first table and chart) is made as the preload was, to take its answer.
    const preloaded = !tag && preloads.delete(url.pathname + url.search);
    const response = await (preloaded ? fetch(url, { credentials: "same-origin" }) : fetch(url, { headers, cache: "no-store" }));
    if (response.status === 304) return null; // unchanged since `tag`
    const body = await response.json();
    if (!response.ok) throw new Error(body.message || response.statusText);
    if (tag !== undefined) body.etag = response.headers.get("etag");
    return body;
  }

  // The URLs the page preloaded (each taken once).
  const preloads = new Set(
    Array.from(document.querySelectorAll('link[rel=preload][as=fetch]')).map((link) => {
      const url = new URL(link.href);
      return url.pathname + url.search;
    })
  );

  function fromReport(path, params) {
    const get = (name) => (params.find(([k]) => k === name) || [])[1];
    if (path === "/api/runs") return REPORT.runs;
    if (path === "/api/figure") return REPORT.figures[get("metric")] || { data: [], layout: {} };
    if (path === "/api/groups") return REPORT.groups;
    if (path === "/api/sweep") return REPORT.sweep[get("kind") || "parcoords"];
    if (path === "/api/diff") return null;
    return null;
  }

  function column(name) {
    return state.runs.columns.indexOf(name);
  }

  function cellValue(row, name) {
    const at = column(name);
    return at < 0 ? null : row[at];
  }

  function shortName(name) {
    if (name.startsWith("parameters.")) return name.slice("parameters.".length);
    if (name.startsWith("metrics.")) return name.slice("metrics.".length);
    return name;
  }

  function formatValue(name, value) {
    if (value === null || value === undefined) return "";
    if (TIME_COLUMNS.has(name)) {
      // ISO 8601 with the offset (the catalog's times): shown in the viewer's time zone.
      const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
      return isNaN(date.getTime()) ? String(value) : date.toLocaleString();
    }
    if (Array.isArray(value)) return value.map((v) => formatValue("", v)).join("; ");
    if (typeof value === "object") return Object.keys(value).length ? JSON.stringify(value) : "";
    if (typeof value === "number") {
      if (Number.isInteger(value)) return String(value);
      const text = value.toPrecision(6);
      return text.includes("e") ? text : String(Number(text));
    }
    return String(value);
  }

  function statusClass(word) {
    return "status st-" + String(word || "").toLowerCase().replace(/[^a-z0-9-]/g, "");
  }

  // ------------------------------------------------------------------------------------------------ runs table
  function defaultColumns(payload) {
    // As unitrack view: name, status, the parameters that differ, the latest metrics, then the error (a failed
    // or damaged run's reason) and notes when a run has them.
    const varying = new Set(payload.varying.map((k) => "parameters." + k));
    const metrics = payload.metrics.slice(0, 8).map((k) => "metrics." + k);
    const shown = ["name", "status", "started"];
    for (const name of payload.columns) if (varying.has(name)) shown.push(name);
    const extra = ["error", "notes"].filter((name) => {
      const at = payload.columns.indexOf(name);
      return at >= 0 && payload.rows.some((row) => row[at] !== null && row[at] !== "" && !(Array.isArray(row[at]) && !row[at].length));
    });
    return shown.concat(metrics, extra);
  }

  function sortedRows() {
    const rows = state.runs.rows.slice();
    const { column: name, direction } = state.sort;
    if (!name) return rows;
    const at = column(name);
    rows.sort((a, b) => {
      const x = a[at];
      const y = b[at];
      if (x === y) return 0;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      if (typeof x === "number" && typeof y === "number") return (x - y) * direction;
      const p = typeof x === "object" ? formatValue(name, x) : String(x);
      const q = typeof y === "object" ? formatValue(name, y) : String(y);
      // Natural order ("run2" before "run10"); plain order breaks its ties ("lr0.1" vs "lr0.01").
      return (p.localeCompare(q, undefined, { numeric: true }) || (p < q ? -1 : p > q ? 1 : 0)) * direction;
    });
    return rows;
  }

  function renderColumnsChooser() {
    const box = clear($("columns-chooser"));
    for (const name of state.runs.columns) {
      if (name === "uid") continue;
      const label = el("label");
      const input = el("input");
      input.type = "checkbox";
      input.value = name;
      input.checked = state.visible.includes(name);
      input.addEventListener("change", () => {
        if (input.checked) state.visible.push(name);
        else state.visible = state.visible.filter((c) => c !== name);
        renderTable();
      });
      label.append(input, document.createTextNode(" " + name));
      box.append(label);
    }
  }

  function renderTable() {
    const table = $("runs");
    const head = clear(table.tHead);
    const body = clear(table.tBodies[0]);
    const headRow = el("tr");
    headRow.append(el("th", "✓"));
    for (const name of state.visible) {
      const th = el("th", shortName(name));
      th.title = name;
      th.dataset.column = name;
      if (state.sort.column === name) th.setAttribute("aria-sort", state.sort.direction > 0 ? "ascending" : "descending");
      th.addEventListener("click", () => {
        state.sort = { column: name, direction: state.sort.column === name ? -state.sort.direction : 1 };
        renderTable();
        refreshCharts();
      });
      headRow.append(th);
    }
    head.append(headRow);
    const rows = sortedRows();
    const generation = (state.tableGeneration = (state.tableGeneration || 0) + 1);
    const addRows = (from, to) => {
      const fragment = document.createDocumentFragment();
      for (const row of rows.slice(from, to)) fragment.append(tableRow(row));
      body.append(fragment);
    };
    // The first rows at once; the others in chunks when the page is idle, and on the first load only once the
    // first charts are drawn: every layout plotly.js forces while drawing would otherwise lay out thousands of
    // rows (a fifth of the time to the first chart on 1,000 runs).
    addRows(0, FIRST_ROWS);
    let at = FIRST_ROWS;
    const later = (task) => (window.requestIdleCallback ? window.requestIdleCallback(task, { timeout: 1000 }) : window.setTimeout(task, 0));
    const more = () => {
      if (generation !== state.tableGeneration || at >= rows.length) return;
      addRows(at, at + CHUNK_ROWS);
      at += CHUNK_ROWS;
      later(more);
    };
    if (at < rows.length) state.firstCharts.then(() => later(more));
    $("count").textContent = state.runs.count + " run(s)" + (state.selected.size ? ", " + state.selected.size + " selected" : "");
  }

  function tableRow(row) {
    const uid = row[0];
    const tr = el("tr");
    tr.dataset.uid = uid;
    if (state.selected.has(uid)) tr.classList.add("selected");
    const pick = el("td");
    const box = el("input");
    box.type = "checkbox";
    box.className = "select";
    box.checked = state.selected.has(uid);
    box.setAttribute("aria-label", "select run");
    box.addEventListener("change", () => {
      if (box.checked) state.selected.add(uid);
      else state.selected.delete(uid);
      tr.classList.toggle("selected", box.checked);
      refreshCharts();
    });
    pick.append(box);
    tr.append(pick);
    for (const name of state.visible) {
      const value = cellValue(row, name);
      const td = el("td");
      td.dataset.column = name;
      if (name === "name") {
        if (REPORT) td.textContent = String(value);
        else {
          const link = el("a", value);
          link.href = "#run/" + encodeURIComponent(uid);
          td.append(link);
        }
      } else if (name === "status") {
        td.append(el("span", value, statusClass(value)));
      } else {
        td.textContent = formatValue(name, value);
        if (typeof value === "number") td.className = "num";
      }
      tr.append(td);
    }
    return tr;
  }

  function filterParams() {
    if (REPORT) return [];
    const params = [];
    for (const part of $("filter").value.split(";")) if (part.trim()) params.push(["filter", part.trim()]);
    return params;
  }

  async function loadRuns(initial) {
    const params = filterParams();
    const key = JSON.stringify(params);
    let payload;
    try {
      // A poll sends the last answer's ETag: when no run changed, the server answers 304 and nothing is parsed.
      const tag = !initial && state.runs && state.runsKey === key ? state.runsTag : null;
      payload = await api("/api/runs", params, tag);
      notice("");
    } catch (error) {
      notice(String(error.message || error));
      return;
    }
    if (payload === null) {
      if (chartSignature() !== state.chartSignature) refreshCharts();
      return;
    }
    state.runsTag = payload.etag || null;
    state.runsKey = key;
    state.runs = payload;
    state.byUid = new Map(payload.rows.map((row) => [row[0], row]));
    for (const uid of Array.from(state.selected)) if (!state.byUid.has(uid)) state.selected.delete(uid);
    $("source").textContent = payload.source || "";
    if (initial || !state.visible) {
      state.visible = defaultColumns(payload);
      renderControls();
    } else {
      state.visible = state.visible.filter((c) => payload.columns.includes(c));
      syncMetricChoices();
    }
    renderTable();
    renderColumnsChooser();
    if (initial) refreshCharts(true);
    else if (chartSignature() !== state.chartSignature) refreshCharts();
  }

  // ------------------------------------------------------------------------------------------------ charts
  function chartedUids() {
    const rows = sortedRows();
    const picked = rows.filter((row) => state.selected.has(row[0]));
    return (picked.length ? picked : rows.slice(0, DEFAULT_CHARTED)).map((row) => row[0]);
  }

  function chartSignature() {
    const parts = [];
    for (const uid of chartedUids()) {
      const row = state.byUid.get(uid);
      // A running run's points arrive between catalog updates: its charts are redrawn on every poll.
      if (cellValue(row, "status") === "running") parts.push("running@" + Date.now());
      const values = [uid, cellValue(row, "status")];
      for (const metric of state.metrics) values.push(cellValue(row, "metrics." + metric));
      parts.push(JSON.stringify(values));
    }
    return parts.join("|") + "|" + state.metrics.join(",");
  }

  function renderControls() {
    const choices = clear($("metric-choices"));
    if (!state.metrics.length && state.runs.metrics.length) {
      state.metrics = [state.runs.metrics.find((m) => /loss/i.test(m)) || state.runs.metrics[0]];
    }
    if (REPORT && REPORT.settings.metrics) state.metrics = REPORT.settings.metrics.slice();
    for (const metric of (REPORT ? Object.keys(REPORT.figures) : state.runs.metrics)) {
      const label = el("label");
      const input = el("input");
      input.type = "checkbox";
      input.value = metric;
      input.className = "metric-choice";
      input.checked = state.metrics.includes(metric);
      input.addEventListener("change", () => {
        state.metrics = Array.from(document.querySelectorAll(".metric-choice")).filter((i) => i.checked).map((i) => i.value);
        refreshCharts(true);
      });
      label.append(input, document.createTextNode(" " + metric));
      choices.append(label);
    }
    const groupBy = clear($("group-by"));
    const none = el("option", "(none)");
    none.value = "";
    const allButSeed = el("option", "all but seed");
    allButSeed.value = "*-seed";
    groupBy.append(none, allButSeed);
    for (const key of state.runs.parameters) {
      const option = el("option", key);
      option.value = key;
      groupBy.append(option);
    }
    groupBy.size = Math.min(4, state.runs.parameters.length + 2);
    const sweepMetric = clear($("sweep-metric"));
    for (const metric of state.runs.metrics) sweepMetric.append(el("option", metric));
    if (state.metrics.length) sweepMetric.value = state.metrics[0];
    const sweepParam = clear($("sweep-param"));
    for (const key of state.runs.varying.concat(state.runs.parameters.filter((k) => !state.runs.varying.includes(k)))) {
      sweepParam.append(el("option", key));
    }
    if (REPORT) {
      for (const id of ["filter", "x-axis", "smoothing", "log-y", "legend", "group-by", "band", "sweep-metric", "sweep-param", "columns-button"]) {
        $(id).disabled = true;
      }
    }
  }

  function syncMetricChoices() {
    const known = new Set(Array.from(document.querySelectorAll(".metric-choice")).map((i) => i.value));
    if (state.runs.metrics.some((m) => !known.has(m))) renderControls();
  }

  function groupBy() {
    if (REPORT) return REPORT.settings.group_by;
    return Array.from($("group-by").selectedOptions).map((o) => o.value).filter((v) => v);
  }

  function figureParams(metric, uids) {
    const params = [["metric", metric], ["x", $("x-axis").value], ["smooth", $("smoothing").value], ["log", $("log-y").checked ? "1" : "0"], ["band", $("band").value], ["points", "2000"]];
    if ($("legend").value.trim()) params.push(["legend", $("legend").value]);
    for (const key of groupBy()) params.push(["group_by", key]);
    for (const uid of uids) params.push(["uid", uid]);
    const zoom = state.zoom.get(metric);
    if (zoom && $("x-axis").value === "step") params.push(["step_min", String(zoom[0])], ["step_max", String(zoom[1])]);
    return params;
  }

  function typed(value) {
    // Long lines arrive as base64 float64 (exact, and fast to encode and parse): decoded to Float64Array.
    if (!value || typeof value !== "object" || value.dtype !== "f8" || typeof value.bdata !== "string") return value;
    const text = window.atob(value.bdata);
    const bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    return new Float64Array(bytes.buffer);
  }

  function live(uids) {
    // A running run's points arrive between catalog updates: a chart of one is redrawn on every poll.
    return uids.some((uid) => state.byUid.has(uid) && cellValue(state.byUid.get(uid), "status") === "running");
  }

  async function drawFigure(div, params, key, figure) {
    if (!figure) figure = await api("/api/figure", params);
    for (const trace of figure.data || []) {
      trace.x = typed(trace.x);
      trace.y = typed(trace.y);
    }
    const layout = Object.assign({}, figure.layout);
    if (!window.Plotly) await state.plotlyReady;
    await window.Plotly.react(div, figure.data, layout, { responsive: true, displaylogo: false });
    div.dataset.key = key || JSON.stringify(params);
    div.dataset.drawn = String(Number(div.dataset.drawn || 0) + 1);
    return figure;
  }

  function controls() {
    // What a chart shows besides its metric and runs (axis, smoothing, legend, groups, zoom).
    return JSON.stringify(figureParams(null, []).filter(([k]) => k !== "metric"));
  }

  function firstParams() {
    // The default view's first chart (no selection: the first runs of the listing), asked for without a metric:
    // the server charts the default one (the first metric with "loss" in its name, else the first).
    return figureParams(null, []).filter(([k]) => k !== "metric").concat(filterParams(), [["limit", String(DEFAULT_CHARTED)]]);
  }

  async function firstFigure(metric, uids) {
    // The first chart was asked for beside the table: it is drawn when it shows what the table now asks for
    // (the same metric, runs and controls), so nothing is fetched twice.
    const first = state.first;
    state.first = null;
    if (!first) return null;
    const figure = await first.figure;
    const meta = (figure && figure.layout && figure.layout.meta) || {};
    const same = meta.metric === metric && JSON.stringify(meta.uids || []) === JSON.stringify(uids) && first.controls === controls();
    return same ? figure : null;
  }

  function chartDiv(container, metric, index) {
    let div = container.querySelector('[data-index="' + index + '"]');
    if (!div) {
      div = el("div", null, "chart");
      div.dataset.index = String(index);
      div.id = "chart-" + index;
      container.append(div);
    }
    div.dataset.metric = metric;
    return div;
  }

  function watchZoom(div) {
    if (div.dataset.zoomWatched || REPORT) return;
    div.dataset.zoomWatched = "1";
    div.on("plotly_relayout", (event) => {
      if ($("x-axis").value !== "step") return;
      const metric = div.dataset.metric;
      if (event["xaxis.autorange"]) state.zoom.delete(metric);
      else if (event["xaxis.range[0]"] !== undefined) state.zoom.set(metric, [event["xaxis.range[0]"], event["xaxis.range[1]"]]);
      else return;
      // Zooming refetches the exact points of the range (downsampled again to the chart's width).
      drawFigure(div, figureParams(metric, chartedUids())).catch((error) => notice(String(error.message || error)));
    });
  }

  // Settled once the first charts are drawn (or could not be), or after FIRST_CHARTS_WAIT_MS at the latest.
  state.firstCharts = new Promise((resolve) => {
    state.firstChartsDone = resolve;
    window.setTimeout(resolve, FIRST_CHARTS_WAIT_MS);
  });

  async function refreshCharts(full) {
    if (!state.runs) return;
    if (state.busy) {
      // One refresh at a time: a request made meanwhile runs once the current one is done.
      state.pending = full || state.pending === "full" ? "full" : "yes";
      return;
    }
    state.busy = true;
    try {
      await drawCharts(full);
    } finally {
      state.busy = false;
      state.firstChartsDone();
    }
    if (state.pending) {
      const again = state.pending === "full";
      state.pending = null;
      refreshCharts(again);
    }
  }

  async function drawCharts(full) {
    state.chartSignature = chartSignature();
    const uids = chartedUids();
    const container = $("charts");
    const metrics = state.metrics;
    const nonce = live(uids) ? "@" + Date.now() : "";
    for (const div of Array.from(container.children)) if (Number(div.dataset.index) >= metrics.length) div.remove();
    $("chart-note").textContent = uids.length ? (state.selected.size ? "" : "No run selected: charts show the first " + uids.length + " runs of the table.") : "No runs.";
    try {
      await Promise.all(
        metrics.map(async (metric, index) => {
          const div = chartDiv(container, metric, index);
          const params = figureParams(metric, uids);
          const key = JSON.stringify(params) + nonce;
          if (div.dataset.key === key) return; // drawn already, and nothing it shows changed
          const figure = index === 0 ? await firstFigure(metric, uids) : null;
          await drawFigure(div, params, key, figure);
          watchZoom(div);
        })
      );
      if (full) requestSweep();
      await Promise.all([renderGroups(uids), renderDiff()]);
    } catch (error) {
      notice(String(error.message || error));
    }
  }

  async function renderGroups(uids) {
    const keys = groupBy();
    const wrap = $("groups-wrap");
    if (!keys.length) {
      wrap.hidden = true;
      wrap.dataset.key = "";
      return;
    }
    const params = keys.map((k) => ["group_by", k]).concat(uids.map((u) => ["uid", u])).concat(state.metrics.map((m) => ["metric", m]));
    const key = JSON.stringify(params) + state.runsTag; // the latest values change with the catalog
    if (!REPORT && wrap.dataset.key === key) return;
    const payload = await api("/api/groups", params);
    const table = clear($("groups"));
    const head = el("tr");
    for (const name of payload.columns) head.append(el("th", name));
    table.append(head);
    for (const row of payload.rows) {
      const tr = el("tr");
      tr.append(el("td", row[0]), el("td", row[1], "num"));
      for (const cell of row.slice(2)) {
        // view --group-by's statistics: mean ± std (std only over two runs or more), the count when some lack it.
        let text = cell.mean === null ? "" : formatValue("", cell.mean);
        if (cell.mean !== null && cell.std !== null) text += " ± " + formatValue("", cell.std);
        if (cell.mean !== null && cell.n !== row[1]) text += " (" + cell.n + ")";
        tr.append(el("td", text, "num"));
      }
      table.append(tr);
    }
    wrap.hidden = false;
    wrap.dataset.key = key;
  }

  async function renderDiff() {
    const wrap = $("diff-wrap");
    if (state.selected.size < 2 || REPORT) {
      wrap.hidden = true;
      wrap.dataset.key = "";
      return;
    }
    const uids = chartedUids();
    const key = JSON.stringify(uids) + state.runsTag;
    if (wrap.dataset.key === key) return;
    const payload = await api("/api/diff", uids.map((u) => ["uid", u]));
    const table = clear($("diff"));
    const head = el("tr");
    head.append(el("th", "parameter"));
    for (const run of payload.runs) head.append(el("th", run.name));
    table.append(head);
    const rows = payload.parameters.slice().sort((a, b) => Number(b.differs) - Number(a.differs));
    for (const row of rows) {
      const tr = el("tr", null, row.differs ? "differs" : "");
      tr.append(el("td", row.key));
      for (const value of row.values) tr.append(el("td", formatValue("", value)));
      table.append(tr);
    }
    wrap.hidden = false;
    wrap.dataset.key = key;
  }

  function requestSweep() {
    // The sweep view (parallel coordinates of every run: heavy for thousands) is drawn when it is on screen.
    state.sweepStale = true;
    maybeSweep();
  }

  function maybeSweep() {
    if (!state.sweepStale || !state.sweepVisible) return;
    state.sweepStale = false;
    renderSweep().catch((e) => notice(String(e.message || e)));
  }

  async function renderSweep() {
    if (!state.runs.metrics.length) return;
    const metric = $("sweep-metric").value;
    const filters = filterParams();
    const [parcoords, scatter] = await Promise.all([
      api("/api/sweep", [["kind", "parcoords"], ["metric", metric]].concat(filters)),
      api("/api/sweep", [["kind", "scatter"], ["metric", metric], ["param", $("sweep-param").value]].concat(filters)),
    ]);
    if (!window.Plotly) await state.plotlyReady;
    if (parcoords) await window.Plotly.react($("parcoords"), parcoords.data, parcoords.layout, { responsive: true, displaylogo: false });
    if (scatter) await window.Plotly.react($("scatter"), scatter.data, scatter.layout, { responsive: true, displaylogo: false });
  }

  // ------------------------------------------------------------------------------------------------ run page
  function keyValueTable(table, values) {
    clear(table);
    const entries = Object.entries(values || {});
    if (!entries.length) {
      const row = el("tr");
      row.append(el("td", "none", "muted"));
      table.append(row);
    }
    for (const [key, value] of entries) {
      const tr = el("tr");
      tr.append(el("th", key), el("td", typeof value === "object" && value !== null ? JSON.stringify(value) : formatValue("", value)));
      table.append(tr);
    }
  }

  async function showRun(uid) {
    $("main").hidden = true;
    $("run-view").hidden = false;
    let run;
    try {
      run = await api("/api/runs/" + encodeURIComponent(uid));
    } catch (error) {
      $("run-name").textContent = String(error.message || error);
      return;
    }
    document.title = "unitrack · " + run.name;
    $("run-name").textContent = run.name;
    const status = $("run-status");
    status.textContent = run.status;
    status.className = statusClass(run.status);
    $("run-uid").textContent = run.uid;
    $("run-description").textContent = run.description || "";
    keyValueTable($("run-parameters"), run.parameters);
    keyValueTable($("run-tags"), run.tags);
    keyValueTable($("run-checkpoints"), run.checkpoints);
    const history = clear($("run-history"));
    for (const event of run.history) {
      const tr = el("tr");
      tr.append(el("td", event.status), el("td", formatValue("started", event.time)));
      history.append(tr);
    }
    const notes = clear($("run-notes"));
    for (const note of run.notes) notes.append(el("li", note));
    if (!run.notes.length) notes.append(el("li", "none", "muted"));
    $("run-damage-wrap").hidden = !run.damage;
    $("run-damage-file").textContent = run.damage ? run.damage.file : "";
    $("run-damage-reason").textContent = run.damage ? run.damage.reason : "";
    // A failed run's traceback (or the last line of its error when no traceback was kept).
    const errors = run.errors.length ? run.errors : run.error && !run.damage ? [run.error] : [];
    $("run-error-wrap").hidden = !errors.length;
    $("run-error").textContent = errors.join("\n\n");
    $("run-log-wrap").hidden = run.log === null;
    $("run-log").textContent = run.log || "(empty)";
    $("run-metadata").textContent = JSON.stringify(run.metadata, null, 2);
    const charts = clear($("run-charts"));
    await Promise.all(
      Object.keys(run.metrics).map(async (metric, index) => {
        const div = el("div", null, "chart");
        div.id = "run-chart-" + index;
        div.dataset.metric = metric;
        charts.append(div);
        await drawFigure(div, [["metric", metric], ["uid", run.uid], ["points", "2000"]]);
      })
    );
  }

  function route() {
    const hash = window.location.hash;
    if (hash.startsWith("#run/") && !REPORT) {
      showRun(decodeURIComponent(hash.slice(5)));
      return;
    }
    $("run-view").hidden = true;
    $("main").hidden = false;
    document.title = "unitrack";
  }

  // ------------------------------------------------------------------------------------------------ start
  function start() {
    $("filter").addEventListener("keydown", (event) => {
      if (event.key === "Enter") loadRuns(false).then(requestSweep);
    });
    $("columns-button").addEventListener("click", () => {
      $("columns-chooser").hidden = !$("columns-chooser").hidden;
    });
    $("clear-selection").addEventListener("click", () => {
      state.selected.clear();
      renderTable();
      refreshCharts();
    });
    for (const id of ["x-axis", "log-y", "group-by", "band"]) $(id).addEventListener("change", () => { state.zoom.clear(); refreshCharts(); });
    $("legend").addEventListener("change", () => refreshCharts());
    $("smoothing").addEventListener("change", () => refreshCharts());
    $("smoothing").addEventListener("input", () => { $("smoothing-value").textContent = $("smoothing").value; });
    $("sweep-metric").addEventListener("change", () => renderSweep().catch((e) => notice(String(e.message || e))));
    $("sweep-param").addEventListener("change", () => renderSweep().catch((e) => notice(String(e.message || e))));
    window.addEventListener("hashchange", route);
    new IntersectionObserver((entries) => {
      state.sweepVisible = entries.some((entry) => entry.isIntersecting);
      maybeSweep();
    }).observe($("sweep-view"));
    if (REPORT) {
      const filter = $("filter");
      filter.placeholder = "report of " + (REPORT.runs.source || "") + (REPORT.settings.filters.length ? " filtered by " + REPORT.settings.filters.join("; ") : "");
      $("group-by").value = "";
    }
    if (!REPORT && !window.location.hash.startsWith("#run/")) {
      // The first chart is asked for at once, beside the table, rather than after it.
      state.first = { figure: api("/api/figure", firstParams()).catch(() => null), controls: controls() };
    }
    loadRuns(true).then(route);
    if (!REPORT) {
      window.setInterval(() => {
        if (document.hidden || !$("run-view").hidden) return;
        loadRuns(false);
      }, POLL_MS);
    }
  }

  // plotly.js loads asynchronously: the table is fetched and drawn while the browser compiles it (or takes its
  // compiled code from the cache), and charts wait for it. In a report it is inline, before this script.
  state.plotlyReady = new Promise((resolve) => {
    const script = document.getElementById("plotly-js");
    if (window.Plotly || !script) resolve();
    else {
      script.addEventListener("load", () => resolve());
      script.addEventListener("error", () => notice("plotly.js could not be loaded: charts cannot be drawn"));
    }
  });
  start();
})();
