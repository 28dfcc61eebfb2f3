// The page's state and wiring: model choice, upload, block toggles, importance.

import * as api from "./api.js";
import { describeBlock, markRemoved, renderArchitecture, showImportance } from "./architecture.js";
import { $ } from "./dom.js";
import { compact, milliseconds, percent, points } from "./format.js";
import { measureImportance } from "./importance.js";
import { askForKey, bindKeyForm } from "./key.js";
import { clearBars, renderBars } from "./predictions.js";
import { bindUpload } from "./upload.js";

const state = {
  model: null,
  meta: null,
  cells: new Map(),
  file: null,
  full: null, // {top, byClass: Map<class_id, probability>} of the full network
  removed: new Set(),
  importance: null,
  // Bumped for each new model or image: answers about an older one are dropped.
  generation: 0,
  // Bumped for each sub-network request: only the latest one is drawn.
  subRequest: 0,
  objectUrls: {},
};

// Messages and status

function showError(message) {
  const alert = $("alert");
  alert.textContent = message;
  alert.hidden = false;
}

function clearError() {
  $("alert").hidden = true;
  $("alert").textContent = "";
}

function setStatus(text) {
  $("status").textContent = text;
}

function explain(error, what) {
  if (!(error instanceof api.ApiError)) return `${what}: ${error.message}`;
  if (error.status === 0) return `${what}: ${error.message}.`;
  return `${what}: ${error.message} (HTTP ${error.status}).`;
}

/** A failed call: ask for a key on 401, otherwise say what the service said. */
function handleFailure(error, what) {
  if (error instanceof api.ApiError && error.status === 401) {
    askForKey(api.storedKey() ? "The service refused this key. Try another one." : null);
    return;
  }
  showError(explain(error, what));
}

function setObjectUrl(image, name, blob) {
  if (state.objectUrls[name]) URL.revokeObjectURL(state.objectUrls[name]);
  state.objectUrls[name] = blob ? URL.createObjectURL(blob) : null;
  if (blob) image.src = state.objectUrls[name];
  else image.removeAttribute("src");
}

// Models

async function loadModels() {
  let answer;
  try {
    answer = await api.listModels();
  } catch (error) {
    handleFailure(error, "Could not list the models");
    return;
  }
  const select = $("model-select");
  const options = answer.data.models.map((model) => {
    const option = document.createElement("option");
    option.value = model.name;
    option.textContent = `${model.name} · ${model.num_blocks} blocks`;
    return option;
  });
  select.replaceChildren(...options);
  select.disabled = options.length === 0;
  if (options.length === 0) {
    showError("The service has no model loaded.");
    return;
  }
  await selectModel(select.value);
}

async function selectModel(name) {
  const generation = ++state.generation;
  let answer;
  try {
    answer = await api.modelMetadata(name);
  } catch (error) {
    handleFailure(error, `Could not load ${name}`);
    return;
  }
  if (generation !== state.generation) return;

  clearError();
  state.model = name;
  state.meta = answer.data;
  state.removed.clear();
  state.cells = renderArchitecture($("architecture"), state.meta, toggleBlock, showDetails);
  $("architecture").dataset.model = name;
  $("model-facts").textContent = modelFacts(state.meta);
  updateSummary();
  if (state.file) await analyse();
}

function modelFacts(meta) {
  const facts = [
    meta.description,
    `${compact(meta.total_params)} parameters`,
    `${compact(meta.total_macs)} MACs`,
    meta.runtime?.provider,
  ];
  if (meta.pretrained === false) facts.push("random weights");
  return facts.filter(Boolean).join(" · ");
}

// Image

function chooseFile(file) {
  if (!file || !state.meta) return;
  state.file = file;
  $("previews").hidden = false;
  $("original-caption").textContent = file.name || "Your image";
  setObjectUrl($("original"), "original", file);
  state.generation += 1;
  analyse();
}

function resetResults() {
  state.full = null;
  state.importance = null;
  clearBars($("full-list"));
  clearBars($("sub-list"));
  delete $("sub-list").dataset.removed;
  $("full-latency").textContent = "";
  $("sub-latency").textContent = "";
  $("full-placeholder").hidden = false;
  $("sub-placeholder").hidden = false;
  $("importance-toggle").disabled = true;
  showImportance(state.cells, null);
  $("importance-summary").textContent = "";
  delete $("importance-panel").dataset.state;
  setObjectUrl($("model-view"), "modelView", null);
  $("model-view-caption").textContent = "As the model sees it";
}

/** The model's view and the full network's answer for the current image. */
async function analyse() {
  const { model, file, generation } = { ...state };
  resetResults();
  setStatus(`Classifying ${file.name || "the image"} with ${model}…`);
  let view;
  let full;
  try {
    [view, full] = await Promise.all([
      api.preprocess(model, file),
      api.classify(model, file, state.meta.labels.length),
    ]);
  } catch (error) {
    if (generation !== state.generation) return;
    setStatus("");
    $("previews").hidden = true;
    handleFailure(error, `The service could not use ${file.name || "this image"}`);
    return;
  }
  if (generation !== state.generation) return;

  clearError();
  setObjectUrl($("model-view"), "modelView", view.data);
  const top = full.data.predictions[0].top;
  state.full = { top, byClass: new Map(top.map((entry) => [entry.class_id, entry.probability])) };
  renderBars($("full-list"), top.slice(0, 5));
  $("full-placeholder").hidden = true;
  $("full-latency").textContent = milliseconds(full.ms);
  $("importance-toggle").disabled = false;
  setStatus(`Full network: ${top[0].label}, ${percent(top[0].probability)}.`);

  await updateSubnetwork();
  if ($("importance-toggle").getAttribute("aria-expanded") === "true") await runImportance();
}

