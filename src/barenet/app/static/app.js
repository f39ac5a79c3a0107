// barenet draw-a-digit page: strokes on a canvas -> PNG -> POST /api/predict -> bars.
// The server does all preprocessing; this page only draws and shows what comes back.
"use strict";

const $ = (sel) => document.querySelector(sel);
const pad = $("#pad");
const ctx = pad.getContext("2d");
const prediction = $("#prediction");

const state = {
  strokes: [],        // [{width, points: [[x, y], ...]}] in CSS pixels
  current: null,      // the stroke being drawn
  version: 0,         // bumps on every change of the drawing
  inFlight: false,
  queued: false,
  lastSent: 0,
  shown: -1,          // version of the drawing the display answers (-1: none)
  classes: 10,
  threshold: 0.9,     // below this top probability the answer is "not sure"
  last: null,         // [body, version, note] of the prediction shown, for the slider
};
const LIVE_MS = 120;  // at most one request per this while drawing

// Drawing

function resizePad() {
  const size = pad.getBoundingClientRect().width;
  const ratio = window.devicePixelRatio || 1;
  pad.width = Math.round(size * ratio);
  pad.height = Math.round(size * ratio);
  ctx.setTransform(pad.width / size, 0, 0, pad.height / size, 0, 0);
  redraw();
}

function paintBackground() {
  ctx.save();
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
  ctx.restore();
}

function strokeSegment(stroke, from) {
  const pts = stroke.points;
  ctx.strokeStyle = "#000";
  ctx.fillStyle = "#000";
  ctx.lineWidth = stroke.width;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  if (pts.length === 1) {
    ctx.beginPath();
    ctx.arc(pts[0][0], pts[0][1], stroke.width / 2, 0, 2 * Math.PI);
    ctx.fill();
    return;
  }
  ctx.beginPath();
  ctx.moveTo(pts[Math.max(from - 1, 0)][0], pts[Math.max(from - 1, 0)][1]);
  for (let i = Math.max(from, 1); i < pts.length; i++) ctx.lineTo(pts[i][0], pts[i][1]);
  ctx.stroke();
}

function redraw() {
  paintBackground();
  for (const s of state.strokes) strokeSegment(s, 0);
  $("#hint").hidden = state.strokes.length > 0;
}

function changed() {
  state.version += 1;
  pad.dataset.version = String(state.version);
  $("#hint").hidden = state.strokes.length > 0;
  if (state.strokes.length === 0) showIdle();
}

function point(e) {
  const r = pad.getBoundingClientRect();
  return [e.clientX - r.left, e.clientY - r.top];
}

pad.addEventListener("pointerdown", (e) => {
  if (e.button !== 0 || state.current) return;
  e.preventDefault();
  pad.setPointerCapture(e.pointerId);
  let width = Number($("#brush").value);
  if (e.pointerType === "pen" && e.pressure > 0) width *= 0.5 + e.pressure;
  state.current = { width, points: [point(e)], pointerId: e.pointerId };
  state.strokes.push(state.current);
  strokeSegment(state.current, 0);
  changed();
});

pad.addEventListener("pointermove", (e) => {
  const s = state.current;
  if (!s || e.pointerId !== s.pointerId) return;
  e.preventDefault();
  const from = s.points.length;
  const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [];
  for (const ev of events.length ? events : [e]) s.points.push(point(ev));
  strokeSegment(s, from);
  changed();
  livePredict();
});

function endStroke(e) {
  const s = state.current;
  if (!s || e.pointerId !== s.pointerId) return;
  state.current = null;
  delete s.pointerId;
  requestPrediction();
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

function undo() {
  if (state.current) return;
  state.strokes.pop();
  redraw();
  changed();
  if (state.strokes.length) requestPrediction();
}

function clearPad() {
  if (state.current) return;
  state.strokes = [];
  redraw();
  changed();
}

$("#undo").addEventListener("click", undo);
$("#clear").addEventListener("click", clearPad);
$("#brush").addEventListener("input", (e) => { $("#brush-value").value = e.target.value; });
document.addEventListener("keydown", (e) => {
  if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "z") { e.preventDefault(); undo(); }
  else if (e.key === "Escape") clearPad();
});
window.addEventListener("resize", resizePad);

