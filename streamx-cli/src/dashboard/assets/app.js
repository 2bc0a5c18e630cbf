// The streamx dashboard: polls the JSON API, draws the tables and the charts (plain canvas,
// no library), and asks the server to replay or purge dead letters.
"use strict";

const POLL_MS = 1000;
const token = new URLSearchParams(location.search).get("token");
const auth = token ? { Authorization: "Bearer " + token } : {};
// Reload an open dead-letter page at least this often (and whenever its count changes).
const DLQ_POLL_MS = 5000;
const state = {
  readOnly: true,
  pending: null,
  dlq: null,
  consumers: null,
  retries: null,
  overview: null,
  panelProblems: [],
  topics: [],
  openTopics: new Set(),
};

const $ = (sel) => document.querySelector(sel);
// A name as a path segment. A browser drops the segments `.` and `..` (even as `%2E`) from a
// URL's path, so those, and names starting with `~`, go with one `~` in front, which the
// server takes off (see `stream_segment` in api.rs).
const segment = (name) => encodeURIComponent(name === "." || name === ".." || name.startsWith("~") ? "~" + name : name);
const path = (...parts) => parts.map(segment).join("/");
const query = (params) => {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") q.set(k, v);
  const text = q.toString();
  return text ? "?" + text : "";
};

// A duration in milliseconds for people: `450ms`, `42s`, `9m 05s`, `3h 07m`, `2d 04h`.
function duration(ms) {
  if (ms === null || ms === undefined) return "-";
  const sign = ms < 0 ? "-" : "";
  ms = Math.abs(Math.round(ms));
  if (ms < 1000) return sign + ms + "ms";
  const s = Math.floor(ms / 1000);
  const two = (n) => String(n).padStart(2, "0");
  if (s < 60) return sign + s + "s";
  if (s < 3600) return sign + Math.floor(s / 60) + "m " + two(s % 60) + "s";
  if (s < 86400) return sign + Math.floor(s / 3600) + "h " + two(Math.floor(s / 60) % 60) + "m";
  return sign + Math.floor(s / 86400) + "d " + two(Math.floor(s / 3600) % 24) + "h";
}

