// Millrace dashboard: a small single-page app over the JSON API.
// Routing uses the URL fragment (#/topic/NAME) so the server only serves "/". Live data
// comes from one EventSource (/api/events, one update a second); each page re-renders
// from it, and pages with more detail re-fetch their own endpoint on each update.
"use strict";

const app = document.getElementById("app");
const statusEl = document.getElementById("status");
const HISTORY = 300; // points kept for client-side charts (five minutes at 1/s)

// --- helpers ---------------------------------------------------------------------------

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
  }[c]));
}

function fmtNum(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  if (typeof n !== "number") return esc(n);
  if (Math.abs(n) >= 1000) return n.toLocaleString("en-US", { maximumFractionDigits: 0 });
  return Number.isInteger(n) ? String(n) : n.toFixed(n < 1 ? 3 : 1);
}

function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
}

// Internal topics: the broker's own (`__consumer_offsets`) and those stream jobs keep for
// themselves (`<app>-<store>-changelog`, `<app>-repartition`, as in Kafka Streams).
function isInternal(topic) {
  return Boolean(topic.internal) || topic.name.startsWith("__")
    || /-(changelog|repartition)$/.test(topic.name);
}

// Wall-clock time of day, HH:MM:SS in the browser's time zone.
function clockTime(ms) {
  return new Date(ms).toLocaleTimeString("en-GB", { hour12: false });
}

function fmtTime(ms) {
  if (!ms || ms < 0) return "–";
  return new Date(ms).toISOString().replace("T", " ").replace("Z", "");
}

// A cell: numbers right-aligned, window bounds as times, nested values compact.
function cell(value, column) {
  if (typeof value === "number") {
    if ((column === "window_start" || column === "window_end") && value > 1e11) {
      return `<td>${esc(fmtTime(value).slice(0, 19))}</td>`;
    }
    return `<td class="num">${fmtNum(value)}</td>`;
  }
  return `<td>${esc(compact(value))}</td>`;
}

// Lists of objects (such as also-viewed {page, score}) as "a (0.9), b (0.4)".
function compact(value) {
  if (value === null || value === undefined) return "";
  if (Array.isArray(value)) {
    return value.map((item) => {
      if (item && typeof item === "object" && !Array.isArray(item)) {
        const vals = Object.values(item);
        const text = vals.find((v) => typeof v === "string");
        const num = vals.find((v) => typeof v === "number");
        if (text !== undefined && num !== undefined) return `${text} (${fmtNum(num)})`;
      }
      return compact(item);
    }).join(", ");
  }
  if (typeof value === "object") {
    return Object.entries(value).map(([k, v]) => `${k}=${compact(v)}`).join(" ");
  }
  return String(value);
}

// What /api/session said: login mode, who is logged in, whether admin actions are allowed.
let sessionInfo = { login: false, user: null, allow_admin: false, authenticated: true };

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (e) {
    throw new Error(`cannot reach the dashboard: ${e.message}`);
  }
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) {
    const message = body && body.error ? body.error : `${response.status} ${response.statusText}`;
    // A session that ended (logout elsewhere, idle expiry, restart) goes back to the form.
    if (response.status === 401 && sessionInfo.login && path !== "/api/login") {
      showLogin("Your session ended: log in again.");
    }
    throw new Error(message);
  }
  return body;
}

