// The page: each photo or URL becomes a card that uploads it to the native API, shows its progress, then the
// cut-out over a checkerboard with a before/after slider. Nothing here talks to anything but this service: a URL's
// image is fetched by the service, and its card shows the cut-out alone.
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

// The options as they are when a photo is sent: its request, and what is done with the answer, follow them even
// if they change while it is on its way.
function options() {
  // With a background picture the service answers a transparent PNG, composed here in the chosen format.
  const background = $("#bg-image").files[0];
  const format = $("#format").value;
  const query = new URLSearchParams({ format: background ? "png" : format });
  if ($("#model").value) query.set("model", $("#model").value);
  if ($("#use-color").checked && !background) query.set("bg_color", $("#color").value);
  if ($("#refine").checked) query.set("refine", "true");
  const crop = $("#crop").checked;
  if (crop) query.set("crop", "true");
  return { query, background, format, crop };
}

// A download's name: the file's own name, or the last part of a URL's path, without its extension.
function stem(name, isUrl) {
  let base = name;
  if (isUrl) {
    try {
      base = decodeURIComponent(new URL(name).pathname.split("/").pop());
    } catch (ignored) { base = name.split(/[?#]/)[0].split("/").pop(); }
  }
  // A URL's name is decoded, so it may hold "/" or "..": in a ZIP that would be a path out of the folder it is
  // extracted into. Characters no file system takes in a name become "_", and leading dots go.
  const safe = base.replace(/[\/\\:*?"<>|\x00-\x1f]/g, "_").replace(/^\.+/, "");
  return (safe || "image").replace(/\.[^.]*$/, "") || "image";
}

function addCard(name, preview, send) {
  const card = $("#card").content.firstElementChild.cloneNode(true);
  card.querySelector(".name").textContent = name;
  card.querySelector(".name").title = name;
  card.querySelector("progress").setAttribute("aria-label", `progress of ${name}`);
  card.querySelector(".remove").setAttribute("aria-label", `remove ${name}`);
  card.querySelector(".download").setAttribute("aria-label", `download the cut-out of ${name}`);
  setState(card, "queued");
  const before = card.querySelector(".before");
  // No preview (a URL), or one this browser cannot show (TIFF, HEIC): the cut-out is shown alone.
  before.addEventListener("error", () => showAlone(card, true));
  if (preview) before.src = preview; else showAlone(card, true);
  card.querySelector(".remove").addEventListener("click", () => forget(card));
  const slider = card.querySelector(".slider");
  slider.addEventListener("input", () => {
    card.querySelector(".after").style.clipPath = `inset(0 0 0 ${slider.value}%)`;
  });
  $("#cards").append(card);
  queue.push(() => (card.isConnected ? send(card) : Promise.resolve()));  // removed while queued: not sent
  pump();
}

function showAlone(card, alone) {
  card.querySelector(".compare").classList.toggle("alone", alone);
  card.querySelector(".slider").hidden = alone;
}

function forget(card) {
  if (card.xhr) card.xhr.abort();  // no GPU time for a photo nobody waits for
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
    card.xhr = xhr;
    xhr.open(method, url);
    xhr.responseType = "blob";
    for (const [name, value] of Object.entries(headers())) xhr.setRequestHeader(name, value);
    if (contentType) xhr.setRequestHeader("Content-Type", contentType);
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) setState(card, "uploading", (90 * event.loaded) / event.total);
    };
    xhr.upload.onload = () => setState(card, "cutting out");
    if (!body) setState(card, "cutting out");  // a URL: nothing to upload, the service fetches it
    xhr.onabort = () => reject(new Error("cancelled"));
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

async function run(card, name, isUrl, chosen, call) {
  setState(card, "uploading", 0);
  try {
    let blob = await call();
    if (chosen.background) blob = await onBackground(blob, chosen.background, chosen.format);
    show(card, stem(name, isUrl), chosen.crop, blob);
  } catch (error) {
    if (!card.isConnected) return;  // removed: its request was cancelled
    card.classList.add("failed");
    setState(card, "failed");
    const message = card.querySelector(".error");
    message.textContent = error.message;
    message.hidden = false;
  }
}

function show(card, stemName, cropped, blob) {
  if (!card.isConnected) return;  // removed while it was being cut out
  const extension = { "image/png": "png", "image/webp": "webp", "image/jpeg": "jpg" }[blob.type] || "png";
  const filename = `${stemName}.${extension}`;
  const url = URL.createObjectURL(blob);
  card.querySelector(".after img").src = url;
  card.querySelector(".compare").hidden = false;
  // A cropped answer does not line up with the whole photo: it is shown alone, without the slider.
  if (cropped) showAlone(card, true);
  else card.querySelector(".slider").hidden = card.querySelector(".compare").classList.contains("alone");
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
async function onBackground(cutout, picture, format) {
  const decoded = await Promise.allSettled([createImageBitmap(cutout), createImageBitmap(picture)]);
  const [front, back] = decoded.map((result) => result.value);
  if (!front || !back) {  // close the one that did decode; say which picture the browser could not read
    (front || back)?.close();
    throw new Error(`the browser could not read ${back ? "the cut-out" : "the background picture"}`);
  }
  try {
    const canvas = document.createElement("canvas");
    canvas.width = front.width;
    canvas.height = front.height;
    const context = canvas.getContext("2d");
    const scale = Math.max(front.width / back.width, front.height / back.height);
    const width = back.width * scale, height = back.height * scale;
    context.drawImage(back, (front.width - width) / 2, (front.height - height) / 2, width, height);
    context.drawImage(front, 0, 0);
    const type = { png: "image/png", webp: "image/webp", jpg: "image/jpeg" }[format];
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, type, 0.9));
    // null: a canvas larger than this browser draws (iOS Safari stops near 16.7 MP)
    if (!blob) throw new Error("too large for this browser to put on a background picture; use a colour instead");
    return blob;
  } finally {
    front.close();
    back.close();
  }
}

function addFiles(files) {
  for (const file of files) {
    addCard(file.name, URL.createObjectURL(file), (card) => {
      const chosen = options();
      return run(card, file.name, false, chosen, () => request(card, "POST",
        `v1/remove-background?${chosen.query}`, file, file.type || "application/octet-stream"));
    });
  }
}

function addUrls() {
  const lines = $("#urls").value.split(/\s+/).map((line) => line.trim()).filter(Boolean);
  for (const url of lines) {
    addCard(url, null, (card) => {
      const chosen = options();
      chosen.query.set("url", url);
      return run(card, url, true, chosen, () => request(card, "GET", `v1/remove-background?${chosen.query}`));
    });
  }
  $("#urls").value = "";
}

function updateZip() {
  $("#zip").disabled = results.size === 0;
}

async function downloadZip() {
  const total = [...results.values()].reduce((sum, { blob }) => sum + blob.size, 0);
  if (results.size > 65535 || total > 4e9) {  // past what a ZIP without its 64-bit extension holds
    window.alert("Too many or too large results for one zip: download them one by one or in smaller groups.");
    return;
  }
  const used = new Set();  // lower-cased: Photo.png and photo.png are one file once extracted on macOS or Windows
  const entries = [];
  for (const { name, blob } of results.values()) {
    let unique = name, n = 1;
    while (used.has(unique.toLowerCase())) unique = name.replace(/(\.[^.]*)$/, `-${n++}$1`);
    used.add(unique.toLowerCase());
    entries.push({ name: unique, bytes: new Uint8Array(await blob.arrayBuffer()) });
  }
  const link = document.createElement("a");
  link.href = URL.createObjectURL(makeZip(entries));
  link.download = "cutouts.zip";
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60000);  // the download has its copy by then
}

// The status panel: models, batch sizes, calls held by the model replica and images per second, from /v1/info.
let lastCount = null;
async function refreshStatus() {
  if (document.hidden) return;
  try {
    const response = await fetch("v1/info", { headers: headers() });
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
  $("#color").addEventListener("input", () => { $("#use-color").checked = true; });
  $("#add-urls").addEventListener("click", addUrls);
  $("#zip").addEventListener("click", downloadZip);
  $("#clear").addEventListener("click", () => { for (const card of [...$("#cards").children]) forget(card); });
  const drop = $("#drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", (event) => {
    if (!drop.contains(event.relatedTarget)) drop.classList.remove("over");  // not when crossing its own text
  });
  // A photo dropped anywhere on the page is taken: the browser would otherwise open it in place of the page,
  // and every result with it.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => {
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
