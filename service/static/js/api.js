// Calls to the service's /v1 API, with the optional API key and timing.

// sessionStorage, not localStorage: the key lives as long as this tab.
const KEY_STORAGE = "resnet-serve.api-key";

export class ApiError extends Error {
  /**
   * @param {number} status HTTP status, 0 when the service could not be reached.
   * @param {string} message The service's own `error` text where it gave one.
   */
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function storedKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

export function storeKey(key) {
  sessionStorage.setItem(KEY_STORAGE, key);
}

export function forgetKey() {
  sessionStorage.removeItem(KEY_STORAGE);
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body && typeof body.error === "string") return body.error;
  } catch {
    // Not JSON (a proxy's page, say): fall back to the status line.
  }
  return `${response.status} ${response.statusText}`.trim();
}

/**
 * Send one request and time it.
 * @param {string} path Path under the service, with its query string.
 * @param {{method?: string, body?: BodyInit, as?: "json" | "blob"}} options
 * @returns {Promise<{data: any, ms: number}>}
 * @throws {ApiError} on a non-2xx answer or a network failure.
 */
export async function call(path, { method = "GET", body, as = "json" } = {}) {
  const headers = {};
  const key = storedKey();
  if (key) headers.Authorization = `Bearer ${key}`;

  const started = performance.now();
  let response;
  try {
    response = await fetch(path, { method, body, headers });
  } catch (error) {
    throw new ApiError(0, `cannot reach the service (${error.message})`);
  }
  if (!response.ok) throw new ApiError(response.status, await errorMessage(response));

  const data = as === "blob" ? await response.blob() : await response.json();
  return { data, ms: performance.now() - started };
}

function imageForm(file) {
  const form = new FormData();
  form.append("file", file, file.name || "image");
  return form;
}

const modelPath = (model) => `/v1/models/${encodeURIComponent(model)}`;

export const listModels = () => call("/v1/models");

export const modelMetadata = (model) => call(modelPath(model));

export const preprocess = (model, file) =>
  call(`${modelPath(model)}/preprocess`, { method: "POST", body: imageForm(file), as: "blob" });

export function classify(model, file, topK) {
  const query = new URLSearchParams({ top_k: String(topK) });
  return call(`${modelPath(model)}/classify?${query}`, { method: "POST", body: imageForm(file) });
}

export function classifySubnetwork(model, file, removed, topK) {
  const query = new URLSearchParams({ top_k: String(topK), remove: removed.join(",") });
  return call(`${modelPath(model)}/subnetwork/classify?${query}`, {
    method: "POST",
    body: imageForm(file),
  });
}