// JSON request with a body (POST, PUT, DELETE).
function send(method, path, body) {
  return api(path, { method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

function errorBox(error) {
  return `<div class="error" role="alert">${esc(error.message || error)}</div>`;
}

// --- charts -----------------------------------------------------------------------------

// uPlot line charts, kept per element id so live updates reuse them.
const plots = new Map();

// The newest non-null value of a series.
function latest(values) {
  for (let i = values.length - 1; i >= 0; i--) if (values[i] !== null && values[i] !== undefined) return values[i];
  return null;
}

// Tick steps of the time axis, in seconds: never below a second, so a short history reads
// 22:10:05 22:10:06 rather than :05.000 :05.500.
const TIME_INCRS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400];

// `options.points`: indexes of series drawn as markers only (alerts); `options.unit`
// follows each value in the legend.
function lineChart(id, title, seriesNames, xs, ys, options = {}) {
  const el = document.getElementById(id);
  if (!el) return;
  el.dataset.points = String(xs.length);
  el.dataset.last = ys.length && ys[0].length ? String(ys[0][ys[0].length - 1]) : "";
  if (typeof uPlot === "undefined") {
    el.innerHTML = `<p class="muted">charts unavailable</p>`;
    return;
  }
  const data = [xs.map((x) => x / 1000), ...ys];
  const existing = plots.get(id);
  const signature = seriesNames.join("\u0000");
  if (existing && existing.el === el && existing.names === signature) {
    existing.plot.setData(data);
    // Away from the cursor the legend shows each series' latest value (not "--").
    existing.plot.setLegend({ idx: existing.plot.cursor.idx ?? null });
    return;
  }
  if (existing) existing.plot.destroy();
  el.innerHTML = "";
  // No red among the series: red marks alerts.
  const palette = ["#1f6feb", "#e8590c", "#2e7d32", "#8e24aa", "#f9a825", "#00838f", "#6d4c41", "#546e7a"];
  const width = Math.max(320, el.clientWidth || 600);
  const unit = options.unit || "";
  const markers = new Set(options.points || []);
  const plot = new uPlot({
    title, width, height: 220,
    series: [
      { value: (u, v) => clockTime(1000 * (v ?? latest(u.data[0]) ?? 0)) },
      ...seriesNames.map((name, i) => ({
        label: name,
        stroke: markers.has(i) ? "#d00000" : palette[i % palette.length],
        width: markers.has(i) ? 0 : 1.5,
        spanGaps: !markers.has(i),
        ...(markers.has(i) ? { paths: () => null, points: { show: true, size: 10, fill: "#d00000" } } : {}),
        // With no cursor on the chart uPlot asks with idx null: show the latest value.
        value: (u, v, sidx, idx) => {
          const shown = idx === null || idx === undefined ? latest(u.data[sidx]) : v;
          return shown === null || shown === undefined ? "–" : fmtNum(shown) + unit;
        },
      })),
    ],
    axes: [
      { incrs: TIME_INCRS, values: (u, splits) => splits.map((s) => clockTime(s * 1000)), space: 70 },
      { size: 60 },
    ],
    scales: { x: { time: true } },
  }, data, el);
  plot.setLegend({ idx: null });
  plots.set(id, { plot, el, names: signature });
}

function dropPlot(id) {
  const existing = plots.get(id);
  if (existing) { existing.plot.destroy(); plots.delete(id); }
}

// A horizontal bar chart in SVG: the top rows of a table by one numeric column.
function barChart(items) {
  if (!items.length) return `<p class="muted">no rows yet</p>`;
  const max = Math.max(...items.map((i) => i.value), 0) || 1;
  const rowH = 22, labelW = 180, width = 640;
  const bars = items.map((item, i) => {
    const w = Math.max(1, (width - labelW - 70) * (item.value / max));
    const y = i * rowH;
    return `<text x="${labelW - 6}" y="${y + 15}" text-anchor="end">${esc(String(item.label).slice(0, 28))}</text>`
      + `<rect x="${labelW}" y="${y + 4}" width="${w.toFixed(1)}" height="${rowH - 8}" rx="2"></rect>`
      + `<text x="${labelW + w + 6}" y="${y + 15}">${fmtNum(item.value)}</text>`;
  }).join("");
  const signature = items.map((i) => `${i.label}=${i.value}`).join(";");
  return `<svg class="bars" data-signature="${esc(signature)}" width="${width}" height="${items.length * rowH}" viewBox="0 0 ${width} ${items.length * rowH}">${bars}</svg>`;
}

// --- live state -------------------------------------------------------------------------

const live = {
  update: null,          // last /api/events payload
  rates: new Map(),      // topic -> [[ts], [rate]] for the overview chart
  lags: new Map(),       // group -> [[ts], [lag]] for the groups chart
  lagSeconds: new Map(), // group -> [[ts], [seconds behind, estimated]]
};

// How far behind a group is in time, estimated: its lag over the rate its topics are
// written at now (the time the producers took to write what the group has not read).
// Null when nothing is written and something is unread.
function secondsBehind(group, topics) {
  if (!group.lag) return 0;
  const rate = (group.topics || []).reduce((sum, name) => {
    const topic = topics.find((t) => t.name === name);
    return sum + (topic && topic.rate ? topic.rate : 0);
  }, 0);
  return rate > 0 ? group.lag / rate : null;
}

function fmtSeconds(s) {
  if (s === null || s === undefined) return "–";
  if (s < 120) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 7200) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function remember(map, key, ts, value) {
  let series = map.get(key);
  if (!series) { series = [[], []]; map.set(key, series); }
  series[0].push(ts);
  series[1].push(value);
  if (series[0].length > HISTORY) { series[0].shift(); series[1].shift(); }
}

function connect() {
  const source = new EventSource("/api/events");
  source.addEventListener("update", (event) => {
    let update;
    try { update = JSON.parse(event.data); } catch (_) { return; }
    live.update = update;
    for (const t of update.topics || []) remember(live.rates, t.name, update.ts, t.rate);
    for (const g of update.groups || []) {
      remember(live.lags, g.group_id, update.ts, g.lag);
      remember(live.lagSeconds, g.group_id, update.ts, secondsBehind(g, update.topics || []));
    }
    if (update.last_error) {
      statusEl.textContent = "cluster: " + update.last_error.slice(0, 60);
      statusEl.className = "status down";
    } else {
      statusEl.textContent = "live " + new Date(update.ts).toLocaleTimeString();
      statusEl.className = "status live";
    }
    refresh(false);
  });
  source.onerror = async () => {
    statusEl.textContent = "disconnected, retrying…";
    statusEl.className = "status down";
    // In login mode the stream also ends with the session: then show the form instead of
    // retrying for ever.
    if (sessionInfo.login && !loginShown) {
      const now = await api("/api/session").catch(() => null);
      if (now && !now.authenticated) {
        source.close();
        showLogin("Your session ended: log in again.");
      }
    }
  };
}

// --- pages ------------------------------------------------------------------------------

const pages = {};
let current = { name: null, arg: null, state: {} };
let rendering = false;

function route() {
  const hash = decodeURIComponent(location.hash.replace(/^#/, "")) || "/";
  const parts = hash.split("/").filter(Boolean);
  const name = parts[0] || "overview";
  const arg = parts.slice(1).join("/") || null;
  return { name: pages[name] ? name : "notfound", arg };
}

function navigate() {
  const { name, arg } = route();
  for (const link of document.querySelectorAll("header nav a")) {
    const page = link.dataset.page;
    link.classList.toggle("active", page === name || (page === "overview" && (name === "topic" || name === "messages")) || (page === "groups" && name === "group"));
  }
  for (const { plot } of plots.values()) plot.destroy();
  plots.clear();
  current = { name, arg, state: {} };
  app.innerHTML = `<p class="muted">Loading…</p>`;
  refresh(true);
}

// Renders the current page; `first` is true on navigation (pages set up their forms).
async function refresh(first) {
  if (loginShown) return; // the login form stays until the user logs in
  if (rendering && !first) return; // a slow fetch: skip this tick rather than pile up
  rendering = true;
  const page = current;
  try {
    await pages[page.name](page, first);
  } catch (error) {
    if (page === current && !loginShown) {
      const box = document.getElementById("page-error");
      if (box) box.innerHTML = errorBox(error); else app.innerHTML = errorBox(error);
    }
  } finally {
    rendering = false;
  }
}

pages.notfound = async () => {
  app.innerHTML = errorBox("No such page. Use the links above.");
};

pages.overview = async (page, first) => {
  const [cluster, topics] = await Promise.all([api("/api/cluster"), live.update && !first ? Promise.resolve({ topics: live.update.topics }) : api("/api/topics")]);
  if (page !== current) return;
  const showInternal = page.state.internal || false;
  const list = topics.topics.filter((t) => showInternal || !isInternal(t));
  const totalRate = list.reduce((s, t) => s + (t.rate || 0), 0);
  const html = `
    <h1>Overview</h1>
    <div id="page-error"></div>
    <div class="cards">
      <div class="card"><div class="label">Cluster</div><div class="value" style="font-size:13px">${esc(cluster.cluster_id || "–")}</div></div>
      <div class="card"><div class="label">Brokers</div><div class="value">${cluster.brokers.length}</div></div>
      <div class="card"><div class="label">Topics</div><div class="value">${cluster.topics}</div></div>
      <div class="card"><div class="label">Partitions</div><div class="value">${cluster.partitions}</div></div>
      <div class="card"><div class="label">Groups</div><div class="value">${cluster.groups}</div></div>
      <div class="card"><div class="label">Produce rate</div><div class="value" id="total-rate">${fmtNum(totalRate)}/s</div></div>
      <div class="card"><div class="label">Jobs</div><div class="value">${cluster.jobs.length}</div></div>
    </div>
    ${cluster.last_error ? errorBox("Cluster sampling failed: " + cluster.last_error) : ""}
    ${(cluster.notes || []).map((n) => `<p class="muted">${esc(n)}</p>`).join("")}
    <div class="panel"><div id="rate-chart" class="chart"></div></div>
    <div class="panel">
      <div class="toolbar"><h2 style="margin:0;flex:1">Topics</h2>
        <label title="__consumer_offsets and the jobs' changelog and repartition topics"><input type="checkbox" id="show-internal" ${showInternal ? "checked" : ""}> internal topics</label></div>
      <table id="topics-table">
        <thead><tr><th>Topic</th><th class="num">Partitions</th><th class="num">Messages</th><th class="num">Size</th><th class="num">Rate (msg/s)</th><th></th></tr></thead>
        <tbody>${list.map((t) => `<tr data-topic="${esc(t.name)}">
          <td><a href="#/topic/${encodeURIComponent(t.name)}">${esc(t.name)}</a>${isInternal(t) ? ' <span class="chip">internal</span>' : ""}</td>
          <td class="num">${t.partitions}</td><td class="num messages">${fmtNum(t.messages)}</td>
          <td class="num" title="${esc(t.size_note || "")}">${fmtBytes(t.size_bytes)}</td><td class="num">${fmtNum(t.rate)}</td>
          <td><a href="#/messages/${encodeURIComponent(t.name)}">browse</a></td></tr>`).join("")
          || `<tr><td colspan="6" class="muted">No topics yet.</td></tr>`}</tbody>
      </table>
    </div>
    <div class="panel"><h2>Brokers</h2><table id="brokers-table"><thead><tr><th>Id</th><th>Address</th><th>Rack</th><th>Role</th><th>State</th><th class="num">Leaders</th><th class="num">Under-replicated</th><th class="num">Requests/s</th><th class="num">Produce p99</th><th>Metrics</th></tr></thead>
      <tbody>${cluster.brokers.map((b) => { const m = b.endpoint || {}; const l = m.latest || {}; return `<tr><td>${b.id}</td><td>${esc(b.host)}:${b.port}</td><td>${esc(b.rack || "–")}</td><td>${b.controller ? "controller" : ""}</td><td>${b.fenced ? "fenced" : "alive"}</td><td class="num">${fmtNum(b.leader_partitions)}</td><td class="num">${fmtNum(b.under_replicated_partitions)}</td>
        <td class="num">${fmtNum(l.requests_per_sec)}</td><td class="num">${l.produce_p99_ms === undefined || l.produce_p99_ms === null ? "–" : fmtNum(l.produce_p99_ms) + " ms"}</td>
        <td>${m.metrics_url ? `<a href="${esc(m.metrics_url)}" target="_blank" rel="noopener">/metrics</a> · <a href="#/brokers">charts</a>` : '<span class="muted">–</span>'}</td></tr>`; }).join("")}</tbody></table>
      <p class="muted">Under-replicated partitions: ${fmtNum(cluster.under_replicated_partitions)} · offline partitions: ${fmtNum(cluster.offline_partitions)}</p></div>`;
  app.innerHTML = html;
  dropPlot("rate-chart");
  document.getElementById("show-internal").onchange = (e) => { page.state.internal = e.target.checked; refresh(true); };
  const names = list.filter((t) => live.rates.has(t.name)).map((t) => t.name).slice(0, 8);
  if (names.length) {
    const xs = live.rates.get(names[0])[0];
    const ys = names.map((n) => alignTo(xs, live.rates.get(n)));
    lineChart("rate-chart", "Produce rate (records/s)", names, xs, ys);
  } else {
    document.getElementById("rate-chart").innerHTML = `<p class="muted">The produce-rate chart fills in as live updates arrive.</p>`;
  }
};

// Values of `series` at the timestamps `xs` (null where missing).
function alignTo(xs, series) {
  const byTs = new Map(series[0].map((t, i) => [t, series[1][i]]));
  return xs.map((t) => (byTs.has(t) ? byTs.get(t) : null));
}

pages.topic = async (page) => {
  const name = page.arg;
  const topic = await api(`/api/topics/${encodeURIComponent(name)}`);
  if (page !== current) return;
  const hist = topic.history || [];
  const xs = [], rates = [];
  for (let i = 1; i < hist.length; i++) {
    const dt = (hist[i].ts - hist[i - 1].ts) / 1000;
    xs.push(hist[i].ts);
    rates.push(dt > 0 ? Math.max(0, (hist[i].end_offsets - hist[i - 1].end_offsets) / dt) : 0);
  }
  app.innerHTML = `
    <h1>Topic ${esc(topic.name)} ${topic.internal ? '<span class="chip">internal</span>' : ""}</h1>
    <div id="page-error"></div>
    <div class="cards">
      <div class="card"><div class="label">Partitions</div><div class="value">${topic.partitions.length}</div></div>
      <div class="card"><div class="label">Messages</div><div class="value">${fmtNum(topic.messages)}</div></div>
      <div class="card"><div class="label">Size</div>${topic.size_note ? `<div class="muted">${esc(topic.size_note)}</div>` : `<div class="value">${fmtBytes(topic.size_bytes)}</div>`}</div>
      <div class="card"><div class="label">Rate</div><div class="value">${fmtNum(topic.rate)}/s</div></div>
    </div>
    <p><a href="#/messages/${encodeURIComponent(topic.name)}">Browse messages →</a></p>
    <div class="panel"><div id="topic-chart" class="chart"></div></div>
    <div class="panel"><h2>Partitions</h2><table id="partitions-table"><thead><tr><th>Partition</th><th>Leader</th><th>Replicas</th><th>ISR</th><th class="num">Start</th><th class="num">End</th><th class="num" title="last stable offset: where read_committed consumers stop">LSO</th><th class="num" title="records between the last stable offset and the end, held back from read_committed consumers">LSO lag</th><th class="num" title="transactions open in this partition (DescribeProducers)">Open txns</th><th class="num">Messages</th><th class="num">Size</th><th class="num">Leader epoch</th></tr></thead>
      <tbody>${topic.partitions.map((p) => `<tr data-partition="${p.partition}"${p.under_replicated || p.leader < 0 ? ' class="warn"' : ""}><td>${p.partition}</td><td>${p.leader}</td><td>${p.replicas.join(", ")}</td><td>${p.isr.join(", ")}</td>
        <td class="num">${fmtNum(p.start_offset)}</td><td class="num">${fmtNum(p.end_offset)}</td><td class="num lso">${fmtNum(p.last_stable_offset)}</td><td class="num lso-lag">${fmtNum(Math.max(0, p.end_offset - p.last_stable_offset))}</td>
        <td class="num open-txns" title="${p.oldest_open_transaction_offset === null || p.oldest_open_transaction_offset === undefined ? "" : "oldest starts at offset " + p.oldest_open_transaction_offset}">${fmtNum(p.open_transactions)}</td><td class="num">${fmtNum(p.end_offset - p.start_offset)}</td><td class="num">${fmtBytes(p.size_bytes)}</td><td class="num">${p.leader_epoch}</td></tr>`).join("")}</tbody></table>
      ${topic.transactions_note ? `<p class="muted">Open transactions unknown: ${esc(topic.transactions_note)}</p>` : ""}</div>
    <div class="panel"><h2>Consumer groups</h2>${topic.groups.length ? `<table><thead><tr><th>Group</th><th class="num">Lag</th></tr></thead><tbody>${topic.groups.map((g) => `<tr><td><a href="#/group/${encodeURIComponent(g.group_id)}">${esc(g.group_id)}</a></td><td class="num">${fmtNum(g.lag)}</td></tr>`).join("")}</tbody></table>` : `<p class="muted">No group has committed offsets for this topic.</p>`}</div>
    <div class="panel"><h2>Configs</h2>${topic.configs ? `<table><thead><tr><th>Name</th><th>Value</th><th>Source</th></tr></thead><tbody>${topic.configs.map((c) => `<tr><td>${esc(c.name)}</td><td>${esc(c.value ?? "")}</td><td class="muted">${esc(c.source)}</td></tr>`).join("")}</tbody></table>` : `<p class="muted">Configs unavailable.</p>`}</div>`;
  dropPlot("topic-chart");
  if (xs.length) lineChart("topic-chart", "Produce rate (records/s)", ["rate"], xs, [rates]);
  else document.getElementById("topic-chart").innerHTML = `<p class="muted">The rate chart needs two samples.</p>`;
};

pages.messages = async (page, first) => {
  if (!first) return; // the browser reads on demand, not every second
  const name = page.arg;
  const topic = await api(`/api/topics/${encodeURIComponent(name)}`);
  if (page !== current) return;
  app.innerHTML = `
    <h1>Messages in <a href="#/topic/${encodeURIComponent(name)}">${esc(name)}</a></h1>
    <form class="inline panel" id="browse-form">
      <label class="field">Partition<select name="partition"><option value="">all</option>${topic.partitions.map((p) => `<option>${p.partition}</option>`).join("")}</select></label>
      <label class="field">From<select name="from"><option value="newest">newest</option><option value="offset">offset</option><option value="timestamp">time</option></select></label>
      <label class="field">Offset / time<input name="at" placeholder="e.g. 0 or 2026-11-26T10:00"></label>
      <label class="field">Limit<input name="limit" type="number" value="50" min="1" max="1000" style="width:80px"></label>
      <label class="field">Key contains<input name="key"></label>
      <label class="field">Value contains<input name="value"></label>
      <label class="field">Header (name or name=text)<input name="header"></label>
      <button type="submit">Read</button>
      <button type="button" class="secondary" id="browse-next" disabled>Next page</button>
    </form>
    <div id="page-error"></div>
    <div class="panel" id="browse-result"><p class="muted">Choose where to start and press Read.</p></div>`;
  const form = document.getElementById("browse-form");
  let nextOffsets = null;
  const read = async (fromNext) => {
    const data = new FormData(form);
    const params = new URLSearchParams();
    const partition = data.get("partition");
    if (partition) params.set("partition", partition);
    const from = data.get("from");
    const at = String(data.get("at") || "").trim();
    if (fromNext && nextOffsets && partition) {
      params.set("offset", nextOffsets[partition]);
    } else if (from === "offset") {
      params.set("offset", at || "0");
    } else if (from === "timestamp") {
      const ms = /^\d+$/.test(at) ? Number(at) : Date.parse(at);
      if (Number.isNaN(ms)) throw new Error("Give the time as milliseconds or as 2026-11-26T10:00");
      params.set("timestamp", String(ms));
    }
    params.set("limit", String(data.get("limit") || 50));
    for (const f of ["key", "value", "header"]) if (data.get(f)) params.set(f, data.get(f));
    document.getElementById("page-error").innerHTML = "";
    const result = await api(`/api/topics/${encodeURIComponent(name)}/messages?${params}`);
    nextOffsets = result.next_offsets;
    document.getElementById("browse-next").disabled = !partition || from === "newest";
    const rows = result.records.map((r) => {
      let value = r.value;
      if (r.value_encoding === "utf8") {
        try { value = JSON.stringify(JSON.parse(r.value), null, 1); } catch (_) { /* plain text */ }
      }
      return `<tr><td class="num">${r.partition}</td><td class="num">${r.offset}</td><td>${esc(fmtTime(r.timestamp))}</td>
        <td>${esc(r.key ?? "null")}</td><td><pre>${esc(value ?? "null")}</pre></td>
        <td>${r.headers.map((h) => `${esc(h.key)}=${esc(h.value ?? "")}`).join("<br>")}</td></tr>`;
    }).join("");
    document.getElementById("browse-result").innerHTML = `
      <p class="muted">${result.records.length} record(s), ${result.scanned} scanned.</p>
      <table id="messages-table"><thead><tr><th class="num">Partition</th><th class="num">Offset</th><th>Time (UTC)</th><th>Key</th><th>Value</th><th>Headers</th></tr></thead>
      <tbody>${rows || `<tr><td colspan="6" class="muted">No records match.</td></tr>`}</tbody></table>`;
  };
  const guarded = (fromNext) => read(fromNext).catch((e) => { document.getElementById("page-error").innerHTML = errorBox(e); });
  form.onsubmit = (e) => { e.preventDefault(); guarded(false); };
  document.getElementById("browse-next").onclick = () => guarded(true);
  guarded(false);
};

// Per-broker figures read from each broker's own metrics endpoint (`metrics.listener`),
// which the dashboard scrapes every couple of seconds.
pages.brokers = async (page) => {
  const [metrics, cluster] = await Promise.all([api("/api/brokers/metrics"), api("/api/brokers")]);
  if (page !== current) return;
  const byId = new Map(cluster.brokers.map((b) => [b.id, b]));
  const ms = (v) => (v === null || v === undefined ? "–" : fmtNum(v) + " ms");
  const readiness = (m) => m.ready === true ? "ready" : m.ready === false ? `<span title="${esc(m.ready_reason || "")}">not ready</span>` : "–";
  const rows = metrics.brokers.map((m) => {
    const b = byId.get(m.id) || {};
    const l = m.latest || {};
    const links = m.metrics_url
      ? `<a href="${esc(m.metrics_url)}" target="_blank" rel="noopener">metrics</a> · <a href="${esc(m.health_url)}" target="_blank" rel="noopener">health</a>`
      : `<span class="muted">${esc(m.error || "no endpoint")}</span>`;
    return `<tr data-broker="${m.id}"><td>${m.id}${b.controller ? ' <span class="chip">controller</span>' : ""}</td>
      <td>${b.fenced ? "fenced" : readiness(m)}</td>
      <td class="num requests">${fmtNum(l.requests_per_sec)}</td><td class="num">${ms(l.produce_p99_ms)}</td><td class="num">${ms(l.fetch_p99_ms)}</td>
      <td class="num">${fmtNum(l.messages_in_per_sec)}</td><td class="num">${l.bytes_in_per_sec === undefined ? "–" : fmtBytes(l.bytes_in_per_sec) + "/s"}</td>
      <td class="num">${l.bytes_out_per_sec === undefined ? "–" : fmtBytes(l.bytes_out_per_sec) + "/s"}</td>
      <td class="num">${l.cpu_cores === undefined ? "–" : fmtNum(100 * l.cpu_cores) + "%"}</td><td class="num">${fmtBytes(l.rss_bytes)}</td>
      <td>${links}${m.error && m.metrics_url ? ` <span class="muted" title="${esc(m.error)}">(scrape failed)</span>` : ""}</td></tr>`;
  }).join("") || `<tr><td colspan="11" class="muted">No brokers yet.</td></tr>`;
  app.innerHTML = `
    <h1>Brokers</h1>
    <div id="page-error"></div>
    <p class="muted">Read from each broker's metrics endpoint (<code>metrics.listener</code>) every ${fmtNum(metrics.scrape_interval_ms / 1000)} s, as Prometheus scrapes it.</p>
    <div class="panel"><table id="broker-metrics-table"><thead><tr><th>Id</th><th>State</th><th class="num">Requests/s</th><th class="num">Produce p99</th><th class="num">Fetch p99</th>
      <th class="num">Records in/s</th><th class="num">Bytes in</th><th class="num">Bytes out</th><th class="num">CPU</th><th class="num">RSS</th><th>Endpoint</th></tr></thead>
      <tbody>${rows}</tbody></table></div>
    <div class="grid2"><div class="panel"><div id="broker-requests-chart" class="chart"></div></div>
      <div class="panel"><div id="broker-produce-p99-chart" class="chart"></div></div>
      <div class="panel"><div id="broker-fetch-p99-chart" class="chart"></div></div>
      <div class="panel"><div id="broker-bytes-in-chart" class="chart"></div></div></div>`;
  const scraped = metrics.brokers.filter((m) => (m.history || []).length);
  const charts = [
    ["broker-requests-chart", "Requests/s per broker", "requests_per_sec", ""],
    ["broker-produce-p99-chart", "Produce p99 per broker (ms)", "produce_p99_ms", " ms"],
    ["broker-fetch-p99-chart", "Consumer fetch p99 per broker (ms)", "fetch_p99_ms", " ms"],
    ["broker-bytes-in-chart", "Bytes in/s per broker", "bytes_in_per_sec", ""],
  ];
  for (const [id] of charts) dropPlot(id);
  if (!scraped.length) {
    document.getElementById("broker-requests-chart").innerHTML = `<p class="muted">The charts fill in once a broker with a metrics endpoint has been scraped twice.</p>`;
    return;
  }
  const xs = [...new Set(scraped.flatMap((m) => m.history.map((p) => p.at_ms)))].sort((a, b) => a - b);
  const names = scraped.map((m) => `broker ${m.id}`);
  for (const [id, title, field, unit] of charts) {
    const ys = scraped.map((m) => {
      const at = new Map(m.history.map((p) => [p.at_ms, p[field]]));
      return xs.map((x) => (at.has(x) ? at.get(x) : null));
    });
    lineChart(id, title, names, xs, ys, { unit });
  }
};

pages.groups = async (page) => {
  const groups = await api("/api/groups");
  if (page !== current) return;
  app.innerHTML = `
    <h1>Consumer groups</h1>
    <div id="page-error"></div>
    <div class="grid2"><div class="panel"><div id="groups-chart" class="chart"></div></div>
      <div class="panel"><div id="groups-seconds-chart" class="chart"></div></div></div>
    <div class="panel"><table id="groups-table"><thead><tr><th>Group</th><th>State</th><th class="num">Members</th><th>Topics</th><th class="num">Lag</th><th class="num" title="lag over the rate its topics are written at">Behind (est.)</th></tr></thead>
      <tbody>${groups.groups.map((g) => `<tr data-group="${esc(g.group_id)}"><td><a href="#/group/${encodeURIComponent(g.group_id)}">${esc(g.group_id)}</a></td>
        <td>${esc(g.state)}</td><td class="num">${g.members}</td><td>${g.topics.map(esc).join(", ")}</td><td class="num lag">${fmtNum(g.lag)}</td>
        <td class="num behind">${fmtSeconds(secondsBehind(g, live.update ? live.update.topics || [] : []))}</td></tr>`).join("")
        || `<tr><td colspan="6" class="muted">No consumer groups.</td></tr>`}</tbody></table></div>`;
  dropPlot("groups-chart");
  dropPlot("groups-seconds-chart");
  const names = groups.groups.map((g) => g.group_id).filter((n) => live.lags.has(n)).slice(0, 8);
  if (names.length) {
    const xs = live.lags.get(names[0])[0];
    lineChart("groups-chart", "Lag (records)", names, xs, names.map((n) => alignTo(xs, live.lags.get(n))));
    lineChart("groups-seconds-chart", "Lag (seconds behind, estimated)", names, xs,
      names.map((n) => alignTo(xs, live.lagSeconds.get(n) || [[], []])), { unit: " s" });
  } else {
    document.getElementById("groups-chart").innerHTML = `<p class="muted">The lag chart fills in as live updates arrive.</p>`;
  }
};

pages.group = async (page) => {
  const id = page.arg;
  const group = await api(`/api/groups/${encodeURIComponent(id)}`);
  if (page !== current) return;
  const history = group.history || [];
  const xs = history.map((p) => p.ts);
  const partitions = group.partitions.map((p) => `${p.topic}-${p.partition}`).slice(0, 7);
  const ys = [history.map((p) => p.lag), ...partitions.map((k) => history.map((p) => p.partitions[k] ?? null))];
  const sameShape = document.getElementById("group-lag-chart");
  const body = `
    <div class="cards">
      <div class="card"><div class="label">Total lag</div><div class="value lag-big" id="lag-value">${fmtNum(group.lag)}</div></div>
      <div class="card"><div class="label" title="lag over the rate its topics are written at">Behind (est.)</div><div class="value" id="lag-seconds">${fmtSeconds(secondsBehind({ lag: group.lag, topics: [...new Set(group.partitions.map((p) => p.topic))] }, live.update ? live.update.topics || [] : []))}</div></div>
      <div class="card"><div class="label">State</div><div class="value">${esc(group.state)}</div></div>
      <div class="card"><div class="label">Members</div><div class="value">${group.members.length}</div></div>
      <div class="card"><div class="label">Assignor</div><div class="value" style="font-size:14px">${esc(group.protocol || "–")}</div></div>
    </div>
    <div class="panel"><h2>Lag per partition</h2><table id="group-partitions"><thead><tr><th>Topic</th><th class="num">Partition</th><th class="num">Committed</th><th class="num">Log end</th><th class="num">Lag</th></tr></thead>
      <tbody>${group.partitions.map((p) => `<tr><td><a href="#/topic/${encodeURIComponent(p.topic)}">${esc(p.topic)}</a></td><td class="num">${p.partition}</td><td class="num">${fmtNum(p.committed)}</td><td class="num">${fmtNum(p.log_end)}</td><td class="num">${fmtNum(p.lag)}</td></tr>`).join("")
        || `<tr><td colspan="5" class="muted">No committed offsets.</td></tr>`}</tbody></table></div>
    <div class="panel"><h2>Members</h2><table><thead><tr><th>Member</th><th>Client</th><th>Host</th><th>Assignment</th></tr></thead>
      <tbody>${group.members.map((m) => `<tr><td>${esc(m.member_id)}</td><td>${esc(m.client_id)}</td><td>${esc(m.client_host)}</td><td>${m.assignment.map(esc).join(", ")}</td></tr>`).join("")
        || `<tr><td colspan="4" class="muted">No active members.</td></tr>`}</tbody></table></div>`;
  if (!sameShape) {
    app.innerHTML = `<h1>Group ${esc(group.group_id)}</h1><div id="page-error"></div>
      <div class="panel"><div id="group-lag-chart" class="chart"></div></div><div id="group-body"></div>`;
  }
  document.getElementById("page-error").innerHTML = "";
  document.getElementById("group-body").innerHTML = body;
  lineChart("group-lag-chart", "Lag over time (records)", ["total", ...partitions], xs, ys);
};

// Per-table choices of label and value columns, kept across updates.
const aggChoices = new Map();

pages.aggregates = async (page, first) => {
  const data = first || !live.update ? await api("/api/aggregates?limit=200") : live.update.aggregates;
  if (page !== current) return;
  if (!data.jobs.length) {
    app.innerHTML = `<h1>Live aggregates</h1><div class="notice">No stream jobs are attached to this dashboard. Jobs embedded with the dashboard (as in <code>millrace demo</code>) show their state tables here.</div>`;
    return;
  }
  if (!document.getElementById("aggregates")) {
    app.innerHTML = `<h1>Live aggregates</h1><div id="page-error"></div>
      <div id="results-charts" class="results-grid"></div><div id="aggregates"></div>`;
  }
  resultCharts(page).catch((e) => { document.getElementById("page-error").innerHTML = errorBox(e); });
  document.getElementById("page-error").innerHTML = "";
  const root = document.getElementById("aggregates");
  // Re-rendering would close a column picker the user has open: skip this tick.
  if (!first && document.activeElement && document.activeElement.tagName === "SELECT"
      && root.contains(document.activeElement)) return;
  root.innerHTML = data.jobs.map((job) => `
    <h2>Job ${esc(job.name)}</h2>
    <div class="chips">${Object.entries(job.metrics).map(([k, v]) => `<span class="chip">${esc(k)}: ${k === "watermark" && v > 1e11 ? esc(fmtTime(v).slice(11, 19)) : fmtNum(v)}</span>`).join("")}</div>
    ${job.tables.length ? "" : `<p class="muted">No state published yet.</p>`}
    <div class="grid2">${job.tables.map((t) => aggregateTable(job, t)).join("")}</div>`).join("");
  for (const select of root.querySelectorAll("select[data-table]")) {
    select.onchange = () => {
      const key = select.dataset.table;
      const choice = aggChoices.get(key) || {};
      choice[select.dataset.role] = select.value;
      aggChoices.set(key, choice);
      select.blur();
      refresh(false);
    };
  }
};

// --- charts of the jobs' emitted results (the `<topic>_results` SQL tables) ---------------

const RESULTS_EVERY_MS = 5000;
const KEY_SERIES = 6;

// Charts over the results tables that have a window and either quantile columns (p50, p99:
// the median and the slowest key per window) or an anomaly score (a series per key, alerts
// marked). Re-queried every few seconds, not on every live update.
async function resultCharts(page) {
  const now = Date.now();
  if (page.state.resultsAt && now - page.state.resultsAt < RESULTS_EVERY_MS) return;
  page.state.resultsAt = now;
  if (!page.state.resultTables) {
    const tables = await api("/api/tables");
    page.state.resultTables = tables.tables.filter((t) => t.kind === "results").map((t) => t.name);
  }
  const root = document.getElementById("results-charts");
  // Every chart's data first, then the panels, then the charts: a chart takes its width
  // from its panel when it is created, so the panels must be laid out by then.
  const charts = [];
  // Tables seen with rows but nothing to chart (no window, no quantiles, no score) are not
  // asked again while the page is open.
  page.state.unchartable = page.state.unchartable || new Set();
  for (const table of page.state.resultTables) {
    if (page.state.unchartable.has(table)) continue;
    let result;
    try {
      result = await api("/api/sql", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ sql: `SELECT * FROM ${table} ORDER BY window_start DESC LIMIT 5000`, limit: 5000 }),
      });
    } catch (error) {
      // No results yet (asked again later), or no window column (never chartable).
      if (/window_start/.test(error.message)) page.state.unchartable.add(table);
      continue;
    }
    if (page !== current || !root.isConnected) return;
    const rows = result.rows.map((r) => Object.fromEntries(result.columns.map((c, i) => [c, r[i]]))).reverse();
    const chart = resultChart(table, result.columns, rows);
    if (chart) charts.push({ id: `results-${table}`, table, chart });
    else if (rows.length) page.state.unchartable.add(table);
  }
  for (const { id, table } of charts) {
    if (!document.getElementById(id)) {
      root.insertAdjacentHTML("beforeend", `<div class="panel"><div id="${id}" class="chart results-chart" data-table="${esc(table)}"></div></div>`);
    }
  }
  for (const { id, chart } of charts) {
    lineChart(id, chart.title, chart.names, chart.xs, chart.ys, { points: chart.points, unit: chart.unit });
  }
}

function resultChart(table, columns, rows) {
  if (!columns.includes("window_start") || !rows.length) return null;
  const numeric = (c) => rows.some((r) => typeof r[c] === "number");
  const keyColumn = columns.find((c) => !["window_start", "window_end"].includes(c)
    && rows.some((r) => typeof r[c] === "string"));
  const xs = [...new Set(rows.map((r) => r.window_start))].sort((a, b) => a - b);
  const at = new Map(xs.map((x, i) => [x, i]));
  const quantiles = columns.filter((c) => /^p\d+(_|$)/.test(c) && numeric(c));
  if (quantiles.length) {
    const byWindow = xs.map(() => []);
    for (const r of rows) byWindow[at.get(r.window_start)].push(r);
    const median = (values) => {
      const v = values.filter((x) => typeof x === "number").sort((a, b) => a - b);
      return v.length ? v[Math.floor(v.length / 2)] : null;
    };
    const names = [], ys = [];
    for (const q of quantiles) {
      names.push(`${q} (median ${keyColumn || "key"})`);
      ys.push(byWindow.map((w) => median(w.map((r) => r[q]))));
    }
    const top = quantiles[quantiles.length - 1];
    names.push(`${top} (slowest ${keyColumn || "key"})`);
    ys.push(byWindow.map((w) => {
      const v = w.map((r) => r[top]).filter((x) => typeof x === "number");
      return v.length ? Math.max(...v) : null;
    }));
    return { title: `${table}: ${quantiles.join(" / ")}`, names, xs, ys, points: [], unit: /_ms$/.test(top) ? " ms" : "" };
  }
  if (columns.includes("score") && keyColumn) {
    const value = columns.find((c) => !["window_start", "window_end", "score", "baseline"].includes(c) && numeric(c));
    if (!value) return null;
    // Without an `alert` column the job emits alerts only: every row is one.
    const isAlert = (r) => (columns.includes("alert") ? r.alert === true : true);
    const stats = new Map();
    for (const r of rows) {
      const s = stats.get(r[keyColumn]) || { alerts: 0, max: -Infinity };
      s.alerts += isAlert(r) ? 1 : 0;
      s.max = Math.max(s.max, r[value] ?? -Infinity);
      stats.set(r[keyColumn], s);
    }
    const keys = [...stats].sort((a, b) => b[1].alerts - a[1].alerts || b[1].max - a[1].max)
      .slice(0, KEY_SERIES).map(([k]) => k);
    const ys = keys.map(() => xs.map(() => null));
    const alerts = xs.map(() => null);
    for (const r of rows) {
      const i = at.get(r.window_start);
      const k = keys.indexOf(r[keyColumn]);
      if (k >= 0) ys[k][i] = r[value];
      if (isAlert(r) && (alerts[i] === null || r[value] > alerts[i])) alerts[i] = r[value];
    }
    return {
      title: `${table}: ${value} by ${keyColumn}, alerts in red`,
      names: [...keys, "alert"], xs, ys: [...ys, alerts], points: [keys.length], unit: "",
    };
  }
  return null;
}

function aggregateTable(job, t) {
  const key = `${job.name}/${t.table}`;
  const choice = aggChoices.get(key) || {};
  const label = choice.label || t.label_column;
  const value = choice.value || t.value_column;
  let rows = t.rows;
  // Windowed tables: the chart shows the newest window only.
  let windowNote = "";
  if (t.windowed && rows.length) {
    const newest = Math.max(...rows.map((r) => r.window_start ?? -Infinity));
    rows = rows.filter((r) => r.window_start === newest);
    windowNote = ` · window ${fmtTime(newest).slice(11, 19)}`;
  }
  // Rows sharing a label are summed: a job keyed within its input partitions keeps one
  // partial count per partition (a job that regroups, as the demo's do, has one row).
  const totals = new Map();
  if (label && value) {
    for (const r of rows) {
      if (typeof r[value] !== "number") continue;
      const name = compact(r[label]);
      totals.set(name, (totals.get(name) || 0) + r[value]);
    }
  }
  const items = [...totals].map(([name, v]) => ({ label: name, value: v }))
    .sort((a, b) => b.value - a.value || String(a.label).localeCompare(String(b.label)))
    .slice(0, 12);
  const options = (role, selected, numeric) => t.columns
    .filter((c) => !numeric || t.rows.some((r) => typeof r[c] === "number"))
    .map((c) => `<option ${c === selected ? "selected" : ""}>${esc(c)}</option>`).join("");
  const idBase = `agg-${job.name}-${t.table}`.replace(/[^A-Za-z0-9_-]/g, "_");
  return `<div class="panel aggregate" data-table="${esc(t.table)}">
    <h3>${esc(t.table)} <span class="muted">(${t.total_rows} rows${windowNote}, updated ${t.updated_ms ? new Date(t.updated_ms).toLocaleTimeString() : "–"})</span></h3>
    <div class="toolbar">
      <label class="field">Label<select id="${idBase}-label" data-table="${esc(key)}" data-role="label">${options("label", label, false)}</select></label>
      <label class="field">Value<select id="${idBase}-value" data-table="${esc(key)}" data-role="value">${options("value", value, true)}</select></label>
    </div>
    <div class="chart agg-chart" id="${idBase}-chart">${value ? barChart(items) : `<p class="muted">No numeric column to chart.</p>`}</div>
    <table class="agg-rows"><thead><tr>${t.columns.map((c) => `<th>${esc(c)}</th>`).join("")}</tr></thead>
      <tbody>${t.rows.slice(0, 25).map((r) => `<tr>${t.columns.map((c) => cell(r[c], c)).join("")}</tr>`).join("")}</tbody></table>
    ${t.rows.length > 25 ? `<p class="muted">First 25 of ${t.total_rows} rows; query them all in <a href="#/sql">SQL</a>.</p>` : ""}
  </div>`;
}

pages.sql = async (page, first) => {
  if (!first) return;
  const tables = await api("/api/tables").catch(() => ({ tables: [] }));
  if (page !== current) return;
  const saved = sessionStorage.getItem("millrace-sql") || (tables.tables.length ? `SELECT * FROM ${tables.tables[0].name} LIMIT 100` : "SELECT 1 AS one");
  app.innerHTML = `
    <h1>SQL</h1>
    <div class="panel">
      <p class="tables-list muted">Tables: ${tables.tables.map((t) => `<a data-table="${esc(t.name)}" title="${esc(t.kind)}: ${esc(t.source)}">${esc(t.name)}</a>`).join("") || "none yet (jobs publish their state within a second or two)"}</p>
      <textarea id="sql-input" spellcheck="false">${esc(saved)}</textarea>
      <div class="toolbar" style="margin-top:8px"><button id="sql-run">Run (Ctrl+Enter)</button><span class="muted" id="sql-info"></span></div>
    </div>
    <div id="page-error"></div>
    <div class="panel" id="sql-result"><p class="muted">Results appear here.</p></div>`;
  const input = document.getElementById("sql-input");
  for (const a of document.querySelectorAll(".tables-list a")) {
    a.onclick = () => { input.value = `SELECT * FROM ${a.dataset.table} LIMIT 100`; input.focus(); };
  }
  const run = async () => {
    const sql = input.value;
    sessionStorage.setItem("millrace-sql", sql);
    document.getElementById("page-error").innerHTML = "";
    document.getElementById("sql-info").textContent = "running…";
    try {
      const result = await api("/api/sql", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ sql }),
      });
      document.getElementById("sql-info").textContent =
        `${result.rows.length} row(s)${result.truncated ? " (truncated)" : ""} in ${result.elapsed_ms} ms`;
      document.getElementById("sql-result").innerHTML = `<table id="sql-table"><thead><tr>${result.columns.map((c) => `<th>${esc(c)}</th>`).join("")}</tr></thead>
        <tbody>${result.rows.map((r) => `<tr>${r.map((v, i) => cell(v, result.columns[i])).join("")}</tr>`).join("")}</tbody></table>`;
    } catch (error) {
      document.getElementById("sql-info").textContent = "";
      document.getElementById("page-error").innerHTML = errorBox(error);
      document.getElementById("sql-result").innerHTML = `<p class="muted">No result.</p>`;
    }
  };
  document.getElementById("sql-run").onclick = run;
  input.onkeydown = (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); run(); } };
};