// Blocks

function showDetails(block) {
  $("block-details").textContent = describeBlock(block);
}

function toggleBlock(index) {
  if (state.removed.has(index)) state.removed.delete(index);
  else state.removed.add(index);
  markRemoved(state.cells, state.removed);
  updateSummary();
  updateSubnetwork();
}

function restoreAll() {
  state.removed.clear();
  markRemoved(state.cells, state.removed);
  updateSummary();
  updateSubnetwork();
}

function updateSummary() {
  const blocks = state.meta.blocks;
  const removed = blocks.filter((block) => state.removed.has(block.index));
  $("restore-all").disabled = removed.length === 0;
  if (removed.length === 0) {
    $("removed-summary").textContent =
      `Full network: all ${blocks.length} blocks, ${compact(state.meta.total_macs)} MACs.`;
    return;
  }
  const saved = removed.reduce((sum, block) => sum + (block.removable_macs ?? block.macs), 0);
  const share = percent(saved / state.meta.total_macs);
  $("removed-summary").textContent =
    `${removed.length} of ${blocks.length} blocks removed ` +
    `(${removed.map((block) => block.name).join(", ")}): ` +
    `${compact(saved)} of ${compact(state.meta.total_macs)} MACs skipped, ${share}.`;
}

/** Classify with the removed blocks; a newer toggle supersedes this answer. */
async function updateSubnetwork() {
  const list = $("sub-list");
  if (!state.full) return;
  if (state.removed.size === 0) {
    clearBars(list);
    delete list.dataset.removed;
    $("sub-latency").textContent = "";
    $("sub-placeholder").hidden = false;
    return;
  }

  const request = ++state.subRequest;
  const { model, file, generation } = { ...state };
  const removed = [...state.removed].sort((a, b) => a - b);
  let answer;
  try {
    answer = await api.classifySubnetwork(model, file, removed, 5);
  } catch (error) {
    if (request === state.subRequest) handleFailure(error, "The sub-network failed");
    return;
  }
  if (request !== state.subRequest || generation !== state.generation) return;

  const top = answer.data.predictions[0].top;
  renderBars(list, top, state.full.byClass);
  list.dataset.removed = answer.data.removed_blocks.map((block) => block.index).join(",");
  $("sub-placeholder").hidden = true;
  $("sub-latency").textContent = `${milliseconds(answer.ms)} · ${answer.data.graph} graph`;
  setStatus(`Without ${removed.length} block${removed.length === 1 ? "" : "s"}: ` +
    `${top[0].label}, ${percent(top[0].probability)}.`);
}

// Importance

async function toggleImportance() {
  const button = $("importance-toggle");
  const open = button.getAttribute("aria-expanded") !== "true";
  button.setAttribute("aria-expanded", String(open));
  $("importance-panel").hidden = !open;
  if (!open) {
    showImportance(state.cells, null);
    return;
  }
  if (state.importance) showImportance(state.cells, state.importance);
  else await runImportance();
}

async function runImportance() {
  if (!state.full) return;
  const { model, file, generation, meta } = { ...state };
  const topClass = state.full.top[0];
  const summary = $("importance-summary");
  const panel = $("importance-panel");
  panel.dataset.state = "measuring";
  summary.textContent = `Measuring ${meta.blocks.length} sub-networks, one per removed block…`;

  let measured;
  try {
    measured = await measureImportance(model, file, meta.blocks, topClass, meta.labels.length);
  } catch (error) {
    if (generation === state.generation) handleFailure(error, "Block importance failed");
    return;
  }
  if (generation !== state.generation) return;

  state.importance = measured.results;
  showImportance(state.cells, measured.results);
  panel.dataset.state = "done";
  const worst = measured.results.reduce((a, b) => (b.drop > a.drop ? b : a));
  summary.textContent =
    `Each bar shows how the probability of “${topClass.label}” ` +
    `(${percent(topClass.probability)} with every block) changes when that block alone ` +
    `is removed. ${worst.name} matters most: ${points(-worst.drop)}. ` +
    `${measured.results.length} requests in ${milliseconds(measured.ms)}.`;
}

function init() {
  bindUpload($("file-input"), $("dropzone"), chooseFile);
  $("model-select").addEventListener("change", (event) => selectModel(event.target.value));
  $("restore-all").addEventListener("click", restoreAll);
  $("importance-toggle").addEventListener("click", toggleImportance);
  bindKeyForm(() => {
    clearError();
    loadModels();
  });
  $("original").addEventListener("error", () => {
    // The service reads formats that not every browser shows (TIFF, say).
    if ($("original").src) $("original-caption").textContent += " (no preview here)";
  });
  $("model-view").addEventListener("load", (event) => {
    const image = event.target;
    $("model-view-caption").textContent =
      `Model input · ${image.naturalWidth}×${image.naturalHeight}`;
  });
  loadModels();
}

init();
