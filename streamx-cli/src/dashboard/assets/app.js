// The streamx dashboard: polls the JSON API, draws the tables and the charts (plain canvas,
// no library), and asks the server to replay or purge dead letters.
"use strict";

const POLL_MS = 1000;
const token = new URLSearchParams(location.search).get("token");
const auth = token ? { Authorization: "Bearer " + token } : {};
const state = { readOnly: true, pending: null, dlq: null, overview: null };

const $ = (sel) => document.querySelector(sel);
const path = (...parts) => parts.map(encodeURIComponent).join("/");

async function api(url, options = {}) {
  const response = await fetch(url, { ...options, headers: { ...auth, ...(options.headers || {}) } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || response.status + " " + response.statusText);
  return body;
}

function change(url) {
  return api(url, { method: "POST", headers: { "x-streamx-action": "1" } });
}

function say(text, ok) {
  const m = $("#message");
  m.textContent = text;
  m.className = ok ? "ok" : "";
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  if (text instanceof Node) td.appendChild(text);
  else td.textContent = text === null || text === undefined ? "-" : String(text);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function button(label, cls, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.className = cls;
  b.addEventListener("click", onClick);
  return b;
}

const rate = (r) => (r === null || r === undefined ? "-" : r.toFixed(1));

// Puts `rows` (fresh <tr>s, each with a unique `dataset.key`) into `body`, keeping the rows
// already there under the same key and changing only their cells whose text changed. A
// refresh then never swaps out the button under a user's pointer (a click between mouse
// down and up would be lost) nor a text selection in a row that did not change.
function syncRows(body, rows) {
  const old = new Map(Array.from(body.rows, (r) => [r.dataset.key, r]));
  let at = body.firstElementChild;
  for (const fresh of rows) {
    const kept = old.get(fresh.dataset.key);
    const row = kept && kept.cells.length === fresh.cells.length ? patchRow(kept, fresh) : fresh;
    if (row === at) at = at.nextElementSibling;
    else body.insertBefore(row, at);
  }
  while (at) {
    const next = at.nextElementSibling;
    at.remove();
    at = next;
  }
}

// `kept` made to show what `fresh` shows; a button keeps its element and only takes the label.
function patchRow(kept, fresh) {
  kept.className = fresh.className;
  Array.from(fresh.cells).forEach((cell, i) => {
    const was = kept.cells[i];
    if (was.textContent === cell.textContent && was.className === cell.className) return;
    const [oldButton, newButton] = [was.querySelector("button"), cell.querySelector("button")];
    if (oldButton && newButton && was.childNodes.length === 1 && cell.childNodes.length === 1) {
      oldButton.textContent = newButton.textContent;
      oldButton.title = newButton.title;
      was.className = cell.className;
    } else {
      was.replaceWith(cell);
    }
  });
  return kept;
}

function renderStreams(streams) {
  const rows = [];
  $("#no-streams").hidden = streams.length > 0;
  for (const s of streams) {
    const row = document.createElement("tr");
    row.className = "stream";
    row.dataset.stream = s.stream;
    row.dataset.key = "s\n" + s.stream;
    cell(row, s.stream);
    cell(row, s.length, "num length");
    cell(row, "", "num");
    cell(row, "", "num");
    cell(row, "", "num");
    cell(row, rate(s.published_per_sec), "num in");
    cell(row, "", "num");
    const dlq = button(String(s.dead_letters), "show-dlq", () => openDeadLetters(s.stream));
    dlq.title = "show the dead letters of " + s.stream;
    cell(row, dlq, "num dead-letters");
    if (state.dlq === s.stream) row.classList.add("selected");
    rows.push(row);
    for (const g of s.groups) {
      const gr = document.createElement("tr");
      gr.className = "group";
      gr.dataset.stream = s.stream;
      gr.dataset.group = g.name;
      gr.dataset.key = "g\n" + s.stream + "\n" + g.name;
      cell(gr, g.name, "name");
      cell(gr, "", "num");
      cell(gr, g.lag, "num lag");
      cell(gr, button(String(g.pending), "show-pending", () => openPending(s.stream, g.name)), "num pending");
      cell(gr, g.consumers, "num consumers");
      cell(gr, "", "num");
      cell(gr, rate(s.consumed_per_sec[g.name]), "num out");
      cell(gr, "", "num");
      if (state.pending && state.pending.stream === s.stream && state.pending.group === g.name) gr.classList.add("selected");
      rows.push(gr);
    }
  }
  syncRows($("#streams tbody"), rows);
  const select = $("#chart-stream");
  const chosen = select.value;
  const names = streams.map((s) => s.stream);
  const have = Array.from(select.options).slice(1).map((o) => o.value);
  if (names.join("\n") !== have.join("\n")) {
    select.replaceChildren(new Option("all streams", ""), ...names.map((n) => new Option(n, n)));
    select.value = names.includes(chosen) ? chosen : "";
  }
}

// Element-wise sum of series; null where every one is null.
function sum(list) {
  if (list.length === 0) return [];
  return list[0].map((_, i) => {
    const values = list.map((s) => s[i]).filter((v) => v !== null && v !== undefined);
    return values.length ? values.reduce((a, b) => a + b, 0) : null;
  });
}

function chartData(series) {
  const chosen = $("#chart-stream").value;
  const streams = Object.entries(series.streams).filter(([name]) => !chosen || name === chosen).map(([, s]) => s);
  return {
    t: series.t,
    published: sum(streams.map((s) => s.published)),
    consumed: sum(streams.map((s) => s.consumed)),
    lag: sum(streams.map((s) => s.lag)),
    deadLetters: sum(streams.map((s) => s.dead_letters)),
  };
}

function niceMax(max) {
  if (max <= 0) return 1;
  const step = Math.pow(10, Math.floor(Math.log10(max)));
  for (const m of [1, 2, 4, 8, 10]) if (m * step >= max) return m * step;
  return 10 * step;
}

function fmt(v) {
  if (v === null || v === undefined) return "-";
  if (Math.abs(v) >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (Math.abs(v) >= 1e4) return (v / 1e3).toFixed(1) + "k";
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

// A line chart of `lines` ({label, color, values}) over times `t`, on a canvas.
function drawChart(canvas, legend, t, lines) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width;
  const height = canvas.clientHeight || canvas.height;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.clearRect(0, 0, width, height);
  const pad = { left: 46, right: 10, top: 10, bottom: 22 };
  const w = width - pad.left - pad.right;
  const h = height - pad.top - pad.bottom;
  const all = lines.flatMap((l) => l.values).filter((v) => v !== null && v !== undefined);
  const top = niceMax(all.length ? Math.max(...all) : 0);
  g.font = "11px system-ui, sans-serif";
  g.fillStyle = "#6b7385";
  g.strokeStyle = "#e3e6ee";
  g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = pad.top + h - (h * i) / 4;
    g.beginPath();
    g.moveTo(pad.left, y);
    g.lineTo(pad.left + w, y);
    g.stroke();
    g.textAlign = "right";
    g.fillText(fmt((top * i) / 4), pad.left - 6, y + 4);
  }
  if (t.length > 1) {
    const t0 = t[0];
    const span = Math.max(t[t.length - 1] - t0, 1);
    g.textAlign = "left";
    g.fillText(new Date(t0).toLocaleTimeString(), pad.left, height - 6);
    g.textAlign = "right";
    g.fillText(new Date(t[t.length - 1]).toLocaleTimeString(), pad.left + w, height - 6);
    for (const line of lines) {
      g.strokeStyle = line.color;
      g.lineWidth = 2;
      g.beginPath();
      let drawing = false;
      line.values.forEach((v, i) => {
        if (v === null || v === undefined) {
          drawing = false;
          return;
        }
        const x = pad.left + (w * (t[i] - t0)) / span;
        const y = pad.top + h - (h * v) / top;
        if (drawing) g.lineTo(x, y);
        else g.moveTo(x, y);
        drawing = true;
      });
      g.stroke();
    }
  }
  const latest = {};
  const max = {};
  legend.replaceChildren();
  for (const line of lines) {
    const known = line.values.filter((v) => v !== null && v !== undefined);
    latest[line.label] = known.length ? known[known.length - 1] : null;
    max[line.label] = known.length ? Math.max(...known) : null;
    const item = document.createElement("span");
    item.style.color = line.color;
    item.textContent = " ● " + line.label + " " + fmt(latest[line.label]);
    legend.appendChild(item);
  }
  // For tests and scripts: what the chart shows, as data.
  canvas.dataset.points = String(t.length);
  canvas.dataset.latest = JSON.stringify(latest);
  canvas.dataset.max = JSON.stringify(max);
}

function renderCharts(series) {
  const d = chartData(series);
  drawChart($("#chart-throughput"), $("#legend-throughput"), d.t, [
    { label: "in", color: "#2f6fed", values: d.published },
    { label: "out", color: "#17a673", values: d.consumed },
  ]);
  drawChart($("#chart-lag"), $("#legend-lag"), d.t, [{ label: "lag", color: "#7b4de0", values: d.lag }]);
  drawChart($("#chart-dead-letters"), $("#legend-dead-letters"), d.t, [
    { label: "dead letters", color: "#d9480f", values: d.deadLetters },
  ]);
}

async function refresh() {
  try {
    const o = await api("/api/overview");
    state.overview = o;
    state.readOnly = o.read_only;
    document.body.classList.toggle("read-only", o.read_only);
    $("#mode").hidden = !o.read_only;
    $("#redis").textContent = o.redis;
    $("#updated").textContent = "updated " + new Date(o.time_ms).toLocaleTimeString();
    if (o.error) say("sampling failed: " + o.error);
    renderStreams(o.streams);
    renderCharts(o.series);
    if (state.pending) await loadPending();
    if (state.dlq) await loadDeadLetters();
  } catch (e) {
    say(String(e.message || e));
  }
}

function openPending(stream, group) {
  state.pending = { stream, group };
  loadPending().catch((e) => say(e.message));
}

async function loadPending() {
  const { stream, group } = state.pending;
  const p = await api("/api/" + path("streams", stream, "groups", group, "pending"));
  $("#pending-panel").hidden = false;
  $("#pending-title").textContent = stream + " / " + group;
  $("#pending-total").textContent = p.total + " entries, oldest first";
  const rows = p.entries.map((e) => {
    const row = document.createElement("tr");
    row.dataset.key = stream + "\n" + group + "\n" + e.id;
    cell(row, e.id, "id");
    cell(row, e.consumer);
    cell(row, (e.idle_ms / 1000).toFixed(1) + "s", "num");
    cell(row, e.deliveries, "num");
    return row;
  });
  syncRows($("#pending tbody"), rows);
}

function openDeadLetters(stream) {
  state.dlq = stream;
  loadDeadLetters().catch((e) => say(e.message));
}

async function loadDeadLetters() {
  const stream = state.dlq;
  const d = await api("/api/" + path("streams", stream, "dead-letters"));
  $("#dlq-panel").hidden = false;
  $("#dlq-title").textContent = stream;
  $("#dlq-total").textContent = String(d.total);
  const rows = d.entries.map((l) => {
    const row = document.createElement("tr");
    row.dataset.id = l.id;
    row.dataset.key = stream + "\n" + l.id + "\n" + state.readOnly;
    cell(row, l.id, "id");
    cell(row, l.group);
    cell(row, l.kind);
    cell(row, l.deliveries, "num");
    cell(row, l.error, "error");
    const pre = document.createElement("pre");
    pre.textContent = l.payload === null ? "(no payload)" : l.payload.slice(0, 400);
    cell(row, pre, "payload");
    if (!state.readOnly) {
      cell(row, button("Replay", "replay", () => replayOne(stream, l.id)), "write");
    }
    return row;
  });
  syncRows($("#dead-letters tbody"), rows);
}

async function replayOne(stream, id) {
  if (!confirm("Replay dead letter " + id + " to " + stream + "?")) return;
  try {
    const r = await change("/api/" + path("streams", stream, "dead-letters", id, "replay"));
    say("replayed " + id + " as " + r.replayed_as, true);
  } catch (e) {
    say(e.message);
  }
  await loadDeadLetters().catch((e) => say(e.message));
}

// Replays or purges every dead letter of the open stream, after asking.
async function everyLetter(action, question, done) {
  const stream = state.dlq;
  if (!stream || !confirm(question(stream))) return;
  try {
    const r = await change("/api/" + path("streams", stream, "dead-letters", action));
    say(done + " " + r.done + " dead letters", true);
  } catch (e) {
    say(e.message);
  }
  await loadDeadLetters().catch((e) => say(e.message));
}

const replayAll = () => everyLetter("replay", (s) => "Replay every dead letter of " + s + "?", "replayed");
const purgeAll = () =>
  everyLetter("purge", (s) => "Delete every dead letter of " + s + "? This cannot be undone.", "purged");

$("#replay-all").addEventListener("click", replayAll);
$("#purge-all").addEventListener("click", purgeAll);
$("#chart-stream").addEventListener("change", () => state.overview && renderCharts(state.overview.series));
refresh();
setInterval(refresh, POLL_MS);