// --- security: users, ACLs, quotas -------------------------------------------------------
// Reads are what the principal may describe (the broker answers 403 otherwise); changes
// also need --allow-admin. These pages render on navigation and after each change, not on
// every live update, so forms keep what is typed.

const ACL_TYPES = ["TOPIC", "GROUP", "CLUSTER", "TRANSACTIONAL_ID", "DELEGATION_TOKEN", "USER"];
const ACL_OPERATIONS = ["ALL", "READ", "WRITE", "CREATE", "DELETE", "ALTER", "DESCRIBE", "CLUSTER_ACTION",
  "DESCRIBE_CONFIGS", "ALTER_CONFIGS", "IDEMPOTENT_WRITE", "CREATE_TOKENS", "DESCRIBE_TOKENS"];
const QUOTA_KEYS = ["producer_byte_rate", "consumer_byte_rate", "request_percentage"];

function select(id, values, selected, any) {
  const options = (any ? [""] : []).concat(values)
    .map((v) => `<option value="${esc(v)}" ${v === selected ? "selected" : ""}>${esc(v || "any")}</option>`).join("");
  return `<select id="${id}">${options}</select>`;
}

function adminNote() {
  return sessionInfo.allow_admin ? "" : `<p class="muted">Changes are disabled: start the dashboard with --allow-admin.</p>`;
}

