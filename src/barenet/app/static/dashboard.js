// barenet dashboard: polls /api/runs and the selected run every 2 s and redraws; no reloads,
// no libraries. Run names come from directory names: they are only ever set as text.
"use strict";

const POLL_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
let selected = decodeURIComponent((location.hash.match(/^#run=(.*)$/) || [])[1] || "") || null;
let timer = null;

function el(tag, attrs = {}, text) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

const pct = (v) => (v === null || v === undefined ? "–" : (100 * v).toFixed(2) + " %");

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + String(s % 60).padStart(2, "0") + " s";
  return Math.floor(s / 3600) + " h " + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + " min";
}

function statusText(run) {
  if (run.status === "running") return run.phase === "training" ? "training" : run.phase;
  if (run.status === "interrupted") return "interrupted";
  return "finished";
}

function epochText(run) {
  const total = run.epochs || (run.progress && run.progress.epochs) || "?";
  if (run.status === "running" && run.progress && run.phase === "training") {
    return run.progress.epoch + "/" + total;
  }
  return run.epochs_done + "/" + total;
}

function sparkline(values) {
  const svg = el("svg:svg", { class: "spark", viewBox: "0 0 72 22", "aria-hidden": "true" });
  const ys = values.filter((v) => typeof v === "number");
  if (ys.length < 2) return svg;
  const lo = Math.min(...ys), hi = Math.max(...ys), span = hi - lo || 1;
  const pts = ys.map((v, i) => (i * 70 / (ys.length - 1) + 1).toFixed(1) + ","
    + (20 - 18 * (v - lo) / span).toFixed(1));
  svg.appendChild(el("svg:polyline", { points: pts.join(" ") }));
  return svg;
}

function renderRuns(data) {
  $("root").textContent = "runs in " + data.root;
  const body = $("runs").tBodies[0];
  body.replaceChildren();
  const counts = { running: 0, finished: 0, interrupted: 0 };
  let group = null;
  // Runs of one sweep (or multi-seed run) stay together under its name.
  const ordered = [];
  const groups = new Map();
  for (const run of data.runs) {
    counts[run.status] += 1;
    const key = run.group || "";
    if (!groups.has(key)) { groups.set(key, []); ordered.push(key); }
    groups.get(key).push(run);
  }
  for (const key of ordered) {
    for (const run of groups.get(key)) {
      if (run.group && run.group !== group) {
        const tr = el("tr", { class: "group" });
        const td = el("td", { colspan: "7" }, run.group + "/");
        const info = (data.groups || []).find((g) => g.id === run.group);
        if (info && info.report) {
          td.append(" ");
          td.appendChild(el("a", { href: info.report, target: "_blank" }, "sweep report"));
        }
        tr.appendChild(td);
        body.appendChild(tr);
      }
      group = run.group;
      const tr = el("tr", { class: "run " + (run.group ? "in-group " : "")
        + (run.id === selected ? "selected" : ""), "data-run": run.id });
      tr.appendChild(el("td", {}, run.name));
      const status = el("td");
      const badge = el("span", { class: "status " + run.status,
        title: (run.progress && run.progress.reason) || "" });
      badge.append(el("span", { class: "dot" }), statusText(run));
      status.appendChild(badge);
      tr.appendChild(status);
      const epoch = el("td", { class: "num" }, epochText(run));
      if (run.status === "running" && run.progress && run.progress.batches) {
        const mini = el("span", { class: "mini" });
        mini.appendChild(el("div", { style: "width:"
          + (100 * run.progress.batch / run.progress.batches).toFixed(1) + "%" }));
        epoch.appendChild(mini);
      }
      tr.appendChild(epoch);
      const spark = el("td");
      spark.appendChild(sparkline(run.curve));
      tr.appendChild(spark);
      tr.appendChild(el("td", { class: "num" }, pct(run.best_val_accuracy)));
      tr.appendChild(el("td", { class: "num" }, pct(run.test_accuracy)));
      const link = el("td");
      if (run.report) link.appendChild(el("a", { href: run.report, target: "_blank" }, "report"));
      tr.appendChild(link);
      tr.addEventListener("click", (e) => {
        if (e.target.tagName === "A") return;
        select(run.id);
      });
      body.appendChild(tr);
    }
  }
  $("counts").textContent = data.runs.length ? [counts.running + " running",
    counts.finished + " finished", counts.interrupted + " interrupted"].join(" · ") : "";
  $("empty").hidden = data.runs.length > 0;
  if (!data.runs.some((r) => r.id === selected)) {
    const first = data.runs.find((r) => r.status === "running") || data.runs[0];
    selected = first ? first.id : null;
    for (const tr of body.querySelectorAll("tr.run")) {
      tr.classList.toggle("selected", tr.dataset.run === selected);
    }
  }
}

function niceTicks(lo, hi, n) {
  const span = hi - lo || 1;
  const step = Math.pow(10, Math.floor(Math.log10(span / n)));
  const mult = [1, 2, 5, 10].find((m) => span / (m * step) <= n) || 10;
  const s = mult * step;
  const ticks = [];
  for (let v = Math.ceil(lo / s) * s; v <= hi + 1e-12; v += s) ticks.push(+v.toFixed(10));
  return ticks;
}

// A line chart of `series` ([{label, cls, points: [[epoch, value], ...]}]) into `svg`.
function drawChart(svg, series, format) {
  const W = 360, H = 230, L = 50, R = 12, T = 26, B = 24;
  svg.replaceChildren();
  const all = series.flatMap((s) => s.points);
  svg.dataset.points = String(series.length ? series[0].points.length : 0);
  if (!all.length) {
    svg.appendChild(el("svg:text", { x: W / 2, y: H / 2, "text-anchor": "middle",
      class: "empty" }, "the first point appears when the first epoch ends"));
    return;
  }
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  const x0 = Math.min(1, ...xs), x1 = Math.max(x0 + 1, ...xs);
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  const pad = (y1 - y0) * 0.08 || Math.abs(y1) * 0.05 || 0.01;
  y0 -= pad; y1 += pad;
  const px = (x) => L + (W - L - R) * (x - x0) / (x1 - x0);
  const py = (y) => T + (H - T - B) * (1 - (y - y0) / (y1 - y0));
  const axis = el("svg:g", { class: "axis" });
  for (const v of niceTicks(y0, y1, 5)) {
    axis.appendChild(el("svg:line", { class: "grid", x1: L, x2: W - R, y1: py(v), y2: py(v) }));
    axis.appendChild(el("svg:text", { x: L - 6, y: py(v) + 4, "text-anchor": "end" }, format(v)));
  }
  for (const v of niceTicks(x0, x1, 8).filter((v) => Number.isInteger(v))) {
    axis.appendChild(el("svg:text", { x: px(v), y: H - B + 16, "text-anchor": "middle" }, v));
  }
  svg.appendChild(axis);
  series.forEach((s, k) => {
    if (!s.points.length) return;
    const d = s.points.map((p, i) => (i ? "L" : "M") + px(p[0]).toFixed(1) + " "
      + py(p[1]).toFixed(1)).join(" ");
    svg.appendChild(el("svg:path", { d, class: s.cls }));
    if (s.points.length <= 60) {
      for (const p of s.points) {
        const c = el("svg:circle", { cx: px(p[0]), cy: py(p[1]), r: 2.8, class: s.cls });
        c.appendChild(el("svg:title", {}, s.label + ", epoch " + p[0] + ": " + format(p[1], true)));
        svg.appendChild(c);
      }
    }
    const legend = el("svg:g", { class: "legend" });
    const lx = W - R - 160 + 72 * k, ly = 12;
    legend.appendChild(el("svg:line", { x1: lx, x2: lx + 18, y1: ly, y2: ly, class: s.cls }));
    legend.appendChild(el("svg:text", { x: lx + 22, y: ly + 4 }, s.label));
    svg.appendChild(legend);
  });
}

function seriesOf(history, key) {
  const pick = (k) => history.filter((r) => typeof r[k] === "number").map((r) => [r.epoch, r[k]]);
  const out = [{ label: "train", cls: "train", points: pick(key) }];
  if (history.some((r) => typeof r["val_" + key] === "number")) {
    out.push({ label: "validation", cls: "val", points: pick("val_" + key) });
  }
  return out;
}

function renderDetail(run) {
  $("detail").hidden = false;
  $("run-name").textContent = run.id === "." ? run.name : run.id;
  $("run-status").textContent = statusText(run)
    + (run.status === "interrupted" && run.progress && run.progress.reason
      ? " (" + run.progress.reason + ")" : "");
  $("run-description").textContent = run.description;
  const p = run.progress;
  const total = run.epochs || (p && p.epochs) || run.epochs_done || 1;
  const live = run.status === "running" && p;
  const epochsDone = run.epochs_done;
  const inEpoch = live && p.batches ? p.batch / p.batches : 0;
  $("epoch-text").textContent = (live ? p.epoch : epochsDone) + " of " + total;
  $("epoch-bar").style.width = (100 * Math.min((epochsDone + (live && p.epoch > epochsDone
    ? inEpoch : 0)) / total, 1)).toFixed(1) + "%";
  $("batch-text").textContent = live && p.batches ? p.batch + " of " + p.batches : "–";
  $("batch-bar").style.width = (100 * (run.status === "finished" ? 1 : inEpoch)).toFixed(1) + "%";
  let text;
  if (run.status === "running") {
    text = run.phase === "starting" ? "loading the data…"
      : run.phase === "evaluating" ? "training done; evaluating on the test set…"
        : "running loss " + (p && p.loss !== null ? p.loss.toFixed(4) : "–")
          + " · elapsed " + duration(p && p.elapsed) + " · ETA " + duration(p && p.eta);
  } else if (run.status === "finished") {
    text = "finished: " + run.epochs_done + " epochs, test accuracy " + pct(run.test_accuracy);
  } else {
    text = "stopped after " + run.epochs_done + " epochs; continue with: barenet train --resume "
      + run.path;
  }
  $("progress-text").textContent = text;
  drawChart($("loss-chart"), seriesOf(run.history, "loss"), (v) => v.toFixed(3));
  drawChart($("accuracy-chart"), seriesOf(run.history, "accuracy"),
    (v, long) => (100 * v).toFixed(long ? 2 : 1) + " %");
  const links = $("run-links");
  links.replaceChildren();
  if (run.report) links.appendChild(el("a", { href: run.report, target: "_blank" },
    "open report.html"));
  else links.appendChild(el("span", { class: "muted" }, run.status === "finished"
    ? "no report.html (barenet report " + run.path + " writes it)"
    : "report.html is written when the run finishes"));
}

function select(id) {
  selected = id;
  history.replaceState(null, "", "#run=" + encodeURIComponent(id));
  for (const tr of document.querySelectorAll("tr.run")) {
    tr.classList.toggle("selected", tr.dataset.run === id);
  }
  poll();
}

async function getJSON(url) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error(url + ": HTTP " + response.status);
  return response.json();
}

async function poll() {
  clearTimeout(timer);
  try {
    const data = await getJSON("/api/runs");
    renderRuns(data);
    if (selected !== null) {
      renderDetail(await getJSON("/api/run?run=" + encodeURIComponent(selected)));
    } else {
      $("detail").hidden = true;
    }
    $("connection").textContent = "updated " + new Date().toLocaleTimeString();
    $("connection").classList.remove("lost");
    document.body.dataset.ready = "1";
    document.body.dataset.polls = String(+(document.body.dataset.polls || 0) + 1);
  } catch (err) {
    $("connection").textContent = "cannot reach the dashboard server (stopped?); retrying…";
    $("connection").classList.add("lost");
  }
  timer = setTimeout(poll, POLL_MS);
}

poll();
