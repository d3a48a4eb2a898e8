// genlab serve: the explorer's one page. Plain DOM, no framework, no build step.
//
// Every view's state lives in the page's URL (?run=0&view=sample&seed=1&n=16...), rewritten with
// history.replaceState on each change and read back on load, so a link shows the same images.
// Every API request carries this page's random `client` id: the server cancels the older of two
// requests of one client, run and view; the page itself keeps only the newest answer of each kind.
"use strict";

const CLIENT = randomId();
const VIEW_NAMES = ["sample", "latent", "denoise", "complete", "text", "nearest", "run"];
const LATENT_SLIDERS = 8;

// Each view's parameters and their defaults (strings, as in the URL). Sampler options join these
// from the chosen run's `sampler_options`.
const DEFAULTS = {
  sample: { seed: "1", n: "16", label: "" },
  latent: { seed: "1", offsets: "", a: "", b: "", label: "" },
  denoise: { seed: "1", label: "" },
  complete: { seed: "1", rows: "", n: "4", label: "", test: "", canvas: "" },
  text: { prompt: "", max_new_tokens: "100", temperature: "0.8", top_k: "40", top_p: "", seed: "1" },
  nearest: { image: "" },
  run: {},
};

const app = {
  runs: [],
  limits: {},
  run: null, // the chosen RUN of GET /api/runs
  view: null, // the name of the view shown
  params: {}, // view name -> {param: string}
  newest: {}, // request key -> number of the newest request (older answers are dropped)
  aborts: {}, // request key -> AbortController of the request in flight
  stream: null, // the open EventSource, if any
  busy: 0, // requests and streams in flight (the tests wait for 0)
  shown: {}, // view name -> the state key it last showed (a view is redrawn only when it changed)
};

// ---------------------------------------------------------------- small helpers

function randomId() {
  const bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function $(id) {
  return document.getElementById(id);
}

// An element with attributes (`text` sets its text, `className` its classes) and children.
function el(tag, attributes = {}, children = []) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name === "className") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name === "onclick") node.addEventListener("click", value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children);
  return node;
}

function svg(tag, attributes = {}, text = null) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

function formatNumber(value) {
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return value.toLocaleString("en");
  const size = Math.abs(value);
  return size !== 0 && (size < 1e-3 || size >= 1e5) ? value.toExponential(3) : value.toPrecision(4);
}

// How long a request took: the server's `seconds` if it said, else as timed here since `started`.
function took(body, started) {
  const seconds = body && typeof body.seconds === "number" ? body.seconds : (performance.now() - started) / 1000;
  return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
}

function percent(probability) {
  return `${Math.round(probability * 100)}%`;
}

function setStatus(text, kind = "info") {
  const status = $("status");
  status.textContent = text;
  status.className = `status ${kind}`;
  status.dataset.kind = kind;
}

function showError(error) {
  const message = error instanceof Error ? error.message : String(error);
  setStatus(message || "something went wrong", "error");
}

// Run an action (maybe async) and show what it threw in the status line: no uncaught errors.
function guard(action) {
  return (...args) => {
    try {
      const result = action(...args);
      if (result && typeof result.catch === "function") result.catch(showError);
    } catch (error) {
      showError(error);
    }
  };
}

function changeBusy(delta) {
  app.busy += delta;
  document.body.dataset.busy = String(app.busy);
}

// An <img> of one API image (a data URL), drawn with square pixels.
function pixelImage(src, { className = "pixel", title = null, alt = "" } = {}) {
  const image = el("img", { className, src, alt, title });
  image.decoding = "sync";
  return image;
}

function className(label) {
  if (label === null || label === undefined || label === "") return null;
  const classes = app.run && app.run.classes;
  return classes && classes[label] !== undefined ? classes[label] : String(label);
}

// ---------------------------------------------------------------- the URL and each view's parameters

function viewParams(view = app.view) {
  if (!app.params[view]) app.params[view] = { ...defaultsOf(view) };
  return app.params[view];
}

function defaultsOf(view) {
  const defaults = { ...DEFAULTS[view] };
  if ((view === "sample" || view === "denoise") && app.run) {
    for (const option of app.run.sampler_options || []) {
      defaults[option.name] = option.default === null || option.default === undefined ? "" : String(option.default);
    }
  }
  if (view === "complete" && app.run && app.run.image_shape) {
    defaults.rows = String(Math.floor(app.run.image_shape[1] / 2)); // 14 for 28x28 images
  }
  return defaults;
}

function readUrl() {
  const query = new URLSearchParams(location.search);
  const state = {};
  for (const [name, value] of query) state[name] = value;
  return state;
}

