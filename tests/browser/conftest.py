"""Headless Chromium for the page tests: the system's own browser, driven by Playwright.

Playwright's browser download cannot run on our machines, so the tests launch
Debian's `chromium` package (or RESNET_SERVE_CHROMIUM) and skip without one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.browser.driver import find_chromium, open_page
from tests.helpers import ServerProcess

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page


# Module scope, not session: Playwright's sync API runs its own event loop,
# which must be gone before the asyncio tests of other modules start theirs.
@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')"
    )
    path = find_chromium()
    if path is None:
        pytest.skip(
            "no Chromium found: install Debian's package (apt-get install chromium) "
            "or set RESNET_SERVE_CHROMIUM to a Chromium executable"
        )
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium: Browser, server: ServerProcess) -> Iterator[Page]:
    """The page on the shared server, once its models are listed; no script errors."""
    tab, errors = open_page(chromium, f"{server.url}/")
    tab.wait_for_selector("#architecture .block")
    yield tab
    tab.context.close()
    assert errors == [], f"script errors on the page: {errors}"
