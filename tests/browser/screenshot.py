"""Take the README's screenshots of the page from a running service.

    resnet-serve serve &   # or `make serve`
    python -m tests.browser.screenshot --url http://127.0.0.1:8000

Needs Playwright and a system Chromium, as the browser tests do.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

from tests.browser.driver import find_chromium, open_page
from tests.helpers import ROOT, SAMPLES

MODEL = "resnet56-cifar10"
PHOTO = SAMPLES / "imagenet" / "imagenet_06_609.jpg"
# Two plain blocks: the answer stays right but loses confidence.
REMOVED = (4, 13)
HOVERED = 9


def stage_the_page(page: Page) -> None:
    """A model, an image, a sub-network and the importance view, all on screen."""
    page.wait_for_selector("#architecture .block")
    page.get_by_label("Model", exact=True).select_option(MODEL)
    page.wait_for_selector(f"#architecture[data-model='{MODEL}']")
    page.set_input_files("#file-input", PHOTO)
    page.wait_for_selector("#full-list li")
    for index in REMOVED:
        page.locator(f".block[data-index='{index}']").click()
    page.wait_for_selector(f"#sub-list[data-removed='{','.join(map(str, REMOVED))}']")
    page.get_by_role("button", name="Block importance").click()
    page.wait_for_selector("#importance-panel[data-state='done']")
    page.locator(f".block[data-index='{HOVERED}']").hover()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    chromium = find_chromium()
    if chromium is None:
        parser.error("no Chromium found (apt-get install chromium, or RESNET_SERVE_CHROMIUM)")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium)
        for name, width in (("screenshot.png", 1280), ("screenshot-narrow.png", 390)):
            page, errors = open_page(browser, f"{args.url}/", width)
            stage_the_page(page)
            page.screenshot(path=args.out / name, full_page=True)
            if errors:
                raise SystemExit(f"script errors on the page: {errors}")
            page.context.close()
        browser.close()


if __name__ == "__main__":
    main()