function writeUrl() {
  if (!app.run || !app.view) return;
  const query = new URLSearchParams({ run: String(app.run.id), view: app.view });
  for (const [name, value] of Object.entries(viewParams())) {
    if (value !== "") query.set(name, value);
  }
  history.replaceState(null, "", `${location.pathname}?${query}`);
}

function setParam(name, value, view = app.view) {
  viewParams(view)[name] = value === null || value === undefined ? "" : String(value);
  if (view === app.view) writeUrl();
}

// Copy a view's parameters into its form fields ([data-param] elements).
function fillInputs(view) {
  const params = viewParams(view);
  for (const input of $(`view-${view}`).querySelectorAll("[data-param]")) {
    const value = params[input.dataset.param];
    if (value !== undefined) input.value = value;
  }
}

// Parameters of a view that are sent to the API: the non-empty ones among `names`.
function queryOf(view, names) {
  const params = viewParams(view);
  const query = {};
  for (const name of names) {
    if (params[name] !== undefined && params[name] !== "") query[name] = params[name];
  }
  return query;
}

function samplerNames() {
  return (app.run.sampler_options || []).map((option) => option.name);
}

// ---------------------------------------------------------------- talking to the server

function apiUrl(path, query = {}) {
  const search = new URLSearchParams(query);
  search.set("client", CLIENT);
  const base = path === "" ? "/api/runs" : `/api/runs/${encodeURIComponent(app.run.id)}/${path}`;
  return `${base}?${search}`;
}

async function readJson(response) {
  let body = null;
  try {
    body = await response.json();
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new Error(`${response.status} ${response.statusText || "unreadable answer"} from the server`);
  }
  if (!response.ok || (body && body.error)) {
    throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
  }
  return body;
}

// GET a JSON answer; a newer request with the same key aborts this one, and this one then answers null.
async function getJson(key, url) {
  const number = (app.newest[key] || 0) + 1;
  app.newest[key] = number;
  if (app.aborts[key]) app.aborts[key].abort();
  const controller = new AbortController();
  app.aborts[key] = controller;
  changeBusy(+1);
  try {
    const body = await readJson(await fetch(url, { signal: controller.signal }));
    return app.newest[key] === number ? body : null;
  } catch (error) {
    if (error.name === "AbortError" || app.newest[key] !== number) return null;
    throw error;
  } finally {
    if (app.aborts[key] === controller) delete app.aborts[key];
    changeBusy(-1);
  }
}

// Run `task` now, or once more after the running one ends: while a slider moves, one request at a
// time, and the last position is always drawn.
function latestOnly(task) {
  let running = false;
  let again = false;
  return async function run() {
    if (running) {
      again = true;
      return;
    }
    running = true;
    changeBusy(+1);
    try {
      do {
        again = false;
        await task();
      } while (again);
    } catch (error) {
      showError(error);
    } finally {
      running = false;
      changeBusy(-1);
    }
  };
}

function abortAll() {
  for (const controller of Object.values(app.aborts)) controller.abort();
  app.aborts = {};
  closeStream();
}

function closeStream() {
  if (!app.stream) return;
  app.stream.source.close();
  app.stream = null;
  changeBusy(-1);
}

// Open an EventSource on `url`; `handlers` maps event names to functions of the parsed data.
// The stream is closed on `done` and on any error; an error event's message goes to the status line.
function openStream(url, handlers) {
  closeStream();
  const source = new EventSource(url);
  const stream = { source, started: false };
  app.stream = stream;
  changeBusy(+1);
  const current = () => app.stream === stream;
  for (const [name, handle] of Object.entries(handlers)) {
    source.addEventListener(name, (event) => {
      if (!current()) return;
      stream.started = true;
      try {
        handle(JSON.parse(event.data));
      } catch (error) {
        showError(error);
        closeStream();
      }
      if (name === "done" && current()) closeStream();
    });
  }
  source.addEventListener("error", (event) => {
    if (!current()) return;
    closeStream();
    if (typeof event.data === "string") {
      // An `error` event sent by the server: {"error": "..."}.
      let message = event.data;
      try {
        message = JSON.parse(event.data).error || message;
      } catch (_) {
        /* not JSON: show it as it came */
      }
      showError(message);
    } else {
      guard(explainRefusal)(url, stream.started);
    }
  });
}

// The stream failed without an error event: ask the same URL once with fetch to read the
// server's {"error"} (an EventSource cannot), and stop as soon as it answers with a stream.
async function explainRefusal(url, started) {
  if (started) {
    showError("the connection to the server was lost");
    return;
  }
  const controller = new AbortController();
  try {
    const response = await fetch(url, { signal: controller.signal });
    if (response.ok && (response.headers.get("content-type") || "").startsWith("text/event-stream")) {
      controller.abort();
      showError("the stream could not be opened");
      return;
    }
    await readJson(response);
    showError(`${response.status} from the server`);
  } catch (error) {
    if (error.name !== "AbortError") showError(error);
  }
}

