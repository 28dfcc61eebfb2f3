// Top-k predictions as labelled horizontal bars.

import { element } from "./dom.js";
import { percent, points } from "./format.js";

/**
 * Fill an <ol> with one bar per class, most probable first.
 * @param {HTMLOListElement} list
 * @param {{class_id: number, label: string, probability: number}[]} top
 * @param {Map<number, number>} [reference] Each class's probability in the full
 *   network: when given, each row also shows how far this one moved from it.
 */
export function renderBars(list, top, reference) {
  const rows = top.map((entry) => {
    const row = element("li");
    row.dataset.classId = String(entry.class_id);
    row.dataset.probability = String(entry.probability);

    const value = element("span", "value", percent(entry.probability));
    if (reference && reference.has(entry.class_id)) {
      const difference = entry.probability - reference.get(entry.class_id);
      const direction = difference < -0.0005 ? "down" : difference > 0.0005 ? "up" : "";
      const delta = element("span", `delta ${direction}`, points(difference));
      delta.title = "Change from the full network";
      value.append(delta);
    }

    const track = element("span", "track");
    track.setAttribute("aria-hidden", "true");
    const fill = element("span", "fill");
    fill.style.width = `${Math.max(entry.probability * 100, 0.5)}%`;
    track.append(fill);

    row.append(element("span", "label", entry.label), value, track);
    return row;
  });
  list.replaceChildren(...rows);
}

export function clearBars(list) {
  list.replaceChildren();
}
