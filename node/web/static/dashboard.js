/* spargo dashboard: draws the snapshots the server pushes on /ws (see node/web/state.py).
   Read-only: it never sends anything but the WebSocket handshake. Peer-supplied strings are
   set as text (textContent), never as HTML. */
"use strict";

const STATES = { online: "up", stale: "stale", offline: "gone", unknown: "no presence" };
const COLOURS = { online: "#2e9d4f", stale: "#e39b00", offline: "#d0342c", unknown: "#8a8f98" };
const COLUMNS = [
  ["peer_id", "peer"], ["state", "state"], ["round", "round"], ["accuracy", "accuracy"],
  ["age_s", "age"], ["drops", "drops"], ["bytes_sent", "sent MB"],
  ["bytes_received", "received MB"], ["loss", "loss"], ["density", "density"],
  ["rounds_behind", "behind"], ["malformed", "malformed"],
];
// key, title, colour, y range: "unit" (0..1), "zero" (from 0 up) or "pad" (around the data)
const CHARTS = [
  ["accuracy", "accuracy", "#2e6fd0", "unit"], ["loss", "loss", "#c2410c", "pad"],
  ["mb_sent", "MB sent per round", "#7c3aed", "zero"], ["drops", "drops per round", "#d0342c", "zero"],
];

function yRange(kind) {
  return (u, lo, hi) => {
    if (lo === null || hi === null) return [0, 1];
    if (kind === "unit") return [0, 1];
    if (kind === "zero" && hi <= 0) return [0, 1];
    const pad = Math.max((hi - lo) * 0.1, Math.abs(hi) * 0.05, 1e-6);
    return kind === "zero" ? [Math.min(0, lo), hi + pad] : [lo - pad, hi + pad];
  };
}
const SVG = "http://www.w3.org/2000/svg";
let sortKey = "peer_id";
let sortDir = 1;
let last = null;
const charts = {};

function el(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function fmt(key, v) {
  if (v === null || v === undefined) return "–";
  if (key === "age_s") return v < 600 ? `${v.toFixed(0)} s` : `${(v / 60).toFixed(0)} min`;
  if (key.startsWith("bytes")) return (v / 1e6).toFixed(1);
  if (key === "state") return STATES[v] || v;
  if (typeof v === "number" && ["accuracy", "loss", "density"].includes(key)) return v.toFixed(3);
  return String(v);
}

function drawTopology(snap) {
  const svg = document.getElementById("topology");
  svg.replaceChildren();
  const peers = snap.peers;
  document.getElementById("layout-kind").textContent =
    snap.geographic ? "geographic (longitude, latitude)" : "";
  if (!peers.length) {
    svg.append(el("text", { x: 500, y: 280 }, "no peers yet"));
    return;
  }
  const xs = peers.map((p) => p.x), ys = peers.map((p) => p.y);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const pad = 60, w = 1000 - 2 * pad, h = 560 - 2 * pad;
  const scale = Math.min(w / Math.max(x1 - x0, 1e-9), h / Math.max(y1 - y0, 1e-9));
  const ox = pad + (w - (x1 - x0) * scale) / 2, oy = pad + (h - (y1 - y0) * scale) / 2;
  const at = {};
  for (const p of peers) at[p.peer_id] = [ox + (p.x - x0) * scale, oy + (p.y - y0) * scale];
  for (const e of snap.edges) {
    if (!(e.a in at && e.b in at)) continue;
    const [ax, ay] = at[e.a], [bx, by] = at[e.b];
    svg.append(el("line", {
      x1: ax, y1: ay, x2: bx, y2: by,
      class: (e.graph ? "graph" : "traffic-only") + (e.recent > 0 ? " busy" : ""),
      "stroke-width": (1.5 + 5 * e.recent).toFixed(2), "stroke-opacity": (0.35 + 0.65 * e.recent).toFixed(2),
      "data-edge": `${e.a}|${e.b}`,
    }));
  }
  for (const p of peers) {
    const [x, y] = at[p.peer_id];
    const acc = typeof p.accuracy === "number" ? p.accuracy : null;
    const r = 9 + 15 * (acc === null ? 0 : Math.max(0, Math.min(1, acc)));
    const g = el("g", { class: "peer", "data-peer": p.peer_id, "data-state": p.state });
    g.append(el("title", {}, `${p.peer_id}: ${STATES[p.state] || p.state}`));
    g.append(el("circle", { cx: x, cy: y, r: r, fill: COLOURS[p.state] || COLOURS.unknown }));
    g.append(el("text", { x: x, y: y - r - 6 }, p.peer_id));
    g.append(el("text", { x: x, y: y + r + 15, class: "acc" },
      acc === null ? "" : `${(100 * acc).toFixed(1)} %`));
    svg.append(g);
  }
}

function drawAlerts(snap) {
  const list = document.getElementById("alerts");
  list.replaceChildren();
  document.getElementById("alert-count").textContent = snap.alerts.length ? `${snap.alerts.length}` : "";
  if (!snap.alerts.length) {
    const li = document.createElement("li");
    li.className = "none";
    li.textContent = "no alerts";
    list.append(li);
  }
  for (const a of snap.alerts) {
    const li = document.createElement("li");
    li.className = a.level;
    li.dataset.kind = a.kind;
    li.dataset.peer = a.peer_id;
    li.textContent = a.text;
    list.append(li);
  }
}

function chartOptions(title, colour, range, width) {
  return {
    title: title, width: width, height: 190, legend: { show: false },
    scales: { x: { time: false }, y: { range: yRange(range) } },
    axes: [{ label: "round", size: 36, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000] },
      { size: 52 }],
    series: [
      { label: "round" },
      { label: "min", stroke: colour, width: 1, alpha: 0.35, spanGaps: true },
      { label: "mean", stroke: colour, width: 2, spanGaps: true },
      { label: "max", stroke: colour, width: 1, alpha: 0.35, spanGaps: true },
    ],
    bands: [{ series: [3, 1], fill: colour + "2e" }],
  };
}