function showPageError(error) {
  const box = document.getElementById("page-error");
  if (box) box.innerHTML = error ? errorBox(error) : "";
}

pages.users = async (page, first) => {
  if (!first) return;
  app.innerHTML = `<h1>Users</h1><div id="page-error"></div>
    <div class="panel"><h2 style="margin-top:0">SCRAM users</h2><div id="users-list"><p class="muted">Loading…</p></div></div>
    ${sessionInfo.allow_admin ? `<div class="panel"><h2 style="margin-top:0">Add a user or set a password</h2>
      <form class="inline" id="user-form">
        <label class="field">Name <input id="user-name" required></label>
        <label class="field">Password <input id="user-password" type="password" autocomplete="new-password" required></label>
        <label class="field">Mechanism ${select("user-mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"], "", true)}</label>
        <button type="submit">Save</button></form></div>` : adminNote()}`;
  const load = async () => {
    const list = document.getElementById("users-list");
    try {
      const body = await api("/api/users");
      if (page !== current) return;
      list.innerHTML = `<table id="users-table"><thead><tr><th>User</th><th>Mechanisms (iterations)</th><th></th></tr></thead><tbody>
        ${body.users.map((u) => `<tr data-user="${esc(u.name)}"><td>${esc(u.name)}</td>
          <td>${u.mechanisms.map((m) => `${esc(m.mechanism)} (${m.iterations})`).join(", ")}</td>
          <td class="actions">${sessionInfo.allow_admin ? `<button class="secondary" data-delete="${esc(u.name)}">Delete</button>` : ""}</td></tr>`).join("")
          || `<tr><td colspan="3" class="muted">No SCRAM users.</td></tr>`}</tbody></table>`;
      for (const b of list.querySelectorAll("button[data-delete]")) {
        b.onclick = async () => {
          if (!confirm(`Delete user ${b.dataset.delete}?`)) return;
          try { await send("DELETE", `/api/users/${encodeURIComponent(b.dataset.delete)}`, {}); showPageError(null); load(); } catch (e) { showPageError(e); }
        };
      }
    } catch (error) {
      list.innerHTML = "";
      showPageError(error);
    }
  };
  const form = document.getElementById("user-form");
  if (form) {
    form.onsubmit = async (event) => {
      event.preventDefault();
      const mechanism = document.getElementById("user-mechanism").value;
      try {
        await send("POST", "/api/users", {
          name: document.getElementById("user-name").value,
          password: document.getElementById("user-password").value,
          ...(mechanism ? { mechanism } : {}),
        });
        document.getElementById("user-password").value = "";
        showPageError(null);
        load();
      } catch (e) { showPageError(e); }
    };
  }
  await load();
};