async function api(url, options = {}) {
  const response = await fetch(url, { ...options, headers: { ...auth, ...(options.headers || {}) } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || response.status + " " + response.statusText);
  return body;
}

function change(url) {
  return api(url, { method: "POST", headers: { "x-streamx-action": "1" } });
}

// The outcome of something the user did (replay, purge, opening a panel).
function say(text, ok) {
  const m = $("#message");
  m.textContent = text;
  m.className = ok ? "ok" : "";
}

// The state of the figures: a warning while sampling or the API fails, hidden again by the
// next refresh that succeeds.
function banner(text) {
  const b = $("#banner");
  b.hidden = !text;
  b.textContent = text || "";
}

// What the banner says about an overview whose `error` is set, or whose figures are
// `stale` (sampling stopped): since when Redis is unreachable (when the server says) and how
// old the figures shown are.
function sampleWarning(o) {
  const parts = [];
  if (!o.error) return "Figures are not being refreshed: the last sample is from " + duration(o.age_ms) + " ago";
  if (o.unreachable_since_ms) parts.push("Redis unreachable since " + new Date(o.unreachable_since_ms).toLocaleTimeString());
  else parts.push("Sampling failed");
  const age = o.age_ms ?? o.figures_age_ms ?? (o.time_ms ? Date.now() - o.time_ms : null);
  if (age !== null && age !== undefined) parts.push("figures from " + duration(age) + " ago");
  return parts.join("; ") + ": " + o.error;
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
    cell(row, s.no_permission ? s.stream + " (no permission)" : s.stream);
    cell(row, s.length, "num length");
    cell(row, "", "num");
    cell(row, "", "num");
    cell(row, "", "num");
    cell(row, rate(s.published_per_sec), "num in");
    cell(row, "", "num");
    cell(row, "", "num");
    const dlq = button(String(s.dead_letters), "show-dlq", () => openDeadLetters(s.stream));
    dlq.title = "show the dead letters of " + s.stream;
    cell(row, dlq, "num dead-letters");
    cell(row, s.scheduled, "num scheduled");
    if (state.dlq && state.dlq.stream === s.stream) row.classList.add("selected");
    rows.push(row);
    for (const g of s.groups) {
      const gr = document.createElement("tr");
      gr.className = "group";
      gr.dataset.stream = s.stream;
      gr.dataset.group = g.name;
      gr.dataset.key = "g\n" + s.stream + "\n" + g.name;
      // The name, a "paused" badge while the group is paused, and the Pause / Resume button:
      // several nodes in the cell (a fragment), so that a refresh that changes the state
      // replaces the cell (a cell of one button would only take the new label, and keep the
      // old badge and the old action).
      const name = document.createDocumentFragment();
      name.append(g.name);
      if (g.paused) {
        const badge = document.createElement("span");
        badge.className = "badge paused";
        badge.textContent = "paused";
        name.append(" ", badge);
      }
      const toggle = button(g.paused ? "Resume" : "Pause", "write pause-group", () => pauseAction(s.stream, g.name, !g.paused));
      toggle.title = (g.paused ? "resume " : "pause ") + g.name + ": its consumers start handlers again / stop starting them";
      name.append(" ", toggle);
      cell(gr, name, "name");
      cell(gr, "", "num");
      cell(gr, g.lag, "num lag");
      cell(gr, button(String(g.pending), "show-pending", () => openPending(s.stream, g.name)), "num pending");
      const members = button(String(g.consumers), "show-consumers", () => openConsumers(s.stream, g.name));
      members.title = "show the consumers of " + g.name;
      cell(gr, members, "num consumers");
      cell(gr, "", "num");
      cell(gr, rate(s.consumed_per_sec[g.name]), "num out");
      cell(gr, rate((s.acknowledged_per_sec || {})[g.name]), "num acked");
      cell(gr, "", "num");
      cell(gr, "", "num");
      const open = (panel) => panel && panel.stream === s.stream && panel.group === g.name;
      if (open(state.pending) || open(state.consumers)) gr.classList.add("selected");
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

// Pauses a group (within a second no consumer of it starts a handler; those running finish)
// or resumes it.
async function pauseAction(stream, group, pause) {
  const question = pause
    ? "Pause " + group + " on " + stream + "? Its consumers stop starting handlers until it is resumed."
    : "Resume " + group + " on " + stream + "?";
  if (!confirm(question)) return;
  try {
    await change("/api/" + path("streams", stream, "groups", group, pause ? "pause" : "resume"));
    say((pause ? "Paused " : "Resumed ") + group, true);
    await refresh();
  } catch (e) {
    say(e.message);
  }
}

// The sum of figures (an unknown one counts 0).
const total = (values) => values.reduce((a, b) => a + (b || 0), 0);

// Topics, one row each with its totals (lag and pending summed over groups and shards, and
// how many shards a process owns per group); a click on a topic shows its shards, each with
// its groups' lag, pending and lease holder.
function renderTopics(topics) {
  $("#topics-panel").hidden = topics.length === 0;
  const rows = [];
  for (const t of topics) {
    const open = state.openTopics.has(t.topic);
    const row = document.createElement("tr");
    row.className = "topic" + (open ? " selected" : "");
    row.dataset.topic = t.topic;
    row.dataset.key = "t\n" + t.topic;
    const toggle = button((open ? "▾ " : "▸ ") + t.topic, "show-shards", () => {
      if (state.openTopics.has(t.topic)) state.openTopics.delete(t.topic);
      else state.openTopics.add(t.topic);
      renderTopics(state.topics);
    });
    toggle.title = (open ? "hide" : "show") + " the shards of " + t.topic;
    cell(row, toggle, "name");
    cell(row, t.shards, "num shards");
    cell(row, t.length, "num length");
    cell(row, total(t.groups.map((g) => g.lag)), "num lag");
    cell(row, total(t.groups.map((g) => g.pending)), "num pending");
    cell(row, t.dead_letters, "num dead-letters");
    cell(row, t.scheduled, "num scheduled");
    cell(row, t.groups.map((g) => g.name + " " + g.owned_shards + "/" + t.shards + " owned").join(", ") || "-", "owners");
    rows.push(row);
    if (!open) continue;
    for (const s of t.shard_figures || []) {
      const sr = document.createElement("tr");
      sr.className = "shard";
      sr.dataset.topic = t.topic;
      sr.dataset.shard = String(s.index);
      sr.dataset.key = "sh\n" + t.topic + "\n" + s.index;
      cell(sr, s.index + ": " + s.stream, "name");
      cell(sr, "", "num");
      cell(sr, s.length, "num length");
      cell(sr, total(s.groups.map((g) => g.lag)), "num lag");
      cell(sr, total(s.groups.map((g) => g.pending)), "num pending");
      cell(sr, s.dead_letters, "num dead-letters");
      cell(sr, s.scheduled, "num scheduled");
      cell(sr, "", "owners");
      rows.push(sr);
      for (const g of s.groups) {
        const gr = document.createElement("tr");
        gr.className = "shard-group";
        gr.dataset.topic = t.topic;
        gr.dataset.shard = String(s.index);
        gr.dataset.group = g.name;
        gr.dataset.key = "sg\n" + t.topic + "\n" + s.index + "\n" + g.name;
        cell(gr, g.name, "name");
        cell(gr, "", "num");
        cell(gr, "", "num");
        cell(gr, g.lag, "num lag");
        cell(gr, g.pending, "num pending");
        cell(gr, "", "num");
        cell(gr, "", "num");
        cell(gr, g.owner === null ? "-" : g.owner + " (epoch " + g.epoch + ")", "owner");
        rows.push(gr);
      }
    }
  }
  syncRows($("#topics tbody"), rows);
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
    acknowledged: sum(streams.map((s) => s.acknowledged || s.consumed.map(() => null))),
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
    { label: "acked", color: "#e8a317", values: d.acknowledged },
  ]);
  drawChart($("#chart-lag"), $("#legend-lag"), d.t, [{ label: "lag", color: "#7b4de0", values: d.lag }]);
  drawChart($("#chart-dead-letters"), $("#legend-dead-letters"), d.t, [
    { label: "dead letters", color: "#d9480f", values: d.deadLetters },
  ]);
}

// Polls the overview and the open panels. Every problem is shown in the banner, and the
// banner goes away with the first refresh that has none. The overview's own warning shows
// at once, before the open panels are loaded (together); a panel that does not answer (the
// server gives up after 5 s) adds its problem when it does.
async function refresh() {
  let o;
  try {
    o = await api("/api/overview");
  } catch (e) {
    const age = state.overview ? "; figures from " + duration(Date.now() - state.overview.time_ms) + " ago" : "";
    banner("The dashboard cannot be reached" + age + ": " + String(e.message || e));
    return;
  }
  state.overview = o;
  state.readOnly = o.read_only;
  document.body.classList.toggle("read-only", o.read_only);
  $("#mode").hidden = !o.read_only;
  $("#redis").textContent = o.redis;
  $("#updated").textContent = "updated " + new Date(o.time_ms).toLocaleTimeString();
  const problems = o.error || o.stale ? [sampleWarning(o)] : [];
  // With the panels' problems of the last refresh until they answer again (no flicker).
  banner(problems.concat(state.panelProblems).join(" · ") || null);
  renderStreams(o.streams);
  renderCharts(o.series);
  let topicsProblem = null;
  try {
    state.topics = (await api("/api/topics")).topics;
    renderTopics(state.topics);
  } catch (e) {
    topicsProblem = "cannot load the topics: " + String(e.message || e);
  }
  const panels = [
    [state.pending, "pending entries", loadPending],
    [state.consumers, "consumers", loadConsumers],
    [state.retries, "retry schedule", loadRetries],
    [state.dlq && dlqStale(o), "dead letters", loadDeadLetters],
  ];
  const failed = [];
  await Promise.all(
    panels
      .filter(([open]) => open)
      .map(([, what, load]) =>
        load().catch((e) => failed.push("cannot load the " + what + ": " + String(e.message || e))),
      ),
  );
  if (topicsProblem) failed.push(topicsProblem);
  state.panelProblems = failed;
  banner(problems.concat(failed).join(" · ") || null);
}

// One refresh at a time: the next starts POLL_MS after the previous one ends, however long
// that took (a slow Redis never piles up requests).
async function poll() {
  try {
    await refresh();
  } finally {
    setTimeout(poll, POLL_MS);
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
    cell(row, duration(e.idle_ms), "num idle");
    cell(row, e.deliveries, "num");
    return row;
  });
  syncRows($("#pending tbody"), rows);
}