function drawCharts(snap) {
  const s = snap.series;
  for (const [key, title, colour, range] of CHARTS) {
    const box = document.getElementById(`chart-${key}`);
    const data = [s.round, s[key].min, s[key].mean, s[key].max];
    const width = Math.max(200, box.clientWidth);
    if (!charts[key]) {
      charts[key] = new uPlot(chartOptions(title, colour, range, width), data, box);
    } else {
      if (Math.abs(charts[key].width - width) > 4) charts[key].setSize({ width: width, height: 190 });
      charts[key].setData(data);
    }
    box.dataset.points = String(s.round.length);
  }
}

function compare(a, b) {
  const x = a[sortKey], y = b[sortKey];
  if (x === y) return 0;
  if (x === null || x === undefined) return 1;
  if (y === null || y === undefined) return -1;
  if (typeof x === "number" && typeof y === "number") return sortDir * (x - y);
  return sortDir * String(x).localeCompare(String(y), undefined, { numeric: true });
}

function drawTable(snap) {
  const head = document.querySelector("#peers thead tr");
  if (!head.children.length) {
    for (const [key, label] of COLUMNS) {
      const th = document.createElement("th");
      th.textContent = label;
      th.dataset.key = key;
      th.addEventListener("click", () => {
        sortDir = sortKey === key ? -sortDir : 1;
        sortKey = key;
        if (last) drawTable(last);
      });
      head.append(th);
    }
  }
  for (const th of head.children) {
    th.classList.toggle("sorted", th.dataset.key === sortKey);
    th.classList.toggle("desc", th.dataset.key === sortKey && sortDir < 0);
  }
  const body = document.querySelector("#peers tbody");
  body.replaceChildren();
  for (const p of [...snap.peers].sort(compare)) {
    const tr = document.createElement("tr");
    tr.dataset.peer = p.peer_id;
    tr.dataset.state = p.state;
    for (const [key] of COLUMNS) {
      const td = document.createElement("td");
      if (key === "state") {
        td.className = "state";
        const badge = document.createElement("span");
        badge.style.background = COLOURS[p.state] || COLOURS.unknown;
        badge.textContent = fmt(key, p[key]);
        td.append(badge);
      } else {
        td.textContent = fmt(key, p[key]);
      }
      tr.append(td);
    }
    body.append(tr);
  }
}

function render(snap) {
  last = snap;
  document.getElementById("swarm").textContent = snap.swarm;
  const counts = {};
  for (const p of snap.peers) counts[p.state] = (counts[p.state] || 0) + 1;
  const parts = Object.entries(counts).map(([k, n]) => `${n} ${STATES[k] || k}`);
  if (snap.hidden) parts.push(`${snap.hidden} hidden`);
  if (snap.malformed) parts.push(`${snap.malformed} malformed dropped`);
  const rounds = snap.series.round;
  if (rounds.length) parts.push(`round ${rounds[rounds.length - 1]}`);
  document.getElementById("summary").textContent = parts.join(" · ");
  drawTopology(snap);
  drawAlerts(snap);
  drawCharts(snap);
  drawTable(snap);
  document.body.dataset.version = String(snap.version);
}

function connect() {
  const link = document.getElementById("link");
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const socket = new WebSocket(scheme + location.host + "/ws");
  socket.onopen = () => { link.textContent = "live"; link.className = "link live"; };
  socket.onmessage = (event) => render(JSON.parse(event.data));
  socket.onclose = () => {
    link.textContent = "disconnected, retrying…";
    link.className = "link";
    setTimeout(connect, 2000);
  };
}

window.addEventListener("resize", () => { if (last) drawCharts(last); });
connect();
