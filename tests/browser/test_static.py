"""The page's files over real HTTP, without a browser: all served, all from this origin."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx

from tests.helpers import ServerProcess

# Static `import ... from "x"` and `import "x"` in the page's ES modules.
JS_IMPORT = re.compile(r"""^\s*import\s(?:[^"']*\sfrom\s)?["']([^"']+)["']""", re.MULTILINE)
CSS_URL = re.compile(r"""url\(\s*["']?([^"')]+)""")


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value and not value.startswith("#"):
                self.urls.append(value)


def _references(path: str, body: str) -> list[str]:
    if path.endswith(".js"):
        return JS_IMPORT.findall(body)
    if path.endswith(".css"):
        return CSS_URL.findall(body)
    parser = _References()
    parser.feed(body)
    return parser.urls


def test_page_and_everything_it_loads_come_from_the_service(server: ServerProcess) -> None:
    page = httpx.get(f"{server.url}/", timeout=30)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]

    # Walk the page, its stylesheets and its module graph; /docs is a link, not a load.
    seen: set[str] = set()
    pending = [("/", page.text)]
    while pending:
        path, body = pending.pop()
        for reference in _references(path, body):
            url = urlsplit(urljoin(f"{server.url}{path}", reference))
            assert f"{url.scheme}://{url.netloc}" == server.url, f"{path} loads {reference}"
            if url.path in seen or url.path == "/docs":
                continue
            seen.add(url.path)
            answer = httpx.get(f"{server.url}{url.path}", timeout=30)
            assert answer.status_code == 200, url.path
            pending.append((url.path, answer.text))

    assert {"/static/style.css", "/static/js/app.js", "/static/js/api.js"} <= seen
    scripts = [path for path in seen if path.endswith(".js")]
    for path in scripts:
        kind = httpx.get(f"{server.url}{path}", timeout=30).headers["content-type"]
        assert "javascript" in kind, (path, kind)


def test_static_files_stay_inside_their_folder(server: ServerProcess) -> None:
    for path in ("/static/../api/app.py", "/static/%2e%2e/api/app.py", "/static/nope.js"):
        response = httpx.get(f"{server.url}{path}", timeout=30)
        assert response.status_code == 404, path
