// Block importance: the full network's top class, measured with each block removed alone.

import { classifySubnetwork } from "./api.js";

/**
 * One sub-network request per block, all sent at once so that the service
 * batches them (the browser itself allows about six connections per host).
 * @param {string} model
 * @param {File} file
 * @param {{index: number, name: string}[]} blocks
 * @param {{class_id: number, probability: number}} topClass The full network's first answer.
 * @param {number} numClasses Asked for in full, so the class is found wherever it ranks.
 * @returns {Promise<{results: {index: number, name: string, probability: number,
 *   drop: number}[], ms: number}>}
 */
export async function measureImportance(model, file, blocks, topClass, numClasses) {
  const started = performance.now();
  const answers = await Promise.all(
    blocks.map((block) => classifySubnetwork(model, file, [block.index], numClasses)),
  );

  const results = blocks.map((block, position) => {
    const top = answers[position].data.predictions[0].top;
    const entry = top.find((item) => item.class_id === topClass.class_id);
    const probability = entry ? entry.probability : 0;
    const drop = topClass.probability - probability;
    return { index: block.index, name: block.name, probability, drop };
  });
  return { results, ms: performance.now() - started };
}