function aclForm(acl) {
  const a = acl || { resource_type: "TOPIC", resource_name: "", pattern_type: "LITERAL", principal: "User:", host: "*", operation: "READ", permission: "ALLOW" };
  return `<form class="inline" id="acl-form">
    <label class="field">Resource type ${select("acl-type", ACL_TYPES, a.resource_type)}</label>
    <label class="field">Resource name <input id="acl-name" value="${esc(a.resource_name)}" placeholder="name, prefix or *" required></label>
    <label class="field">Pattern ${select("acl-pattern", ["LITERAL", "PREFIXED"], a.pattern_type)}</label>
    <label class="field">Principal <input id="acl-principal" value="${esc(a.principal)}" required></label>
    <label class="field">Host <input id="acl-host" value="${esc(a.host)}" size="10"></label>
    <label class="field">Operation ${select("acl-operation", ACL_OPERATIONS, a.operation)}</label>
    <label class="field">Permission ${select("acl-permission", ["ALLOW", "DENY"], a.permission)}</label>
    <button type="submit" id="acl-submit">${acl ? "Save" : "Add"}</button>
    ${acl ? `<button type="button" class="secondary" id="acl-cancel">Cancel</button>` : ""}
  </form>`;
}

function aclFromForm() {
  const v = (id) => document.getElementById(id).value;
  return {
    resource_type: v("acl-type"), resource_name: v("acl-name"), pattern_type: v("acl-pattern"),
    principal: v("acl-principal"), host: v("acl-host") || "*", operation: v("acl-operation"), permission: v("acl-permission"),
  };
}

