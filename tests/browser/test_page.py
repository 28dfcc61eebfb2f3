"""The web page in headless Chromium against a real server: what it shows is what the API says."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from PIL import Image

from tests.browser.driver import open_page
from tests.helpers import SAMPLES, ServerProcess

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.browser

MODEL = "resnet20-cifar10"
# A jeep photo: the CIFAR model calls it an automobile without being certain,
# so removing blocks visibly moves the probabilities.
JEEP = SAMPLES / "imagenet" / "imagenet_06_609.jpg"
CAT = SAMPLES / "cifar10" / "cifar10_00_3.png"
# The natural-size RGBA pixels of an <img>, read back through a canvas.
SHOWN_PIXELS = """(selector) => {
  const image = document.querySelector(selector);
  const canvas = document.createElement("canvas");
  canvas.width = image.naturalWidth;
  canvas.height = image.naturalHeight;
  const context = canvas.getContext("2d");
  context.drawImage(image, 0, 0);
  const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
  return {width: canvas.width, height: canvas.height, rgba: Array.from(pixels)};
}"""
# Probabilities may differ in the last bits between batch compositions and
# between the masked and the pruned graph of a sub-network.
TOLERANCE = 1e-5


def api(
    server: ServerProcess, path: str, image: Path | bytes | None = None, **params: str | int
) -> httpx.Response:
    """GET, or POST `image` as multipart when given; the answer must be a 2xx."""
    url = f"{server.url}{path}"
    if image is None:
        response = httpx.get(url, timeout=30)
    else:
        data = image.read_bytes() if isinstance(image, Path) else image
        response = httpx.post(url, files={"file": ("image", data)}, params=params, timeout=30)
    assert response.is_success, response.text
    return response


def choose_model(page: Page, model: str) -> None:
    page.get_by_label("Model", exact=True).select_option(model)
    page.wait_for_selector(f"#architecture[data-model='{model}']")


def upload(page: Page, path: Path) -> None:
    page.set_input_files("#file-input", path)


def shown_bars(page: Page, list_id: str) -> list[tuple[int, float]]:
    """(class_id, probability) of each bar in the list, top first."""
    rows = page.locator(f"#{list_id} li")
    return [
        (
            int(row.get_attribute("data-class-id") or -1),
            float(row.get_attribute("data-probability") or "nan"),
        )
        for row in rows.all()
    ]


def api_bars(body: dict[str, Any]) -> list[tuple[int, float]]:
    return [(entry["class_id"], entry["probability"]) for entry in body["predictions"][0]["top"]]


def assert_same_bars(shown: list[tuple[int, float]], expected: list[tuple[int, float]]) -> None:
    assert [class_id for class_id, _ in shown] == [class_id for class_id, _ in expected]
    assert [p for _, p in shown] == pytest.approx([p for _, p in expected], abs=TOLERANCE)


def test_architecture_follows_the_metadata(page: Page, server: ServerProcess) -> None:
    listed = [model["name"] for model in api(server, "/v1/models").json()["models"]]
    options = page.locator("#model-select option").evaluate_all("(os) => os.map((o) => o.value)")
    assert options == listed

    for model in listed:
        choose_model(page, model)
        meta = api(server, f"/v1/models/{model}").json()
        buttons = page.locator("#architecture .block")
        assert buttons.count() == len(meta["blocks"])
        for block, button in zip(meta["blocks"], buttons.all(), strict=True):
            assert button.get_attribute("data-index") == str(block["index"])
            assert ("downsample" in (button.get_attribute("class") or "")) == block["downsample"]
            assert block["name"] in (button.get_attribute("title") or "")

        stages = sorted({block["stage"] for block in meta["blocks"]})
        for stage in stages:
            group = page.get_by_role("group", name=f"Stage {stage},")
            expected = [str(b["index"]) for b in meta["blocks"] if b["stage"] == stage]
            shown = group.locator(".block").evaluate_all("(bs) => bs.map((b) => b.dataset.index)")
            assert shown == expected
        rows = page.locator("#architecture .arch-label strong").all_inner_texts()
        assert rows == ["Stem", *[f"Stage {stage}" for stage in stages], "Head"]
        assert f"{len(meta['labels'])} classes" in page.locator("#architecture").inner_text()


def test_upload_shows_the_model_input_and_the_full_top5(page: Page, server: ServerProcess) -> None:
    choose_model(page, MODEL)
    upload(page, JEEP)
    page.wait_for_selector("#full-list li")

    expected = api(server, f"/v1/models/{MODEL}/classify", JEEP, top_k=5).json()
    assert_same_bars(shown_bars(page, "full-list"), api_bars(expected))
    top = expected["predictions"][0]["top"][0]
    assert page.locator("#full-list li").first.inner_text().startswith(top["label"])

    # The page shows exactly the pixels of the preprocess endpoint's PNG.
    page.wait_for_function("document.querySelector('#model-view').naturalWidth > 0")
    shown = page.evaluate(SHOWN_PIXELS, "#model-view")
    png = api(server, f"/v1/models/{MODEL}/preprocess", JEEP).content
    expected = Image.open(io.BytesIO(png)).convert("RGBA")
    assert (shown["width"], shown["height"]) == expected.size == (32, 32)
    assert bytes(shown["rgba"]) == expected.tobytes()
    assert page.locator("#model-view-caption").inner_text().endswith("32×32")
    assert "ms" in page.locator("#full-latency").inner_text()


def test_dropped_image_is_classified(page: Page, server: ServerProcess) -> None:
    choose_model(page, MODEL)
    dropped = page.evaluate_handle(
        """([bytes, name]) => {
          const transfer = new DataTransfer();
          transfer.items.add(new File([new Uint8Array(bytes)], name, {type: "image/png"}));
          return transfer;
        }""",
        [list(CAT.read_bytes()), CAT.name],
    )
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": dropped})
    page.wait_for_selector("#full-list li")

    expected = api(server, f"/v1/models/{MODEL}/classify", CAT, top_k=5).json()
    assert_same_bars(shown_bars(page, "full-list"), api_bars(expected))
    assert page.locator("#original-caption").inner_text() == CAT.name


def test_removed_blocks_give_the_api_subnetwork(page: Page, server: ServerProcess) -> None:
    choose_model(page, MODEL)
    upload(page, JEEP)
    page.wait_for_selector("#full-list li")
    full = shown_bars(page, "full-list")

    page.locator(".block[data-index='3']").click()
    # Keyboard too: focus a block and press Space.
    page.locator(".block[data-index='7']").focus()
    page.keyboard.press("Space")
    page.wait_for_selector("#sub-list[data-removed='3,7']")
    assert page.locator(".block[aria-pressed='true']").count() == 2

    expected = api(
        server, f"/v1/models/{MODEL}/subnetwork/classify", JEEP, remove="3,7", top_k=5
    ).json()
    shown = shown_bars(page, "sub-list")
    assert_same_bars(shown, api_bars(expected))
    assert [p for _, p in shown] != pytest.approx([p for _, p in full], abs=TOLERANCE)
    assert expected["graph"] in page.locator("#sub-latency").inner_text()

    page.locator(".block[data-index='3']").click()
    page.wait_for_selector("#sub-list[data-removed='7']")
    expected = api(
        server, f"/v1/models/{MODEL}/subnetwork/classify", JEEP, remove="7", top_k=5
    ).json()
    assert_same_bars(shown_bars(page, "sub-list"), api_bars(expected))

    page.get_by_role("button", name="Restore all").click()
    page.wait_for_selector("#sub-list:not([data-removed])", state="attached")
    assert page.locator("#sub-list li").count() == 0
    assert page.locator(".block[aria-pressed='true']").count() == 0


def test_importance_view_matches_single_block_removals(page: Page, server: ServerProcess) -> None:
    choose_model(page, MODEL)
    upload(page, JEEP)
    page.wait_for_selector("#full-list li")
    toggle = page.get_by_role("button", name="Block importance")
    toggle.click()
    page.wait_for_selector("#importance-panel[data-state='done']")
    assert toggle.get_attribute("aria-expanded") == "true"

    meta = api(server, f"/v1/models/{MODEL}").json()
    classes = len(meta["labels"])
    full = api(server, f"/v1/models/{MODEL}/classify", JEEP, top_k=classes).json()
    top = full["predictions"][0]["top"][0]
    bars = page.locator("#architecture .importance .bar")
    assert bars.count() == len(meta["blocks"])

    for block, bar in zip(meta["blocks"], bars.all(), strict=True):
        sub = api(
            server,
            f"/v1/models/{MODEL}/subnetwork/classify",
            JEEP,
            remove=str(block["index"]),
            top_k=classes,
        ).json()
        probability = next(
            entry["probability"]
            for entry in sub["predictions"][0]["top"]
            if entry["class_id"] == top["class_id"]
        )
        drop = float(bar.get_attribute("data-drop") or "nan")
        assert drop == pytest.approx(top["probability"] - probability, abs=TOLERANCE)
        assert block["name"] in (bar.get_attribute("aria-label") or "")
    assert top["label"] in page.locator("#importance-summary").inner_text()

    toggle.click()
    assert page.locator("#importance-panel").is_hidden()
    assert page.locator("#architecture .importance:visible").count() == 0


def test_corrupt_upload_shows_the_api_error(
    page: Page, server: ServerProcess, tmp_path: Path
) -> None:
    choose_model(page, MODEL)
    upload(page, CAT)
    page.wait_for_selector("#full-list li")

    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(CAT.read_bytes()[:120])
    upload(page, corrupt)
    alert = page.get_by_role("alert")
    alert.wait_for()

    answer = httpx.post(
        f"{server.url}/v1/models/{MODEL}/classify",
        files={"file": ("broken.png", corrupt.read_bytes())},
        timeout=30,
    )
    assert answer.status_code == 400
    assert answer.json()["error"] in alert.inner_text()
    assert "broken.png" in alert.inner_text()
    assert page.locator("#full-list li").count() == 0
    assert page.locator("#importance-toggle").is_disabled()

    upload(page, CAT)
    page.wait_for_selector("#full-list li")
    assert alert.is_hidden()


def test_page_fits_a_narrow_screen(page: Page) -> None:
    page.set_viewport_size({"width": 360, "height": 740})
    choose_model(page, "resnet56-cifar10")
    upload(page, JEEP)
    page.wait_for_selector("#full-list li")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    right_edges = page.locator("#architecture .block").evaluate_all(
        "(blocks) => blocks.map((b) => b.getBoundingClientRect().right)"
    )
    assert max(right_edges) <= 360


def test_page_asks_for_the_api_key_and_keeps_it_in_the_tab(
    chromium: Browser, repository: Path
) -> None:
    key = "page-test-key"
    server = ServerProcess(repository, models=MODEL, api_key=key)
    try:
        server.wait_ready()
        page, errors = open_page(chromium, f"{server.url}/")
        key_input = page.get_by_label("API key", exact=True)
        key_input.wait_for()
        assert page.get_by_label("Model", exact=True).is_disabled()

        key_input.fill("wrong")
        page.get_by_role("button", name="Use key").click()
        page.wait_for_selector("#key-help:has-text('refused')")

        key_input.fill(key)
        page.get_by_role("button", name="Use key").click()
        page.wait_for_selector("#architecture .block")
        assert page.locator("#key-form").is_hidden()
        stored = page.evaluate(
            "[sessionStorage.length, localStorage.length, Object.values(sessionStorage)]"
        )
        assert stored == [1, 0, [key]]

        upload(page, CAT)
        page.wait_for_selector("#full-list li")
        page.context.close()
        assert errors == []
    finally:
        server.stop()