// The engine's placeholder consumers, by role, as the page names them.
const PLACEHOLDERS = { retry_schedule: "retry schedule", suspects: "suspects" };

function openConsumers(stream, group) {
  state.consumers = { stream, group };
  loadConsumers().catch((e) => say(e.message));
}

async function loadConsumers() {
  const { stream, group } = state.consumers;
  const c = await api("/api/" + path("streams", stream, "groups", group, "consumers"));
  $("#consumers-panel").hidden = false;
  $("#consumers-title").textContent = stream + " / " + group;
  const members = c.consumers.filter((m) => m.role === "member");
  $("#consumers-total").textContent = members.length + (members.length === 1 ? " member" : " members");
  const rows = c.consumers.map((m) => {
    const row = document.createElement("tr");
    const placeholder = PLACEHOLDERS[m.role];
    row.className = placeholder ? "placeholder" : "member";
    row.dataset.key = stream + "\n" + group + "\n" + m.name;
    row.dataset.name = m.name;
    row.dataset.role = m.role;
    cell(row, placeholder ? "(" + placeholder + ")" : m.name, "name");
    cell(row, m.pending, "num pending");
    cell(row, duration(m.idle_ms), "num idle");
    cell(row, placeholder ? "" : duration(m.heartbeat_age_ms), "num heartbeat");
    const deadline = m.deadline_in_ms === null || m.deadline_in_ms === undefined ? "-"
      : m.deadline_in_ms >= 0 ? "in " + duration(m.deadline_in_ms) : "passed " + duration(-m.deadline_in_ms) + " ago";
    cell(row, placeholder ? "" : deadline, "num deadline");
    return row;
  });
  syncRows($("#consumers tbody"), rows);
}