// Predictions

function livePredict() {
  if (performance.now() - state.lastSent >= LIVE_MS) requestPrediction();
}

function requestPrediction() {
  if (state.strokes.length === 0) return;
  if (state.inFlight) { state.queued = true; return; }
  const version = state.version;
  state.inFlight = true;
  state.lastSent = performance.now();
  prediction.dataset.busy = "1";
  pad.toBlob(async (blob) => {
    try {
      const res = await fetch("/api/predict", {
        method: "POST", headers: { "Content-Type": "image/png" }, body: blob });
      const body = await res.json();
      if (version >= state.shown && state.strokes.length) {
        if (res.ok) showPrediction(body, version);
        else showError(body.error || res.statusText, version);
      }
    } catch (err) {
      showError(`no answer from the server (${err.message})`, version);
    } finally {
      state.inFlight = false;
      if (state.queued || state.version !== version) {
        state.queued = false;
        if (state.strokes.length) requestPrediction();
        else prediction.dataset.busy = "0";
      } else {
        prediction.dataset.busy = "0";
      }
    }
  }, "image/png");
}

function buildBars() {
  const list = $("#bars");
  list.innerHTML = "";
  for (let k = 0; k < state.classes; k++) {
    const li = document.createElement("li");
    li.dataset.class = String(k);
    li.innerHTML = `<span class="k">${k}</span><span class="track"><span class="fill"></span>` +
      `</span><span class="p"></span>`;
    list.appendChild(li);
  }
}

function setBars(probs, truth) {
  const top = probs ? probs.indexOf(Math.max(...probs)) : -1;
  document.querySelectorAll("#bars li").forEach((li, k) => {
    const p = probs ? probs[k] : 0;
    li.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
    li.querySelector(".p").textContent = probs ? `${(100 * p).toFixed(1)}%` : "";
    li.classList.toggle("top", k === top);
    li.classList.toggle("truth", truth !== undefined && truth !== null && k === truth);
  });
}

function showPrediction(body, version, note) {
  const p = body.probabilities;
  const pct = `${(100 * p[body.label]).toFixed(1)}%`;
  // "Not sure" below the threshold, and for a drawing unlike every training digit (the
  // server's typical: false) however confident the network is; threshold 0 answers all.
  const unlike = body.typical === false && state.threshold > 0;
  const sure = p[body.label] >= state.threshold && !unlike;
  $("#top-class").textContent = sure ? String(body.label) : "?";
  $("#top-prob").textContent = sure ? pct : "not sure";
  let status = note || (sure ? "" : unlike ? `best guess ${body.label} (${pct}), but this ` +
    `looks like no digit the network was trained on` : `best guess ${body.label} (${pct}), ` +
    `below the ${Math.round(100 * state.threshold)}% threshold: try a clearer digit`);
  if (body.true_label !== null && body.true_label !== undefined) {
    const right = body.true_label === body.label;
    status = `test image #${body.index}, true label ${body.true_label}: ` +
      (right ? "right" : "wrong");
    $("#top").className = right ? "right" : "wrong";
  } else {
    $("#top").className = "";
  }
  $("#status").textContent = status;
  setBars(p, body.true_label);
  drawPixels($("#input28"), body.input);
  if (body.saliency) drawHeat($("#saliency28"), body.saliency);
  state.shown = version;
  state.last = [body, version, note];
  prediction.dataset.version = String(version);
  prediction.dataset.label = String(body.label);
  prediction.dataset.answer = sure ? String(body.label) : "not-sure";
  prediction.dataset.typical = String(body.typical);    // "true", "false" or "null"
  resetAttack(body.input);
}

// The reject option and the adversarial digit

