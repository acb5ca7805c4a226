// The page: each photo or URL becomes a card that uploads it to the native API, shows its progress, then the
// cut-out over a checkerboard with a before/after slider. Nothing here talks to anything but this service.
"use strict";
const $ = (selector) => document.querySelector(selector);
const IN_FLIGHT = 4;  // photos sent at once; the service batches them on the GPU
const KEY_STORE = "serve_app.api_key";  // sessionStorage: this tab only
const queue = [];
let running = 0;
const results = new Map();  // card element -> {name, blob}

function headers() {
  const key = $("#api-key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function options() {
  // With a background picture the service answers a transparent PNG, composed here in the chosen format.
  const picture = $("#bg-image").files.length > 0;
  const query = new URLSearchParams({ format: picture ? "png" : $("#format").value });
  if ($("#model").value) query.set("model", $("#model").value);
  if ($("#use-color").checked && !picture) query.set("bg_color", $("#color").value);
  if ($("#refine").checked) query.set("refine", "true");
  if ($("#crop").checked) query.set("crop", "true");
  return query;
}

function stem(name) {
  const base = name.split(/[?#]/)[0].split("/").pop() || "image";
  return base.replace(/\.[^.]*$/, "") || "image";
}

function addCard(name, preview, send) {
  const card = $("#card").content.firstElementChild.cloneNode(true);
  card.querySelector(".name").textContent = name;
  card.querySelector(".name").title = name;
  setState(card, "queued");
  card.querySelector(".before").src = preview;
  card.querySelector(".remove").addEventListener("click", () => forget(card));
  const slider = card.querySelector(".slider");
  slider.addEventListener("input", () => {
    card.querySelector(".after").style.clipPath = `inset(0 0 0 ${slider.value}%)`;
  });
  $("#cards").append(card);
  queue.push(() => (card.isConnected ? send(card) : Promise.resolve()));  // removed while queued: not sent
  pump();
}

function forget(card) {
  results.delete(card);
  for (const image of card.querySelectorAll("img")) {
    if (image.src.startsWith("blob:")) URL.revokeObjectURL(image.src);
  }
  card.remove();
  updateZip();
}

function setState(card, text, percent) {
  card.querySelector(".state").textContent = text;
  const bar = card.querySelector("progress");
  if (percent === undefined) bar.removeAttribute("value"); else bar.value = percent;
}

function pump() {
  while (running < IN_FLIGHT && queue.length) {
    running++;
    queue.shift()().finally(() => { running--; pump(); });
  }
}

// One request through XMLHttpRequest, for its upload progress; resolves with the response's Blob.
function request(card, method, url, body, contentType) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, url);
    xhr.responseType = "blob";
    for (const [name, value] of Object.entries(headers())) xhr.setRequestHeader(name, value);
    if (contentType) xhr.setRequestHeader("Content-Type", contentType);
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) setState(card, "uploading", (90 * event.loaded) / event.total);
    };
    xhr.upload.onload = () => setState(card, "cutting out");
    xhr.onload = async () => {
      if (xhr.status === 200) return resolve(xhr.response);
      reject(new Error(await errorMessage(xhr)));
    };
    xhr.onerror = () => reject(new Error("the service could not be reached"));
    xhr.send(body);
  });
}

async function errorMessage(xhr) {
  try {
    const body = JSON.parse(await xhr.response.text());
    if (body.error) return `${body.error.message} (${xhr.status} ${body.error.code})`;
  } catch (ignored) { /* not the service's JSON */ }
  return `HTTP ${xhr.status}`;
}

async function run(card, name, call) {
  setState(card, "uploading", 0);
  try {
    let blob = await call();
    const background = $("#bg-image").files[0];
    if (background) blob = await onBackground(blob, background);
    show(card, name, blob);
  } catch (error) {
    card.classList.add("failed");
    setState(card, "failed");
    const message = card.querySelector(".error");
    message.textContent = error.message;
    message.hidden = false;
  }
}

function show(card, name, blob) {
  if (!card.isConnected) return;  // removed while it was being cut out
  const extension = { "image/png": "png", "image/webp": "webp", "image/jpeg": "jpg" }[blob.type] || "png";
  const filename = `${stem(name)}.${extension}`;
  const url = URL.createObjectURL(blob);
  card.querySelector(".after img").src = url;
  card.querySelector(".compare").hidden = false;
  // A cropped answer does not line up with the whole photo: it is shown alone, without the slider.
  const cropped = $("#crop").checked;
  card.querySelector(".compare").classList.toggle("alone", cropped);
  card.querySelector(".slider").hidden = cropped;
  const link = card.querySelector(".download");
  link.href = url;
  link.download = filename;
  link.hidden = false;
  card.classList.add("done");
  setState(card, "done", 100);
  results.set(card, { name: filename, blob });
  updateZip();
}