// The retry schedule of a group: a page of it from `offset`.
function openRetries(stream, group) {
  state.retries = { stream, group, offset: 0, next: null };
  loadRetries().catch((e) => say(e.message));
}

async function loadRetries() {
  const panel = state.retries;
  const { stream, group } = panel;
  const r = await api("/api/" + path("streams", stream, "groups", group, "retries") + query({ offset: panel.offset }));
  panel.next = r.next_offset;
  $("#retries-panel").hidden = false;
  $("#retries-title").textContent = stream + " / " + group;
  $("#retries-key").textContent = r.key;
  $("#retries-total").textContent = String(r.total);
  $("#retries-next").disabled = r.next_offset === null;
  $("#retries-first").disabled = panel.offset === 0;
  const rows = r.entries.map((e) => {
    const row = document.createElement("tr");
    row.dataset.id = e.id;
    row.dataset.key = r.key + "\n" + e.id + "\n" + state.readOnly;
    cell(row, e.id, "id");
    cell(row, e.due_in_ms > 0 ? "in " + duration(e.due_in_ms) : "due now", "num due");
    cell(row, e.attempts, "num attempts");
    const pre = document.createElement("pre");
    pre.textContent = e.exists === false ? "(trimmed from the stream)" : e.payload === null ? "(no payload)" : e.payload.slice(0, 400);
    cell(row, pre, "payload");
    if (!state.readOnly) {
      const actions = document.createElement("span");
      actions.className = "row-actions";
      actions.append(
        button("Run now", "run", () => retryAction(e.id, "run")),
        button("Delete", "delete danger", () => retryAction(e.id, "delete")),
      );
      cell(row, actions, "write");
    }
    return row;
  });
  $("#retries-empty").hidden = rows.length > 0;
  syncRows($("#retries tbody"), rows);
}

// Runs one scheduled retry now, or deletes it (the group then never handles that entry).
async function retryAction(id, action) {
  const { stream, group } = state.retries;
  const question = action === "run" ? "Run retry " + id + " of " + group + " now?"
    : "Delete retry " + id + "? " + group + " will never handle this entry.";
  if (!confirm(question)) return;
  try {
    await change("/api/" + path("streams", stream, "groups", group, "retries", id, action));
    say(action === "run" ? id + " is due now" : "deleted retry " + id, true);
  } catch (e) {
    say(e.message);
  }
  await loadRetries().catch((e) => say(e.message));
}

$("#show-retries").addEventListener("click", () => state.consumers && openRetries(state.consumers.stream, state.consumers.group));
$("#retries-next").addEventListener("click", () => {
  if (!state.retries || state.retries.next === null) return;
  state.retries.offset = state.retries.next;
  loadRetries().catch((e) => say(e.message));
});
$("#retries-first").addEventListener("click", () => {
  if (!state.retries) return;
  state.retries.offset = 0;
  loadRetries().catch((e) => say(e.message));
});

// The dead-letter panel: its stream, the filters in the form, and the page shown (`after`
// is its cursor).
function openDeadLetters(stream) {
  state.dlq = { stream, after: null, loadedAt: 0, count: null };
  $("#dlq-stream").value = "";
  $("#dlq-group").value = "";
  $("#dlq-kind").value = "";
  loadDeadLetters().catch((e) => say(e.message));
}

// The filters in the form, as the API's query.
function dlqSelection() {
  return { dlq_stream: $("#dlq-stream").value.trim(), group: $("#dlq-group").value.trim(), kind: $("#dlq-kind").value };
}

function dlqStale(o) {
  const s = o.streams.find((x) => x.stream === state.dlq.stream);
  const count = s ? s.dead_letters : null;
  const stale = count !== state.dlq.count || Date.now() - state.dlq.loadedAt > DLQ_POLL_MS;
  state.dlq.count = count;
  return stale;
}

