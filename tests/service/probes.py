"""What the reliability, security and shutdown tests use to look at a real server:
its metrics, raw HTTP exchanges that show exactly what came back, test images."""

from __future__ import annotations

import io
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families


def metric(url: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 if none)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def png(color: tuple[int, int, int], size: tuple[int, int] = (32, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def raw_request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
                ) -> bytes:
    """An HTTP/1.1 request with `Connection: close`, as bytes for a socket."""
    lines = [f"{method} {path} HTTP/1.1", "Host: test", "Connection: close",
             f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class Exchange:
    """What one raw request got back.

    `outcome` is `refused` (no connection, or closed before a single byte of
    answer), `complete` (status line, headers and the whole declared body), or
    `cut` (an answer that stopped part-way: the one thing a server must never send).
    """

    outcome: str
    status: int | None = None
    body: bytes = b""
    headers: dict[str, str] | None = None

    def json(self) -> object:
        return json.loads(self.body)


def parse_answer(data: bytes) -> Exchange:
    """Classify the bytes a `Connection: close` request got before EOF."""
    if not data:
        return Exchange("refused")
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        return Exchange("cut", body=data)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    status = int(status_line.split()[1])
    length = headers.get("content-length")
    if length is None or len(body) != int(length):
        return Exchange("cut", status, body, headers)
    return Exchange("complete", status, body, headers)


def exchange(port: int, request: bytes, timeout_s: float = 60.0) -> Exchange:
    """Send `request` on a fresh connection and read the answer until the server closes."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    except ConnectionRefusedError:
        return Exchange("refused")
    chunks = []
    with sock:
        try:
            sock.sendall(request)
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, BrokenPipeError):
            pass
    return parse_answer(b"".join(chunks))