pages.acls = async (page, first) => {
  if (!first) return;
  const f = page.state.filter || {};
  app.innerHTML = `<h1>ACLs</h1><div id="page-error"></div>
    <div class="panel">
      <form class="inline" id="acl-filter">
        <label class="field">Resource type ${select("filter-type", ACL_TYPES, f.resource_type || "", true)}</label>
        <label class="field">Resource name <input id="filter-name" value="${esc(f.resource_name || "")}"></label>
        <label class="field">Principal <input id="filter-principal" value="${esc(f.principal || "")}" placeholder="User:alice"></label>
        <label class="field">Operation ${select("filter-operation", ACL_OPERATIONS, f.operation || "", true)}</label>
        <button type="submit">Filter</button>
      </form>
      <div id="acls-list"><p class="muted">Loading…</p></div>
    </div>
    ${sessionInfo.allow_admin ? `<div class="panel"><h2 style="margin-top:0" id="acl-form-title">Add an ACL</h2><div id="acl-form-box">${aclForm(null)}</div>
      <p class="muted">Editing adds the new ACL before removing the old one, so clients the old one lets in are never refused in between.</p></div>` : adminNote()}`;
  let editing = null;
  const bindForm = () => {
    const form = document.getElementById("acl-form");
    if (!form) return;
    form.onsubmit = async (event) => {
      event.preventDefault();
      try {
        if (editing) await send("PUT", "/api/acls", { old: editing, new: aclFromForm() });
        else await send("POST", "/api/acls", aclFromForm());
        showPageError(null);
        setForm(null);
        load();
      } catch (e) { showPageError(e); }
    };
    const cancel = document.getElementById("acl-cancel");
    if (cancel) cancel.onclick = () => setForm(null);
  };
  const setForm = (acl) => {
    editing = acl;
    const box = document.getElementById("acl-form-box");
    if (!box) return;
    box.innerHTML = aclForm(acl);
    document.getElementById("acl-form-title").textContent = acl ? "Edit the ACL" : "Add an ACL";
    bindForm();
  };
  let shown = [];
  const load = async () => {
    const list = document.getElementById("acls-list");
    const params = new URLSearchParams(Object.entries(page.state.filter || {}).filter(([, v]) => v));
    try {
      const body = await api(`/api/acls${params.toString() ? "?" + params : ""}`);
      if (page !== current) return;
      shown = body.acls;
      list.innerHTML = `<table id="acls-table"><thead><tr><th>Principal</th><th>Host</th><th>Operation</th><th>Permission</th><th>Resource type</th><th>Name</th><th>Pattern</th><th></th></tr></thead><tbody>
        ${shown.map((a, i) => `<tr><td>${esc(a.principal)}</td><td>${esc(a.host)}</td><td>${esc(a.operation)}</td><td>${esc(a.permission)}</td>
          <td>${esc(a.resource_type)}</td><td>${esc(a.resource_name)}</td><td>${esc(a.pattern_type)}</td>
          <td class="actions">${sessionInfo.allow_admin ? `<button class="secondary" data-edit="${i}">Edit</button><button class="secondary" data-remove="${i}">Remove</button>` : ""}</td></tr>`).join("")
          || `<tr><td colspan="8" class="muted">No ACLs match.</td></tr>`}</tbody></table>`;
      for (const b of list.querySelectorAll("button[data-edit]")) b.onclick = () => setForm(shown[Number(b.dataset.edit)]);
      for (const b of list.querySelectorAll("button[data-remove]")) {
        b.onclick = async () => {
          if (!confirm("Remove this ACL?")) return;
          try { await send("DELETE", "/api/acls", shown[Number(b.dataset.remove)]); showPageError(null); load(); } catch (e) { showPageError(e); }
        };
      }
    } catch (error) {
      list.innerHTML = "";
      showPageError(error);
    }
  };
  document.getElementById("acl-filter").onsubmit = (event) => {
    event.preventDefault();
    page.state.filter = {
      resource_type: document.getElementById("filter-type").value,
      resource_name: document.getElementById("filter-name").value.trim(),
      principal: document.getElementById("filter-principal").value.trim(),
      operation: document.getElementById("filter-operation").value,
    };
    load();
  };
  bindForm();
  await load();
};