async function loadDeadLetters() {
  const panel = state.dlq;
  const stream = panel.stream;
  const d = await api("/api/" + path("streams", stream, "dead-letters") + query({ ...dlqSelection(), after: panel.after, limit: $("#dlq-limit").value }));
  panel.loadedAt = Date.now();
  panel.next = d.next;
  $("#dlq-panel").hidden = false;
  $("#dlq-title").textContent = stream;
  $("#dlq-key").textContent = d.dead_letter_stream;
  $("#dlq-total").textContent = String(d.total);
  $("#dlq-next").disabled = !d.next;
  $("#dlq-first").disabled = panel.after === null;
  const rows = d.entries.map((l) => {
    const row = document.createElement("tr");
    row.dataset.id = l.id;
    row.dataset.key = d.dead_letter_stream + "\n" + l.id + "\n" + state.readOnly;
    cell(row, l.id, "id");
    cell(row, l.group, "group");
    cell(row, l.kind, "kind");
    cell(row, l.deliveries, "num");
    cell(row, l.error, "error");
    const pre = document.createElement("pre");
    pre.textContent = l.payload === null ? "(no payload)" : l.payload.slice(0, 400);
    cell(row, pre, "payload");
    if (!state.readOnly) {
      const actions = document.createElement("span");
      actions.className = "row-actions";
      actions.append(
        button("Replay", "replay", () => letterAction(l.id, "replay")),
        button("Delete", "delete danger", () => letterAction(l.id, "delete")),
      );
      cell(row, actions, "write");
    }
    return row;
  });
  $("#dlq-empty").hidden = rows.length > 0;
  syncRows($("#dead-letters tbody"), rows);
}

// Reloads the dead letters, reporting a failure.
const reloadDeadLetters = () => loadDeadLetters().catch((e) => say(e.message));

// Replays or deletes one dead letter, after asking.
async function letterAction(id, action) {
  const stream = state.dlq.stream;
  const question = action === "replay" ? "Replay dead letter " + id + " to " + stream + "?"
    : "Delete dead letter " + id + " of " + stream + "? This cannot be undone.";
  if (!confirm(question)) return;
  try {
    const url = "/api/" + path("streams", stream, "dead-letters", id, action) + query({ dlq_stream: dlqSelection().dlq_stream });
    const r = await change(url);
    say(action === "replay" ? "replayed " + id + " as " + r.replayed_as : "deleted " + id, true);
  } catch (e) {
    say(e.message);
  }
  await reloadDeadLetters();
}

// Replays or deletes every dead letter the filters match: the server counts them first, the
// question shows that count, and the action stops at the newest letter counted.
async function everyLetter(action) {
  if (!state.dlq) return;
  const stream = state.dlq.stream;
  const selection = dlqSelection();
  let counted;
  try {
    counted = await api("/api/" + path("streams", stream, "dead-letters", "matching") + query(selection));
  } catch (e) {
    say(e.message);
    return;
  }
  const n = counted.matching;
  const which = [selection.group && "group " + selection.group, selection.kind && "kind " + selection.kind].filter(Boolean);
  const what = n + (n === 1 ? " dead letter" : " dead letters") + " of " + stream + (which.length ? " (" + which.join(", ") + ")" : "");
  if (n === 0) {
    say("no dead letters match", true);
    return;
  }
  const question = action === "replay" ? "Replay " + what + "?" : "Delete " + what + "? This cannot be undone.";
  if (!confirm(question)) return;
  try {
    const r = await change("/api/" + path("streams", stream, "dead-letters", action) + query({ ...selection, upto: counted.upto }));
    say((action === "replay" ? "replayed " : "purged ") + r.done + " dead letters", true);
  } catch (e) {
    say(e.message);
  }
  state.dlq.after = null;
  await reloadDeadLetters();
}

function firstPage() {
  state.dlq.after = null;
  reloadDeadLetters();
}

$("#replay-all").addEventListener("click", () => everyLetter("replay"));
$("#purge-all").addEventListener("click", () => everyLetter("purge"));
$("#dlq-filters").addEventListener("submit", (e) => {
  e.preventDefault();
  if (state.dlq) firstPage();
});
$("#dlq-kind").addEventListener("change", () => state.dlq && firstPage());
$("#dlq-limit").addEventListener("change", () => state.dlq && firstPage());
$("#dlq-next").addEventListener("click", () => {
  if (!state.dlq || !state.dlq.next) return;
  state.dlq.after = state.dlq.next;
  reloadDeadLetters();
});
$("#dlq-first").addEventListener("click", () => state.dlq && firstPage());
$("#chart-stream").addEventListener("change", () => state.overview && renderCharts(state.overview.series));
poll();