function setThreshold(value) {
  state.threshold = value;
  $("#threshold").value = String(Math.round(100 * value));
  // A calibrated threshold may have decimals: 95.7%; slider steps are whole percents.
  $("#threshold-value").textContent = `${Math.round(1000 * value) / 10}%`;
  if (state.last) showPrediction(...state.last);
}

function resetAttack(input) {
  if (input && input === state.input) return;    // the same prediction, shown again
  state.input = input || null;
  delete $("#attack-figure").dataset.eps;
  $("#fool").disabled = !state.input;
  $("#attack-text").textContent = "the smallest change that flips the answer";
  clearCanvas($("#adversarial28"));
}

async function fool() {
  const input = state.input;
  $("#fool").disabled = true;
  $("#attack-text").textContent = "searching…";
  try {
    const res = await fetch("/api/attack", { method: "POST",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify({ pixels: input }) });
    const a = await res.json();
    if (input !== state.input) return;            // a newer drawing is shown meanwhile
    if (!res.ok) { $("#attack-text").textContent = a.error || res.statusText; return; }
    if (a.eps === null) {
      $("#attack-text").textContent = "no change up to 50% of the pixel range flips it";
      return;
    }
    drawPixels($("#adversarial28"), a.adversarial);
    $("#attack-text").textContent = `every pixel changed by at most ` +
      `${(100 * a.eps).toFixed(1)}% (ε = ${a.eps}): now ${a.adversarial_label} ` +
      `(${(100 * a.adversarial_probability).toFixed(1)}%)`;
    $("#attack-figure").dataset.eps = String(a.eps);
  } catch (err) {
    $("#attack-text").textContent = `no answer from the server (${err.message})`;
  } finally {
    $("#fool").disabled = !state.input;
  }
}

function showError(message, version) {
  $("#top-class").textContent = "?";
  $("#top-prob").textContent = "";
  $("#top").className = "";
  $("#status").textContent = message;
  setBars(null);
  state.shown = version;
  state.last = null;
  prediction.dataset.version = String(version);
  prediction.dataset.label = "";
  prediction.dataset.answer = "";
  resetAttack(null);
}

function showIdle() {
  $("#top-class").textContent = "–";
  $("#top-prob").textContent = "";
  $("#top").className = "";
  $("#status").textContent = "draw a digit, or click a test image below";
  setBars(null);
  clearCanvas($("#input28"));
  clearCanvas($("#saliency28"));
  state.shown = state.version;
  state.last = null;
  prediction.dataset.version = String(state.version);
  prediction.dataset.label = "";
  prediction.dataset.answer = "";
  resetAttack(null);
}

// 28x28 views

function clearCanvas(c) {
  c.getContext("2d").clearRect(0, 0, c.width, c.height);
}

function drawPixels(c, rows) {
  const g = c.getContext("2d");
  const img = g.createImageData(28, 28);
  for (let r = 0; r < 28; r++) {
    for (let col = 0; col < 28; col++) {
      const v = rows[r][col], i = 4 * (28 * r + col);
      img.data[i] = img.data[i + 1] = img.data[i + 2] = v;
      img.data[i + 3] = 255;
    }
  }
  g.putImageData(img, 0, 0);
}

function drawHeat(c, rows) {  // black -> red -> yellow -> white
  const g = c.getContext("2d");
  const img = g.createImageData(28, 28);
  for (let r = 0; r < 28; r++) {
    for (let col = 0; col < 28; col++) {
      const v = Math.max(0, Math.min(1, rows[r][col])), i = 4 * (28 * r + col);
      img.data[i] = Math.round(255 * Math.min(1, 3 * v));
      img.data[i + 1] = Math.round(255 * Math.min(1, Math.max(0, 3 * v - 1)));
      img.data[i + 2] = Math.round(255 * Math.max(0, 3 * v - 2));
      img.data[i + 3] = 255;
    }
  }
  g.putImageData(img, 0, 0);
}

// Gallery

