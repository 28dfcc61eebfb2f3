// Choosing an image: the file picker, or a file dropped on the drop zone.

/**
 * Call `onFile` with each image the user picks or drops.
 * @param {HTMLInputElement} input The file input.
 * @param {HTMLElement} zone The drop zone around it.
 * @param {(file: File) => void} onFile
 */
export function bindUpload(input, zone, onFile) {
  input.addEventListener("change", () => {
    if (input.files[0]) onFile(input.files[0]);
    input.value = ""; // so that choosing the same file again reloads it
  });

  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    if (event.dataTransfer.files[0]) onFile(event.dataTransfer.files[0]);
  });
  // A file dropped beside the zone would otherwise replace the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
}