// ---------------------------------------------------------------- runs, tabs and shared controls

async function loadRuns() {
  setStatus("loading the runs…");
  const body = await readJson(await fetch(apiUrl("", {})));
  app.runs = body.runs || [];
  app.limits = body.limits || {};
  applyLimits();
  const picker = $("run-picker");
  picker.replaceChildren(
    ...app.runs.map((run) => el("option", { value: String(run.id), text: `${run.name} (${run.family})` })),
  );
  if (app.runs.length === 0) {
    setStatus("the server was started with no runs", "error");
    return;
  }
  const state = readUrl();
  const run = app.runs.find((r) => String(r.id) === state.run) || app.runs[0];
  const view = VIEW_NAMES.includes(state.view) ? state.view : null;
  const params = {};
  for (const [name, value] of Object.entries(state)) if (name !== "run" && name !== "view") params[name] = value;
  setStatus("");
  chooseRun(run, view, params);
}

// The server's bounds on the form fields (GET /api/runs's `limits`), where it says them.
function applyLimits() {
  const bounds = [["sample-n", "max", "n"], ["complete-n", "max", "completions"], ["text-max", "max", "max_new_tokens"],
    ["text-prompt", "maxlength", "prompt"]];
  for (const [id, attribute, limit] of bounds) {
    if (typeof app.limits[limit] === "number") $(id).setAttribute(attribute, String(app.limits[limit]));
  }
}

function runById(id) {
  return app.runs.find((r) => String(r.id) === String(id));
}

function viewInfo(name) {
  return (app.run.views || []).find((v) => v.name === name);
}

// Choose a run: its tabs, class pickers and sampler options; then show `view` with `params` from the URL.
function chooseRun(run, view = app.view, params = null) {
  abortAll();
  app.run = run;
  app.params = {};
  app.shown = {};
  $("run-picker").value = String(run.id);
  const shape = run.image_shape ? ` · ${run.image_shape.join("×")}` : "";
  $("run-summary").textContent = `${run.family} on ${run.data}${run.conditional ? " · conditional" : ""}${shape}`;
  buildTabs();
  buildClassPickers();
  buildSamplerOptions("sample");
  buildSamplerOptions("denoise");
  buildLatentSliders();
  resetViews();
  const available = (run.views || []).filter((v) => v.available).map((v) => v.name);
  const target = available.includes(view) ? view : available[0] || "run";
  if (params && target === view) app.params[target] = { ...defaultsOf(target), ...params }; // the link's state
  showView(target);
}

function buildTabs() {
  const tabs = $("view-tabs");
  const buttons = [];
  for (const info of app.run.views || []) {
    const button = el("button", {
      type: "button",
      className: "view-tab",
      dataset: { view: info.name },
      disabled: !info.available,
      title: info.available ? null : info.reason,
      "aria-disabled": info.available ? null : "true",
    }, [el("span", { text: info.name })]);
    if (!info.available) button.append(el("span", { className: "reason", text: info.reason || "not available" }));
    button.addEventListener("click", guard(() => showView(info.name)));
    buttons.push(button);
  }
  tabs.replaceChildren(...buttons);
}

function buildClassPickers() {
  for (const view of ["sample", "latent", "denoise", "complete"]) {
    const picker = $(`${view}-label`);
    const anyText = view === "sample" ? "in turn" : "any";
    const options = [el("option", { value: "", text: anyText })];
    (app.run.classes || []).forEach((name, index) => options.push(el("option", { value: String(index), text: `${index}: ${name}` })));
    picker.replaceChildren(...options);
    picker.closest(".class-picker").hidden = !app.run.conditional || !app.run.classes;
  }
}

// The family's sampler options: a select for a string with choices, a number box otherwise.
function buildSamplerOptions(view) {
  const box = $(`${view}-options`);
  const inputs = [];
  for (const option of app.run.sampler_options || []) {
    let input;
    if (option.kind === "str" && Array.isArray(option.choices) && option.choices.length) {
      input = el("select", {}, option.choices.map((choice) => el("option", { value: String(choice), text: String(choice) })));
    } else if (option.kind === "int" || option.kind === "float") {
      input = el("input", {
        type: "number",
        step: option.kind === "int" ? "1" : "any",
        min: option.minimum ?? null,
        max: option.maximum ?? null,
      });
    } else {
      input = el("input", { type: "text" });
    }
    input.dataset.param = option.name;
    input.classList.add("sampler-option");
    inputs.push(el("label", { title: option.help || null }, [`${option.name} `, input]));
  }
  box.replaceChildren(...inputs);
}