async function loadGallery(kind, digit) {
  const params = new URLSearchParams({ kind, count: kind === "misclassified" ? "40" : "24" });
  if (digit !== undefined) params.set("digit", String(digit));
  document.querySelectorAll("#gallery-tools button").forEach((b) => {
    b.classList.toggle("active", b.dataset.kind === kind &&
      (digit === undefined || b.dataset.digit === String(digit)));
  });
  const box = $("#gallery");
  try {
    const res = await fetch(`/api/gallery?${params}`);
    const body = await res.json();
    if (!res.ok) throw new Error(body.error || res.statusText);
    box.innerHTML = "";
    const what = kind === "misclassified" ? "misclassified" : kind === "class" ?
      `of class ${digit}` : "at random";
    $("#gallery-count").textContent =
      `${body.images.length} of ${body.total} ${what}`;
    for (const item of body.images) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "thumb" + (item.label === item.predicted ? "" : " wrong");
      b.title = `test image #${item.index}: true ${item.label}, predicted ${item.predicted}`;
      b.dataset.index = String(item.index);
      const c = document.createElement("canvas");
      c.width = 28; c.height = 28; c.className = "pixels";
      drawPixels(c, item.pixels);
      const cap = document.createElement("span");
      cap.textContent = item.label === item.predicted ? `${item.label}` :
        `${item.label}→${item.predicted}`;
      b.append(c, cap);
      b.addEventListener("click", () => showTestImage(item.index, b));
      box.appendChild(b);
    }
  } catch (err) {
    box.textContent = `gallery unavailable: ${err.message}`;
  }
}

async function showTestImage(index, button) {
  document.querySelectorAll(".thumb.selected").forEach((b) => b.classList.remove("selected"));
  if (button) button.classList.add("selected");
  const res = await fetch(`/api/test-images/${index}`);
  const body = await res.json();
  if (!res.ok) { showError(body.error || res.statusText, state.version); return; }
  state.strokes = [];
  redraw();
  changed();
  showPrediction(body, state.version);
}

function buildGalleryTools() {
  const digits = $("#gallery-tools .digits");
  for (let k = 0; k < 10; k++) {
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.kind = "class";
    b.dataset.digit = String(k);
    b.textContent = String(k);
    digits.appendChild(b);
  }
  document.querySelectorAll("#gallery-tools button").forEach((b) => {
    b.addEventListener("click", () => loadGallery(b.dataset.kind,
      b.dataset.digit === undefined ? undefined : Number(b.dataset.digit)));
  });
}

// Model card

function fmt(v) {
  if (Array.isArray(v)) return `[${v.map(fmt).join(", ")}]`;
  if (v !== null && typeof v === "object") return JSON.stringify(v);
  return String(v);
}

