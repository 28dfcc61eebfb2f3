// The API key form: shown when the service answers 401, the key kept in this tab only.

import { forgetKey, storeKey, storedKey } from "./api.js";
import { $ } from "./dom.js";

/** Show the key form, with `message` in place of its explanation when given. */
export function askForKey(message) {
  $("key-form").hidden = false;
  if (message) $("key-help").textContent = message;
  $("key-input").focus();
}

/**
 * Wire the key form and the "Forget API key" button.
 * @param {() => void} onKey Called once a key has been stored.
 */
export function bindKeyForm(onKey) {
  const form = $("key-form");
  const forget = $("forget-key");
  forget.hidden = !storedKey();

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key-input").value.trim();
    if (!key) return;
    storeKey(key);
    $("key-input").value = "";
    form.hidden = true;
    forget.hidden = false;
    onKey();
  });

  forget.addEventListener("click", () => {
    forgetKey();
    forget.hidden = true;
    askForKey(null);
  });
}