// Clear what the views showed for the previous run.
function resetViews() {
  for (const id of ["sample-grid", "latent-candidates", "latent-path", "complete-results", "text-output",
    "nearest-row", "nearest-numbers", "run-facts", "run-curves", "run-metrics"]) {
    $(id).replaceChildren();
  }
  for (const id of ["latent-image", "denoise-xt", "denoise-x0", "complete-kept"]) $(id).removeAttribute("src");
  $("nearest-verdict").textContent = "";
  $("latent-path-caption").hidden = true;
  $("complete-row").textContent = "";
  resetDenoise();
}

function showView(view) {
  const info = viewInfo(view);
  if (!info || !info.available) return;
  if (app.view !== view) {
    closeStream();
    setStatus("");
  }
  app.view = view;
  for (const tab of document.querySelectorAll(".view-tab")) {
    tab.classList.toggle("active", tab.dataset.view === view);
    tab.setAttribute("aria-selected", String(tab.dataset.view === view));
  }
  for (const section of document.querySelectorAll("section.view")) section.hidden = section.dataset.view !== view;
  viewParams(view);
  fillInputs(view);
  writeUrl();
  ENTER[view]();
}

// Every form field with data-param writes its value into the view's parameters as it changes.
function bindInputs() {
  for (const view of VIEW_NAMES) {
    const section = $(`view-${view}`);
    const update = (event) => {
      const input = event.target;
      if (input.dataset && input.dataset.param) setParam(input.dataset.param, input.value, view);
    };
    // Capturing: the view's parameters change before any handler of the field itself runs.
    section.addEventListener("input", update, true);
    section.addEventListener("change", update, true);
  }
  for (const view of ["sample", "latent", "denoise"]) {
    $(`${view}-new-seed`).addEventListener("click", guard(() => newSeed(view)));
  }
}

function newSeed(view) {
  const seed = Math.floor(Math.random() * 1_000_000);
  setParam("seed", seed, view);
  fillInputs(view);
  if (view === "sample") return drawSamples();
  if (view === "latent") return latentSeedChanged();
  return runDenoise();
}

// ---------------------------------------------------------------- sample view

async function drawSamples() {
  const names = ["n", "seed", "label", ...samplerNames()];
  const query = queryOf("sample", names);
  setStatus("drawing…");
  const started = performance.now();
  const body = await getJson("sample", apiUrl("sample", query));
  if (!body) return;
  app.shown.sample = JSON.stringify(query);
  const grid = $("sample-grid");
  grid.replaceChildren(...body.images.map((image) => imageButton(image, () => openNearest(image.id))));
  setStatus(`${body.images.length} images in ${took(body, started)}`);
}

// One API IMAGE as a button that opens `onOpen` when clicked.
function imageButton(image, onOpen, title = null) {
  const caption = className(image.label);
  const button = el("button", { type: "button", className: "image-button", title: title || (caption ? `class ${caption}` : "nearest training images") }, [
    pixelImage(image.png, { alt: caption ? `a generated ${caption}` : "a generated image" }),
  ]);
  button.dataset.imageId = image.id;
  button.addEventListener("click", guard(onOpen));
  return button;
}

function openNearest(id) {
  if (!viewInfo("nearest") || !viewInfo("nearest").available) return;
  app.params.nearest = { image: String(id) };
  showView("nearest");
}

// ---------------------------------------------------------------- latent view

function directionCount() {
  const latent = app.run.latent;
  return latent ? Math.min(LATENT_SLIDERS, latent.directions || LATENT_SLIDERS) : 0;
}

function buildLatentSliders() {
  const sliders = [];
  for (let i = 0; i < directionCount(); i += 1) {
    const slider = el("input", { type: "range", min: "-3", max: "3", step: "0.1", value: "0", className: "latent-slider" });
    slider.dataset.index = String(i);
    const value = el("output", { className: "slider-value", text: "0.0" });
    slider.addEventListener("input", guard(() => {
      value.textContent = Number(slider.value).toFixed(1);
      setParam("offsets", currentOffsets().join(","), "latent");
      requestLatentImage();
    }));
    sliders.push(el("label", { className: "slider" }, [`direction ${i + 1}`, slider, value]));
  }
  $("latent-sliders").replaceChildren(...sliders);
  const kind = app.run.latent ? app.run.latent.kind : "";
  $("latent-kind").textContent = kind ? `directions: ${kind}` : "";
}

function currentOffsets() {
  return Array.from(document.querySelectorAll(".latent-slider"), (slider) => Number(slider.value).toFixed(1).replace(/\.0$/, ""));
}