function entityText(entity) {
  return entity.map((p) => `${p.type}=${p.name === null ? "<default>" : p.name}`).join(", ");
}

pages.quotas = async (page, first) => {
  if (!first) return;
  app.innerHTML = `<h1>Quotas</h1><div id="page-error"></div>
    <div class="panel"><div id="quotas-list"><p class="muted">Loading…</p></div></div>
    ${sessionInfo.allow_admin ? `<div class="panel"><h2 style="margin-top:0">Set a quota</h2>
      <form class="inline" id="quota-form">
        <label class="field">Entity ${select("quota-type", ["user", "client-id"], "user")}</label>
        <label class="field">Name <input id="quota-name" placeholder="empty: the default"></label>
        <label class="field">Key ${select("quota-key", QUOTA_KEYS, "producer_byte_rate")}</label>
        <label class="field">Value <input id="quota-value" type="number" min="1" step="any" required></label>
        <button type="submit">Set</button></form></div>` : adminNote()}`;
  let shown = [];
  const load = async () => {
    const list = document.getElementById("quotas-list");
    try {
      const body = await api("/api/quotas");
      if (page !== current) return;
      shown = body.quotas;
      list.innerHTML = `<table id="quotas-table"><thead><tr><th>Entity</th><th>Quotas</th><th></th></tr></thead><tbody>
        ${shown.map((q, i) => `<tr><td>${esc(entityText(q.entity))}</td>
          <td>${Object.entries(q.values).map(([k, v]) => `${esc(k)}=${fmtNum(v)}`).join(", ")}</td>
          <td class="actions">${sessionInfo.allow_admin ? `<button class="secondary" data-remove="${i}">Remove</button>` : ""}</td></tr>`).join("")
          || `<tr><td colspan="3" class="muted">No quotas.</td></tr>`}</tbody></table>`;
      for (const b of list.querySelectorAll("button[data-remove]")) {
        b.onclick = async () => {
          try { await send("DELETE", "/api/quotas", { entity: shown[Number(b.dataset.remove)].entity }); showPageError(null); load(); } catch (e) { showPageError(e); }
        };
      }
    } catch (error) {
      list.innerHTML = "";
      showPageError(error);
    }
  };
  const form = document.getElementById("quota-form");
  if (form) {
    form.onsubmit = async (event) => {
      event.preventDefault();
      const name = document.getElementById("quota-name").value.trim();
      try {
        await send("POST", "/api/quotas", {
          entity: [{ type: document.getElementById("quota-type").value, name: name || null }],
          set: { [document.getElementById("quota-key").value]: Number(document.getElementById("quota-value").value) },
        });
        showPageError(null);
        load();
      } catch (e) { showPageError(e); }
    };
  }
  await load();
};