function layerText(layer) {
  const c = layer.config;
  if (layer.type === "Dense" && c.n_in !== undefined) return `Dense ${c.n_in}→${c.n_out}`;
  if (layer.type === "Dropout" && c.p !== undefined) return `Dropout ${c.p}`;
  const shown = Object.entries(c).filter(([k]) => !["init", "dtype"].includes(k))
    .map(([k, v]) => `${k}=${fmt(v)}`);
  return shown.length ? `${layer.type}(${shown.join(", ")})` : layer.type;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

// The training choices that matter, in words; the full configuration is one click away.
// The augmentation comes worded by the server (m, the model card), which knows when it is off.
function configSummary(c, m) {
  const rows = [];
  const o = c.optimizer || {}, t = c.training || {}, sch = c.schedule || {}, d = c.data || {};
  if (c.model && c.model.hidden) {
    rows.push(["network", (c.model.layers && c.model.layers.length) ? "custom layer list" :
      `hidden ${fmt(c.model.hidden)}, ${c.model.activation}` +
      (c.model.dropout ? `, dropout ${c.model.dropout}` : "") +
      (c.model.batch_norm ? ", batch norm" : "")]);
  }
  if (o.name) {
    const extra = [`lr ${o.lr}`];
    if (o.name === "sgd" && o.momentum) extra.push(`momentum ${o.momentum}` +
      (o.nesterov ? " (Nesterov)" : ""));
    if (o.weight_decay) extra.push(`weight decay ${o.weight_decay}`);
    rows.push(["optimizer", `${o.name}, ${extra.join(", ")}`]);
  }
  if (sch.name) rows.push(["schedule", sch.name + (sch.warmup ? `, warmup ${sch.warmup}` : "")]);
  if (t.epochs) {
    rows.push(["training", `${t.epochs} epochs, batch ${t.batch_size}, seed ${t.seed}` +
      (t.label_smoothing ? `, label smoothing ${t.label_smoothing}` : "") +
      (t.early_stopping ? `, early stopping ${t.early_stopping}` : "")]);
  }
  if (m && m.augmentation) rows.push(["augmentation", m.augmentation]);
  if (d.dataset) rows.push(["data", `${d.dataset}, validation ${d.validation}`]);
  return rows;
}

function archList(layers) {
  const list = el("ol", undefined, "arch");
  for (const layer of layers) list.appendChild(el("li", layerText(layer)));
  return list;
}

function renderModel(m) {
  const acc = m.test_accuracy !== null && m.test_accuracy !== undefined ?
    `${(100 * m.test_accuracy).toFixed(2)}%` : "unknown";
  $("#summary").textContent = `${m.dataset} · test accuracy ${acc} · ` +
    `${m.parameters.toLocaleString("en")} parameters`;
  const box = $("#model-info");
  box.innerHTML = "";
  const facts = el("dl", undefined, "facts");
  const add = (dl, k, v) => { dl.append(el("dt", k), el("dd", v)); };
  add(facts, "test accuracy", acc);
  if (m.test_loss !== null && m.test_loss !== undefined) {
    add(facts, "test loss", m.test_loss.toFixed(4));
  }
  add(facts, "dataset", m.dataset);
  add(facts, "parameters", m.parameters.toLocaleString("en"));
  if (m.epochs) add(facts, "epochs trained", String(m.epochs));
  add(facts, "not sure", `below ${(100 * m.reject_threshold).toFixed(1)}%` +
    (m.input_space ? ", or unlike the training digits" : ""));
  if (m.barenet_version) add(facts, "barenet", m.barenet_version);
  let arch;
  if (m.ensemble) {
    arch = el("div");
    m.ensemble.forEach((layers, i) => {
      arch.append(el("div", `member ${i + 1}`), archList(layers));
    });
  } else {
    arch = archList(m.architecture);
  }
  const config = el("div");
  const summary = el("dl", undefined, "config");
  for (const [k, v] of configSummary(m.config || {}, m)) add(summary, k, v);
  const full = el("details");
  full.append(el("summary", "full configuration"),
              el("pre", JSON.stringify(m.config || {}, null, 2)));
  config.append(summary, full);
  const cols = [["Facts", facts], [m.ensemble ? `Ensemble of ${m.ensemble.length}` :
    "Architecture", arch], ["Training", config]];
  for (const [title, node] of cols) {
    const div = el("div");
    div.append(el("h3", title), node);
    box.appendChild(div);
  }
  $("#saliency-figure").hidden = !m.saliency;
  $("#attack-figure").hidden = !m.attack;
  if (typeof m.reject_threshold === "number") setThreshold(m.reject_threshold);
  if (!m.gallery) {
    $("#gallery-tools").hidden = true;
    $("#gallery").textContent = "no test set loaded: the gallery is off";
  } else {
    loadGallery("random");
  }
}

async function init() {
  $("#threshold").addEventListener("input", (e) => setThreshold(Number(e.target.value) / 100));
  $("#fool").addEventListener("click", fool);
  buildBars();
  buildGalleryTools();
  resizePad();
  try {
    const res = await fetch("/api/model");
    const m = await res.json();
    state.classes = 10;
    renderModel(m);
  } catch (err) {
    $("#summary").textContent = `the server does not answer (${err.message})`;
  }
  document.body.dataset.ready = "1";
}

init();