// Put the sliders where the URL's offsets say (missing ones at 0).
function placeSliders() {
  const offsets = (viewParams("latent").offsets || "").split(",");
  for (const slider of document.querySelectorAll(".latent-slider")) {
    const value = Number(offsets[Number(slider.dataset.index)]);
    slider.value = Number.isFinite(value) ? String(value) : "0";
    slider.nextElementSibling.textContent = Number(slider.value).toFixed(1);
  }
}

function latentQuery() {
  return { ...queryOf("latent", ["seed", "label"]), offsets: currentOffsets().join(",") };
}

// The decoded latent, redrawn as the sliders move: one request at a time, the newest position last.
const requestLatentImage = latestOnly(async () => {
  const run = app.run;
  const query = latentQuery();
  const body = await readJson(await fetch(apiUrl("latent", query)));
  if (app.run !== run) return;
  const image = $("latent-image");
  image.src = body.image.png;
  image.dataset.query = new URLSearchParams(query).toString();
  image.dataset.imageId = body.image.id;
});

async function loadCandidates() {
  const query = { ...queryOf("latent", ["seed", "label"]), n: "8" };
  const params = viewParams("latent");
  const withPath = params.a !== "" && params.b !== "";
  if (withPath) Object.assign(query, { a: params.a, b: params.b, steps: "9" });
  const body = await getJson("interpolate", apiUrl("interpolate", query));
  if (!body) return;
  const row = $("latent-candidates");
  row.replaceChildren(...body.candidates.map((image, index) => {
    const button = imageButton(image, () => pickCandidate(index), "click two candidates for the path between them");
    button.dataset.index = String(index);
    button.classList.toggle("chosen", String(index) === params.a || String(index) === params.b);
    return button;
  }));
  const path = body.path || [];
  $("latent-path").replaceChildren(...path.map((image) => pixelImage(image.png)));
  const caption = $("latent-path-caption");
  caption.hidden = path.length === 0;
  caption.textContent = path.length ? `the straight path from candidate ${Number(params.a) + 1} to candidate ${Number(params.b) + 1}` : "";
}

// A first click picks the path's start, a second its end; a third starts a new path.
function pickCandidate(index) {
  const params = viewParams("latent");
  if (params.a === "" || params.b !== "") {
    setParam("a", index, "latent");
    setParam("b", "", "latent");
    $("latent-path").replaceChildren();
    $("latent-path-caption").hidden = true;
    for (const button of document.querySelectorAll("#latent-candidates .image-button")) {
      button.classList.toggle("chosen", button.dataset.index === String(index));
    }
    setStatus("now click a second candidate");
    return;
  }
  setParam("b", index, "latent");
  setStatus("");
  return loadCandidates();
}

function latentSeedChanged() {
  setParam("a", "", "latent");
  setParam("b", "", "latent");
  requestLatentImage();
  return loadCandidates();
}

// ---------------------------------------------------------------- denoise view

const denoise = { frames: [], total: 0 };

function resetDenoise() {
  denoise.frames = [];
  denoise.total = 0;
  const scrubber = $("denoise-scrubber");
  scrubber.max = "0";
  scrubber.value = "0";
  scrubber.disabled = true;
  $("denoise-step").textContent = "step 0 / 0";
}

function runDenoise() {
  resetDenoise();
  $("denoise-xt").removeAttribute("src");
  $("denoise-x0").removeAttribute("src");
  const query = queryOf("denoise", ["seed", "label", ...samplerNames()]);
  setStatus("denoising…");
  const started = performance.now();
  openStream(apiUrl("denoise", query), {
    start: (data) => {
      if (typeof data.total === "number") denoise.total = data.total;
      $("denoise-step").textContent = `step 0 / ${denoise.total || "…"}`;
      if (data.sampler) setStatus(`denoising with ${data.sampler}…`);
    },
    step: (data) => {
      denoise.total = data.total;
      denoise.frames.push(data);
      const scrubber = $("denoise-scrubber");
      const following = scrubber.disabled || Number(scrubber.value) === Number(scrubber.max);
      scrubber.disabled = false;
      scrubber.max = String(denoise.frames.length - 1);
      if (following) scrubber.value = scrubber.max;
      showDenoiseFrame(Number(scrubber.value));
    },
    done: (data) => setStatus(`denoised in ${took(data, started)}`),
  });
}

function showDenoiseFrame(index) {
  const frame = denoise.frames[index];
  if (!frame) return;
  $("denoise-xt").src = frame.x_t;
  $("denoise-x0").src = frame.x0;
  $("denoise-step").textContent = `step ${frame.step} / ${frame.total}`;
}

