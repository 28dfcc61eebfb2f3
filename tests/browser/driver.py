"""Finding the system's Chromium and opening the page in it (tests and screenshots)."""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page

CHROMIUM_COMMANDS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
VIEWPORT = {"width": 1280, "height": 900}


def find_chromium() -> str | None:
    """RESNET_SERVE_CHROMIUM, else the first Chromium on PATH."""
    explicit = os.environ.get("RESNET_SERVE_CHROMIUM")
    if explicit:
        return explicit
    for command in CHROMIUM_COMMANDS:
        path = shutil.which(command)
        if path:
            return path
    return None


def open_page(browser: Browser, url: str, width: int = VIEWPORT["width"]) -> tuple[Page, list[str]]:
    """A fresh tab on `url`, and the list its script and CSP errors will be appended to."""
    context = browser.new_context(viewport={"width": width, "height": VIEWPORT["height"]})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    def record_csp_violation(message: ConsoleMessage) -> None:
        # A load the policy blocks is only a console message; the page must need none.
        if "Content Security Policy" in message.text:
            errors.append(message.text)

    page.on("console", record_csp_violation)
    page.goto(url)
    return page, errors
