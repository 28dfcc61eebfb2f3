"""A loopback HTTP server that hands local build inputs to a container build.

A build container sees neither the host's weights mirror nor the wheels that
pip on the host finds through its `find-links` folders. The build runs with
host networking, so this server, bound to 127.0.0.1 for the length of one
build, makes both reachable:

- `/weights/<dataset>/<file>`: the mirror folder (`RESNET_SERVE_WEIGHTS_MIRROR`);
- `/wheels/`: an index page of every wheel in the find-links folders, which
  `pip install --find-links` reads like a folder listing.

Standard library only: it runs before any virtual environment exists.
"""

from __future__ import annotations

import html
import os
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

WHEEL_SUFFIXES = (".whl", ".tar.gz", ".zip")
# The addresses become build arguments, which are part of the layer cache key:
# the same port on every build keeps the cached layers valid.
PREFERRED_PORT = int(os.environ.get("CONTAINER_INPUTS_PORT", "47613"))


def pip_find_links_dirs() -> list[Path]:
    """Local folders that pip on this machine searches: PIP_FIND_LINKS and pip config."""
    values = shlex.split(os.environ.get("PIP_FIND_LINKS", ""))
    try:
        listing = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        listing = ""
    for line in listing.splitlines():
        key, _, value = line.partition("=")
        if key.endswith(".find-links"):
            values += shlex.split(value.strip().strip("'\""))

    folders: list[Path] = []
    for value in values:
        path = Path(value.removeprefix("file://"))
        if "://" not in value.removeprefix("file://") and path.is_dir() and path not in folders:
            folders.append(path)
    return folders


class _InputsHandler(BaseHTTPRequestHandler):
    """GET only; every path resolves inside one of the served folders."""

    weights_dir: Path | None = None
    wheel_dirs: tuple[Path, ...] = ()

    def do_GET(self) -> None:  # noqa: N802 (the name http.server dispatches on)
        path = unquote(self.path.split("?", 1)[0])
        if path == "/wheels/":
            self._send_index()
        elif path.startswith("/wheels/"):
            self._send_file(self._find_wheel(path.removeprefix("/wheels/")))
        elif path.startswith("/weights/") and self.weights_dir is not None:
            self._send_file(_inside(self.weights_dir, path.removeprefix("/weights/")))
        else:
            self.send_error(404)

    def log_message(self, format: str, *args: object) -> None:
        # The build's own output already names every download; keep it readable.
        return

    def _find_wheel(self, name: str) -> Path | None:
        for folder in self.wheel_dirs:
            found = _inside(folder, name)
            if found is not None:
                return found
        return None

    def _send_index(self) -> None:
        links = "".join(
            f'<a href="{html.escape(path.name)}">{html.escape(path.name)}</a><br>\n'
            for path in wheels_in(self.wheel_dirs)
        )
        body = f"<!DOCTYPE html><html><body>\n{links}</body></html>\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_file(self, path: Path | None) -> None:
        if path is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(path.stat().st_size))
        self.end_headers()
        with path.open("rb") as handle:
            shutil.copyfileobj(handle, self.wfile)


def _inside(folder: Path, relative: str) -> Path | None:
    """`folder/relative` if it is a file that does not escape `folder`."""
    root = folder.resolve()
    candidate = (root / relative).resolve()
    if candidate.is_file() and candidate.is_relative_to(root):
        return candidate
    return None


def wheels_in(folders: tuple[Path, ...] | list[Path]) -> list[Path]:
    return sorted(
        (
            path
            for folder in folders
            for path in folder.iterdir()
            if path.is_file() and path.name.endswith(WHEEL_SUFFIXES)
        ),
        key=lambda path: path.name,
    )


@contextmanager
def serve_inputs(weights_dir: Path | None, wheel_dirs: list[Path]) -> Iterator[str]:
    """Serve the folders on a free loopback port; yields the base address."""
    handler = type(
        "InputsHandler",
        (_InputsHandler,),
        {"weights_dir": weights_dir, "wheel_dirs": tuple(wheel_dirs)},
    )
    try:
        server = ThreadingHTTPServer(("127.0.0.1", PREFERRED_PORT), handler)
    except OSError:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