// ---------------------------------------------------------------- complete view

function canvasContext() {
  return $("complete-canvas").getContext("2d", { willReadFrequently: true });
}

function sizeCanvas() {
  const canvas = $("complete-canvas");
  const [, height, width] = app.run.image_shape || [1, 28, 28];
  if (canvas.width !== width) canvas.width = width;
  if (canvas.height !== height) canvas.height = height;
  $("complete-rows").max = String(height);
}

function clearCanvas() {
  const canvas = $("complete-canvas");
  const context = canvasContext();
  context.fillStyle = "#000";
  context.fillRect(0, 0, canvas.width, canvas.height);
}

// The canvas as one hex digit (16 grey levels) per pixel, row by row.
function canvasHex() {
  const canvas = $("complete-canvas");
  const pixels = canvasContext().getImageData(0, 0, canvas.width, canvas.height).data;
  let hex = "";
  for (let i = 0; i < pixels.length; i += 4) hex += Math.round((pixels[i] * 15) / 255).toString(16);
  return hex;
}

function paintHex(hex) {
  const canvas = $("complete-canvas");
  const context = canvasContext();
  const image = context.createImageData(canvas.width, canvas.height);
  for (let i = 0; i < canvas.width * canvas.height; i += 1) {
    const level = (parseInt(hex[i] || "0", 16) || 0) * 17;
    image.data.set([level, level, level, 255], i * 4);
  }
  context.putImageData(image, 0, 0);
}

// White strokes on black, like MNIST: the pointer's path drawn in canvas pixels.
function bindDrawing() {
  const canvas = $("complete-canvas");
  let last = null;
  const point = (event) => {
    const box = canvas.getBoundingClientRect();
    return [((event.clientX - box.left) * canvas.width) / box.width, ((event.clientY - box.top) * canvas.height) / box.height];
  };
  const stroke = (from, to) => {
    const context = canvasContext();
    context.strokeStyle = "#fff";
    context.lineWidth = Math.max(1.5, canvas.width / 14);
    context.lineCap = "round";
    context.lineJoin = "round";
    context.beginPath();
    context.moveTo(...from);
    context.lineTo(...to);
    context.stroke();
  };
  canvas.addEventListener("pointerdown", (event) => {
    canvas.setPointerCapture(event.pointerId);
    last = point(event);
    stroke(last, last);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!last) return;
    const next = point(event);
    stroke(last, next);
    last = next;
  });
  const finish = () => {
    if (!last) return;
    last = null;
    setParam("test", "", "complete");
    setParam("canvas", canvasHex(), "complete");
  };
  canvas.addEventListener("pointerup", finish);
  canvas.addEventListener("pointercancel", finish);
}

async function loadTestImage(index) {
  const body = await getJson("test-image", apiUrl("test-image", { index: String(index) }));
  if (!body) return;
  paintHex(body.canvas);
  setParam("canvas", "", "complete");
  setParam("test", index, "complete");
  const label = className(body.label);
  setStatus(`test image ${index}${label !== null ? `: ${label}` : ""}`);
}

function runCompletion() {
  const params = viewParams("complete");
  const query = { ...queryOf("complete", ["rows", "n", "seed", "label"]) };
  if (params.test !== "" && params.canvas === "") query.test = params.test;
  else query.canvas = canvasHex();
  const results = $("complete-results");
  results.replaceChildren();
  $("complete-kept").removeAttribute("src");
  $("complete-row").textContent = "";
  setStatus("completing…");
  const started = performance.now();
  openStream(apiUrl("complete", query), {
    start: (data) => {
      $("complete-kept").src = data.kept;
      $("complete-row").textContent = `keeping ${data.rows} of ${data.height} rows`;
      results.dataset.rows = String(data.rows);
      results.dataset.height = String(data.height);
    },
    row: (data) => {
      showCompletions(data.images);
      $("complete-row").textContent = `row ${data.row + 1} / ${results.dataset.height || "…"}`;
    },
    done: (data) => {
      showCompletions(data.images.map((image) => image.png));
      setStatus(`completed in ${took(data, started)}`);
    },
  });
}

function showCompletions(pngs) {
  const results = $("complete-results");
  while (results.children.length < pngs.length) results.append(pixelImage(pngs[results.children.length], { className: "pixel big" }));
  pngs.forEach((png, index) => {
    results.children[index].src = png;
  });
}

// ---------------------------------------------------------------- text view

function runText() {
  const query = queryOf("text", ["prompt", "max_new_tokens", "temperature", "top_k", "top_p", "seed"]);
  query.prompt = viewParams("text").prompt || "";
  const output = $("text-output");
  output.replaceChildren(el("span", { className: "prompt", text: query.prompt }));
  setStatus("writing…");
  const started = performance.now();
  openStream(apiUrl("text", query), {
    token: (data) => output.append(tokenSpan(data)),
    done: (data) => setStatus(`written in ${took(data, started)}`),
  });
}