// A background picture under the cut-out, composed here on a canvas (cover-fitted), in the chosen format.
async function onBackground(cutout, picture) {
  const [front, back] = await Promise.all([createImageBitmap(cutout), createImageBitmap(picture)]);
  const canvas = document.createElement("canvas");
  canvas.width = front.width;
  canvas.height = front.height;
  const context = canvas.getContext("2d");
  const scale = Math.max(front.width / back.width, front.height / back.height);
  const width = back.width * scale, height = back.height * scale;
  context.drawImage(back, (front.width - width) / 2, (front.height - height) / 2, width, height);
  context.drawImage(front, 0, 0);
  const type = { png: "image/png", webp: "image/webp", jpg: "image/jpeg" }[$("#format").value];
  return new Promise((resolve) => canvas.toBlob(resolve, type, 0.9));
}

function addFiles(files) {
  for (const file of files) {
    addCard(file.name, URL.createObjectURL(file), (card) => run(card, file.name, () =>
      request(card, "POST", `/v1/remove-background?${options()}`, file, file.type || "application/octet-stream")));
  }
}

function addUrls() {
  const lines = $("#urls").value.split(/\s+/).map((line) => line.trim()).filter(Boolean);
  for (const url of lines) {
    addCard(url, url, (card) => {
      const query = options();
      query.set("url", url);
      return run(card, url, () => request(card, "GET", `/v1/remove-background?${query}`));
    });
  }
  $("#urls").value = "";
}

function updateZip() {
  $("#zip").disabled = results.size === 0;
}

async function downloadZip() {
  const used = new Set();
  const entries = [];
  for (const { name, blob } of results.values()) {
    let unique = name, n = 1;
    while (used.has(unique)) unique = name.replace(/(\.[^.]*)$/, `-${n++}$1`);
    used.add(unique);
    entries.push({ name: unique, bytes: new Uint8Array(await blob.arrayBuffer()) });
  }
  const link = document.createElement("a");
  link.href = URL.createObjectURL(makeZip(entries));
  link.download = "cutouts.zip";
  document.body.append(link);
  link.click();
  link.remove();
}

// The status panel: models, batch sizes, calls held by the model replica and images per second, from /v1/info.
let lastCount = null;
async function refreshStatus() {
  if (document.hidden) return;
  try {
    const response = await fetch("/v1/info", { headers: headers() });
    if (!response.ok) {
      $("#status-line").textContent = `status unavailable (HTTP ${response.status})`;
      return;
    }
    const info = await response.json();
    const models = info.models || {};
    fillModels(Object.keys(models), info.default_model);
    let images = 0;
    const rows = [];
    for (const [name, model] of Object.entries(models)) {
      const histogram = model.batch_size_histogram || {};
      for (const [size, count] of Object.entries(histogram)) images += Number(size) * count;
      const cells = [name + (name === info.default_model ? " (default)" : ""), model.loaded ? "yes" :
        (model.loading ? "loading" : "no"), model.batching ? model.batching.live_max_batch_size : "",
        Object.entries(histogram).map(([size, count]) => `${size}: ${count}`).join(", ")];
      const row = document.createElement("tr");
      for (const text of cells) {
        const cell = document.createElement("td");
        cell.textContent = text;
        row.append(cell);
      }
      rows.push(row);
    }
    $("#status-models tbody").replaceChildren(...rows);
    const now = performance.now();
    const rate = lastCount ? Math.max(0, ((images - lastCount.images) * 1000) / (now - lastCount.at)) : 0;
    lastCount = { images, at: now };
    const model = info.model || {};
    $("#status-line").textContent = `${model.device_name || model.device || "?"}: ${rate.toFixed(1)} images/s, ` +
      `${model.requests_in_replica ?? 0} requests in the model replica (one replica's view)`;
  } catch (error) {
    $("#status-line").textContent = "status unavailable";
  }
}

function fillModels(names, preferred) {
  const select = $("#model");
  if (select.options.length > 1 || !names.length) return;
  for (const name of names) {
    const option = new Option(name + (name === preferred ? " (default)" : ""), name);
    select.append(option);
  }
}

function setUp() {
  const key = $("#api-key");
  key.value = sessionStorage.getItem(KEY_STORE) || "";
  key.addEventListener("input", () => sessionStorage.setItem(KEY_STORE, key.value));
  $("#files").addEventListener("change", (event) => { addFiles(event.target.files); event.target.value = ""; });
  $("#add-urls").addEventListener("click", addUrls);
  $("#zip").addEventListener("click", downloadZip);
  $("#clear").addEventListener("click", () => { for (const card of [...$("#cards").children]) forget(card); });
  const drop = $("#drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    addFiles(event.dataTransfer.files);
  });
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); $("#files").click(); }
  });
  refreshStatus();
  setInterval(refreshStatus, 3000);
}

setUp();