// --- login mode -------------------------------------------------------------------------

let loginShown = false;

function showLogin(message) {
  loginShown = true;
  statusEl.textContent = "not logged in";
  statusEl.className = "status";
  document.getElementById("user").hidden = true;
  app.innerHTML = `
    <h1>Log in</h1>
    <div class="panel login">
      <form id="login-form">
        <label class="field">User <input id="login-user" name="username" autocomplete="username" required></label>
        <label class="field">Password <input id="login-password" name="password" type="password" autocomplete="current-password" required></label>
        <button type="submit" id="login-submit">Log in</button>
      </form>
      <p class="muted">A SASL user of the cluster: the console shows and does what that principal's ACLs allow.</p>
      <div id="login-error">${message ? errorBox(message) : ""}</div>
    </div>`;
  document.getElementById("login-form").onsubmit = async (event) => {
    event.preventDefault();
    const username = document.getElementById("login-user").value;
    const password = document.getElementById("login-password").value;
    document.getElementById("login-submit").disabled = true;
    try {
      await send("POST", "/api/login", { username, password });
      // A fresh start: the session's cookie is set, the live stream opens as that user.
      location.reload();
    } catch (error) {
      document.getElementById("login-error").innerHTML = errorBox(error);
      document.getElementById("login-submit").disabled = false;
    }
  };
}

function showUser() {
  const el = document.getElementById("user");
  if (!sessionInfo.user) return;
  el.hidden = false;
  el.innerHTML = `${esc(sessionInfo.user)}<button class="secondary" id="logout">Log out</button>`;
  document.getElementById("logout").onclick = async () => {
    await api("/api/logout", { method: "POST" }).catch(() => null);
    location.reload();
  };
}

async function start() {
  try {
    sessionInfo = await api("/api/session");
  } catch (_) {
    // Token mode without the token: the pages say so themselves.
  }
  if (sessionInfo.login && !sessionInfo.authenticated) {
    showLogin();
    return;
  }
  showUser();
  window.addEventListener("hashchange", navigate);
  navigate();
  connect();
}

start();