// A drawn token, shaded by its probability; its title lists the five likeliest alternatives.
function tokenSpan(token) {
  const shade = Math.max(0, Math.min(9, Math.floor(token.probability * 10)));
  const lines = (token.top || []).map((t) => `${JSON.stringify(t.text)} ${percent(t.probability)}`);
  const span = el("span", {
    className: `token shade-${shade}`,
    text: token.text,
    title: `${JSON.stringify(token.text)} drew ${percent(token.probability)}\n${lines.join("\n")}`,
  });
  span.dataset.probability = String(token.probability);
  return span;
}

// ---------------------------------------------------------------- nearest view

async function loadNearest() {
  const id = viewParams("nearest").image;
  $("nearest-empty").hidden = id !== "";
  if (id === "") return;
  const body = await getJson("nearest", apiUrl("nearest", { image: id }));
  if (!body) return;
  const figures = [el("figure", { className: "query" }, [pixelImage(body.image, { className: "pixel big" }), el("figcaption", { text: "generated" })])];
  for (const neighbour of body.neighbours) {
    const label = className(neighbour.label);
    figures.push(el("figure", {}, [
      pixelImage(neighbour.png, { className: "pixel big" }),
      el("figcaption", { text: `${formatNumber(neighbour.distance)}${label !== null ? ` · ${label}` : ""}` }),
    ]));
  }
  $("nearest-row").replaceChildren(...figures);
  $("nearest-verdict").textContent = body.verdict;
  factsTable($("nearest-numbers"), {
    "distance to the nearest training image": body.distance,
    "held-out real images closer than that": typeof body.held_out_closer === "number" ? percent(body.held_out_closer) : body.held_out_closer,
    threshold: body.threshold,
  });
}

// ---------------------------------------------------------------- run view

async function loadFacts() {
  const body = await getJson("facts", apiUrl("facts", {}));
  if (!body) return;
  const nested = (value, prefix) => (value && typeof value === "object" ? flatten(value, prefix) : { [prefix.slice(0, -1)]: value });
  factsTable($("run-facts"), {
    name: body.name,
    family: body.family,
    ...nested(body.data, "data."),
    epochs: body.epochs,
    parameters: body.parameters,
    ...nested(body.train || {}, "train."),
    ...nested(body.config || {}, "config."),
  });
  drawCurves(body.history || []);
  const metrics = body.metrics && typeof body.metrics.metrics === "object" ? body.metrics.metrics : body.metrics;
  $("run-metrics-title").hidden = !metrics;
  if (metrics) factsTable($("run-metrics"), flatten(metrics));
  else $("run-metrics").replaceChildren();
}

function flatten(object, prefix = "") {
  const flat = {};
  for (const [key, value] of Object.entries(object)) {
    if (value && typeof value === "object" && !Array.isArray(value)) Object.assign(flat, flatten(value, `${prefix}${key}.`));
    else flat[prefix + key] = Array.isArray(value) ? JSON.stringify(value) : value;
  }
  return flat;
}

function factsTable(table, facts) {
  const rows = Object.entries(facts)
    .filter(([, value]) => value !== undefined)
    .map(([key, value]) => el("tr", {}, [el("th", { scope: "row", text: key }), el("td", { text: value === null ? "—" : formatNumber(value) })]));
  table.replaceChildren(el("tbody", {}, rows));
}

// One small line chart per numeric key of the history, epoch on x.
function drawCurves(history) {
  const keys = [];
  for (const entry of history) {
    for (const [key, value] of Object.entries(entry)) {
      if (key !== "epoch" && typeof value === "number" && !keys.includes(key)) keys.push(key);
    }
  }
  const charts = keys.map((key) => {
    const points = history
      .map((entry, index) => [entry.epoch ?? index + 1, entry[key]])
      .filter(([x, y]) => typeof y === "number" && Number.isFinite(y) && Number.isFinite(x));
    return el("figure", { className: "curve" }, [lineChart(points, key), el("figcaption", { text: key })]);
  });
  $("run-curves").replaceChildren(...charts);
}

