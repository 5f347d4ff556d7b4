// The page is a client of the public API like any other: GET /model, POST /predict?explain=true.
"use strict";

const PREDICT_URL = "/predict?explain=true";
const DEBOUNCE_MS = 120;
const ERROR_MESSAGES = {
  payload_too_large: "That file is too large to upload.",
  image_too_large: "That image has too many pixels.",
  invalid_image: "That is not an image we can read (PNG, JPEG, GIF, BMP, WebP or TIFF).",
  blank_image: "There is nothing on that image to classify.",
  unsupported_media_type: "That kind of file cannot be uploaded.",
  overloaded: "The service is busy right now. Try again in a moment.",
  inference_timeout: "The service is busy right now. Try again in a moment.",
  not_ready: "The model is still loading. Try again in a moment.",
};

const pad = document.getElementById("pad");
const context = pad.getContext("2d");
const statusLine = document.getElementById("status");
const labelLine = document.getElementById("label-line");
const bars = document.getElementById("bars");
const original = document.getElementById("original");
const modelInput = document.getElementById("model-input");

let strokes = [];
let current = null;
let pending = null;
let timer = null;
let originalUrl = null;
let labels = [];
const NOT_ONE_DIGIT = {
  not_a_digit: "This doesn't look like a digit",
  several_digits: "This looks like several digits",
};

function clearPad() {
  context.fillStyle = "#ffffff";
  context.fillRect(0, 0, pad.width, pad.height);
}

function redraw() {
  clearPad();
  context.strokeStyle = "#111111";
  context.fillStyle = "#111111";
  context.lineCap = "round";
  context.lineJoin = "round";
  context.lineWidth = pad.width / 14;
  for (const stroke of strokes) {
    context.beginPath();
    context.moveTo(stroke[0].x, stroke[0].y);
    if (stroke.length === 1) {
      context.arc(stroke[0].x, stroke[0].y, context.lineWidth / 2, 0, 2 * Math.PI);
      context.fill();
      continue;
    }
    for (const point of stroke.slice(1)) context.lineTo(point.x, point.y);
    context.stroke();
  }
}

function padPoint(event) {
  const box = pad.getBoundingClientRect();
  return {
    x: ((event.clientX - box.left) / box.width) * pad.width,
    y: ((event.clientY - box.top) / box.height) * pad.height,
  };
}

pad.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  current = [padPoint(event)];
  strokes.push(current);
  redraw();
});
pad.addEventListener("pointermove", (event) => {
  if (!current) return;
  current.push(padPoint(event));
  redraw();
  schedule(drawing);
});
for (const type of ["pointerup", "pointercancel"]) {
  pad.addEventListener(type, () => {
    if (!current) return;
    current = null;
    schedule(drawing);
  });
}

function undo() {
  strokes.pop();
  redraw();
  strokes.length ? schedule(drawing) : reset();
}

function reset() {
  strokes = [];
  redraw();
  if (pending) pending.abort();
  clearTimeout(timer);
  showStatus("Draw a digit to see the prediction.");
  labelLine.hidden = true;
  original.hidden = modelInput.hidden = true;
  renderBars(null);
}

document.getElementById("undo").addEventListener("click", undo);
document.getElementById("clear").addEventListener("click", reset);
document.addEventListener("keydown", (event) => {
  if ((event.ctrlKey || event.metaKey) && event.key === "z") {
    event.preventDefault();
    undo();
  } else if (event.key === "Escape") {
    reset();
  }
});

function drawing() {
  return new Promise((resolve) => pad.toBlob(resolve, "image/png"));
}

function schedule(source) {
  clearTimeout(timer);
  timer = setTimeout(() => classify(source), DEBOUNCE_MS);
}

async function classify(source) {
  if (pending) pending.abort();
  const controller = new AbortController();
  pending = controller;
  const blob = await source();
  if (controller.signal.aborted || !blob) return;
  showOriginal(blob);
  showStatus("Classifying…");
  const started = performance.now();
  try {
    const response = await fetch(PREDICT_URL, {
      method: "POST",
      body: blob,
      headers: { "Content-Type": blob.type || "application/octet-stream" },
      signal: controller.signal,
    });
    const body = await response.json();
    if (controller.signal.aborted) return;
    if (!response.ok) {
      const code = body.error && body.error.code;
      showError(ERROR_MESSAGES[code] || (body.error && body.error.message) || "Something went wrong.");
      return;
    }
    showPrediction(body, response.headers.get("Server-Timing"), performance.now() - started);
  } catch (error) {
    if (error.name !== "AbortError") showError("The service cannot be reached.");
  } finally {
    if (pending === controller) pending = null;
  }
}

