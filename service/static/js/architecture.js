// The model's architecture from its metadata: stem, stages of residual blocks, head.
// Each block is a toggle button (pressed = removed) with room for an importance bar.

import { element } from "./dom.js";
import { compact, points } from "./format.js";

/** A one-line description of a block, for the details line and the tooltip. */
export function describeBlock(block) {
  const parts = [`${block.name}`, `block ${block.index}`, `stage ${block.stage}`];
  if (block.downsample) parts.push("downsampling");
  parts.push(`${compact(block.params)} params`, `${compact(block.macs)} MACs`);
  return parts.join(" · ");
}

/** One row of the diagram: a label on the left, its content on the right. */
function row(title, detail, content) {
  const line = element("div", "arch-row");
  const label = element("div", "arch-label");
  label.append(element("strong", "", title), element("span", "", detail));
  line.append(label, content);
  return line;
}

function blockCell(block, onToggle, onDetails) {
  const cell = element("div", "block-cell");
  const importance = element("div", "importance");
  importance.hidden = true;

  const button = element("button", block.downsample ? "block downsample" : "block");
  button.type = "button";
  button.dataset.index = String(block.index);
  button.setAttribute("aria-pressed", "false");
  button.title = describeBlock(block);
  const spoken = `, ${block.name}${block.downsample ? ", downsampling" : ""}`;
  button.append(
    element("span", "", String(block.index)),
    element("span", "visually-hidden", spoken),
  );
  button.addEventListener("click", () => onToggle(block.index));
  for (const event of ["focus", "mouseenter"]) {
    button.addEventListener(event, () => onDetails(block));
  }

  cell.append(importance, button);
  return { cell, button, importance };
}

function stageRow(stage, name, blocks, onToggle, onDetails, cells) {
  const group = element("div", "stage-blocks");
  group.setAttribute("role", "group");
  group.setAttribute("aria-label", `Stage ${stage}, ${name}`);
  for (const block of blocks) {
    const parts = blockCell(block, onToggle, onDetails);
    cells.set(block.index, parts);
    group.append(parts.cell);
  }
  const count = `${name} · ${blocks.length} block${blocks.length === 1 ? "" : "s"}`;
  return row(`Stage ${stage}`, count, group);
}

/**
 * Draw the architecture into `container`.
 * @param {HTMLElement} container
 * @param {object} meta The model's metadata from GET /v1/models/{model}.
 * @param {(index: number) => void} onToggle Called when a block is pressed.
 * @param {(block: object) => void} onDetails Called when a block is focused or hovered.
 * @returns {Map<number, {cell: HTMLElement, button: HTMLButtonElement, importance: HTMLElement}>}
 */
export function renderArchitecture(container, meta, onToggle, onDetails) {
  const cells = new Map();
  const size = meta.preprocessing.crop ?? meta.preprocessing.resize;
  const stageNames = meta.architecture.stages ?? [];
  const stages = new Map();
  for (const block of meta.blocks) {
    if (!stages.has(block.stage)) stages.set(block.stage, []);
    stages.get(block.stage).push(block);
  }

  const rows = [row("Stem", "convolution", element("p", "arch-text", `input 3×${size}×${size}`))];
  for (const [stage, blocks] of stages) {
    const name = stageNames[stage - 1] ?? `stage ${stage}`;
    rows.push(stageRow(stage, name, blocks, onToggle, onDetails, cells));
  }
  const head = `average pool → linear → ${meta.labels.length} classes`;
  rows.push(row("Head", "classifier", element("p", "arch-text", head)));
  container.replaceChildren(...rows);
  return cells;
}

/** Show which blocks are removed. */
export function markRemoved(cells, removed) {
  for (const [index, { button }] of cells) {
    button.setAttribute("aria-pressed", String(removed.has(index)));
  }
}

/**
 * Draw one bar above each block: its height is the drop of the top class's
 * probability when that block alone is removed, relative to the largest change.
 * @param {Map} cells From renderArchitecture.
 * @param {{index: number, name: string, drop: number}[] | null} results Null hides the bars.
 */
export function showImportance(cells, results) {
  if (!results) {
    for (const { importance } of cells.values()) importance.hidden = true;
    return;
  }
  const largest = Math.max(...results.map((result) => Math.abs(result.drop)), 1e-6);
  for (const result of results) {
    const { importance } = cells.get(result.index);
    const bar = element("div", result.drop < 0 ? "bar rise" : "bar");
    bar.style.height = `${(Math.abs(result.drop) / largest) * 100}%`;
    bar.dataset.drop = String(result.drop);
    bar.setAttribute("role", "img");
    bar.setAttribute("aria-label", `${result.name}: ${points(-result.drop)}`);
    bar.title = `Without ${result.name}: ${points(-result.drop)}`;
    importance.replaceChildren(bar);
    importance.hidden = false;
  }
}