function lineChart(points, name) {
  const width = 240;
  const height = 130;
  const pad = { left: 44, right: 8, top: 8, bottom: 20 };
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "chart", role: "img", "aria-label": name });
  if (points.length === 0) return chart;
  const xs = points.map((p) => p[0]);
  const ys = points.map((p) => p[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const sx = (x) => pad.left + (x1 === x0 ? 0.5 : (x - x0) / (x1 - x0)) * (width - pad.left - pad.right);
  const sy = (y) => height - pad.bottom - (y1 === y0 ? 0.5 : (y - y0) / (y1 - y0)) * (height - pad.top - pad.bottom);
  chart.append(
    svg("line", { x1: pad.left, y1: height - pad.bottom, x2: width - pad.right, y2: height - pad.bottom, class: "axis" }),
    svg("line", { x1: pad.left, y1: pad.top, x2: pad.left, y2: height - pad.bottom, class: "axis" }),
    svg("text", { x: pad.left - 4, y: pad.top + 8, class: "tick end" }, formatNumber(y1)),
    svg("text", { x: pad.left - 4, y: height - pad.bottom, class: "tick end" }, formatNumber(y0)),
    svg("text", { x: pad.left, y: height - 5, class: "tick" }, `epoch ${formatNumber(x0)}`),
    svg("text", { x: width - pad.right, y: height - 5, class: "tick end" }, formatNumber(x1)),
  );
  if (points.length === 1) {
    chart.append(svg("circle", { cx: sx(xs[0]), cy: sy(ys[0]), r: 3, class: "dot" }));
  } else {
    const path = points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ");
    chart.append(svg("polyline", { points: path, class: "line" }));
  }
  return chart;
}

// ---------------------------------------------------------------- entering a view

// What each view does when shown: draw what its URL state says, unless it already shows that.
const ENTER = {
  sample: () => {
    const key = JSON.stringify(queryOf("sample", ["n", "seed", "label", ...samplerNames()]));
    if (app.shown.sample !== key) return drawSamples();
  },
  latent: () => {
    placeSliders();
    if (!app.shown.latent) {
      app.shown.latent = true;
      requestLatentImage();
      return loadCandidates();
    }
  },
  denoise: () => {},
  complete: () => {
    sizeCanvas();
    const params = viewParams("complete");
    if (app.shown.complete) return;
    app.shown.complete = true;
    if (params.canvas) paintHex(params.canvas);
    else if (params.test !== "") {
      clearCanvas();
      $("complete-test-index").value = params.test;
      return loadTestImage(params.test);
    } else clearCanvas();
  },
  text: () => {},
  nearest: () => loadNearest(),
  run: () => {
    if (!app.shown.run) {
      app.shown.run = true;
      return loadFacts();
    }
  },
};

// Wrap ENTER so that a failed request shows in the status line.
for (const name of Object.keys(ENTER)) ENTER[name] = guard(ENTER[name]);

// ---------------------------------------------------------------- wiring

function bindForms() {
  $("run-picker").addEventListener("change", guard((event) => chooseRun(runById(event.target.value))));
  $("sample-form").addEventListener("submit", guard((event) => {
    event.preventDefault();
    return drawSamples();
  }));
  $("latent-form").addEventListener("submit", (event) => event.preventDefault());
  $("latent-seed").addEventListener("change", guard(latentSeedChanged));
  $("latent-label").addEventListener("change", guard(latentSeedChanged));
  $("latent-reset").addEventListener("click", guard(() => {
    setParam("offsets", "", "latent");
    placeSliders();
    requestLatentImage();
  }));
  $("latent-image").addEventListener("click", guard(() => {
    const id = $("latent-image").dataset.imageId;
    if (id) openNearest(id);
  }));
  $("denoise-form").addEventListener("submit", guard((event) => {
    event.preventDefault();
    runDenoise();
  }));
  $("denoise-scrubber").addEventListener("input", guard((event) => showDenoiseFrame(Number(event.target.value))));
  $("complete-form").addEventListener("submit", guard((event) => {
    event.preventDefault();
    runCompletion();
  }));
  $("complete-test").addEventListener("click", guard(() => loadTestImage(Number($("complete-test-index").value) || 0)));
  $("complete-clear").addEventListener("click", guard(() => {
    clearCanvas();
    setParam("test", "", "complete");
    setParam("canvas", "", "complete");
  }));
  $("text-form").addEventListener("submit", guard((event) => {
    event.preventDefault();
    runText();
  }));
  bindInputs();
  bindDrawing();
}

function start() {
  // A bug that escapes every guard still reaches the status line (and the console, where tests see it).
  window.addEventListener("error", (event) => showError(event.message || "an error in the page"));
  window.addEventListener("unhandledrejection", (event) => showError(event.reason));
  document.body.dataset.busy = "0";
  document.body.dataset.client = CLIENT;
  bindForms();
  changeBusy(+1);
  loadRuns()
    .catch(showError)
    .finally(() => {
      changeBusy(-1);
      document.body.dataset.ready = "true";
    });
}

start();