function classifyFile(file) {
  if (!file) return;
  strokes = [];
  redraw();
  clearTimeout(timer);
  classify(() => Promise.resolve(file));
}

function showOriginal(blob) {
  if (originalUrl) URL.revokeObjectURL(originalUrl);
  originalUrl = URL.createObjectURL(blob);
  original.src = originalUrl;
  original.hidden = false;
}

function showStatus(text) {
  statusLine.textContent = text;
  statusLine.classList.remove("error");
  statusLine.hidden = false;
}

function showError(text) {
  showStatus(text);
  statusLine.classList.add("error");
  labelLine.hidden = true;
  modelInput.hidden = true;
  renderBars(null);
}

function serverMilliseconds(header) {
  if (!header) return null;
  let total = 0;
  for (const match of header.matchAll(/dur=([\d.]+)/g)) total += Number(match[1]);
  return total;
}

function showPrediction(body, timing, roundTrip) {
  statusLine.hidden = true;
  labelLine.hidden = false;
  const label = document.getElementById("label");
  const guess = `${(body.confidence * 100).toFixed(1)} %`;
  label.classList.toggle("not-a-digit", body.is_digit === false);
  if (body.is_digit === false) {
    // A big digit would be a wrong answer: say what the detector saw, the guess in small.
    label.textContent = NOT_ONE_DIGIT[body.reason] ?? NOT_ONE_DIGIT.not_a_digit;
    document.getElementById("confidence").textContent =
      `(the model's best guess: ${body.label}, ${guess})`;
  } else {
    label.textContent = body.label;
    document.getElementById("confidence").textContent = `${guess} sure`;
  }
  const server = serverMilliseconds(timing);
  document.getElementById("latency").textContent =
    (server === null ? "" : `server ${server.toFixed(1)} ms · `) +
    `round trip ${roundTrip.toFixed(0)} ms`;
  renderBars(body.probabilities, body.label);
  modelInput.src = `data:image/png;base64,${body.explain.input_png}`;
  modelInput.hidden = false;
}

function renderBars(probabilities, best) {
  bars.replaceChildren();
  const names = probabilities ? Object.keys(probabilities) : labels;
  for (const name of names) {
    const value = probabilities ? probabilities[name] : 0;
    const item = document.createElement("li");
    item.className = name === best ? "top" : "";
    item.setAttribute("aria-label", `${name}: ${(value * 100).toFixed(1)} percent`);
    const label = document.createElement("span");
    label.textContent = name;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.display = "block";
    fill.style.width = `${(value * 100).toFixed(1)}%`;
    track.append(fill);
    const number = document.createElement("span");
    number.className = "value";
    number.textContent = `${(value * 100).toFixed(1)}%`;
    item.append(label, track, number);
    bars.append(item);
  }
}

document.getElementById("file").addEventListener("change", (event) => {
  classifyFile(event.target.files[0]);
});

const dropZone = document.getElementById("drop-zone");
dropZone.addEventListener("dragover", (event) => {
  event.preventDefault();
  dropZone.classList.add("dragging");
});
dropZone.addEventListener("dragleave", () => dropZone.classList.remove("dragging"));
dropZone.addEventListener("drop", (event) => {
  event.preventDefault();
  dropZone.classList.remove("dragging");
  classifyFile(event.dataTransfer.files[0]);
});
document.addEventListener("paste", (event) => {
  const item = [...event.clipboardData.items].find((entry) => entry.kind === "file");
  if (item) classifyFile(item.getAsFile());
});

async function loadModelInfo() {
  const info = document.getElementById("model-info");
  try {
    const response = await fetch("/model");
    const model = await response.json();
    if (!response.ok) throw new Error(model.error && model.error.message);
    labels = model.labels;
    const accuracy = model.test_accuracy ? ` · ${(model.test_accuracy * 100).toFixed(2)} % on its test set` : "";
    info.textContent = `Model ${model.name}, version ${model.version}, run by ${model.runtime}${accuracy}`;
  } catch (error) {
    info.textContent = "The model's details could not be loaded.";
  }
  renderBars(null);
}

redraw();
loadModelInfo();
