"""Clients that hang up, trickle, flood a form or outgrow the queue, over real HTTP.

One server with a short request deadline, a small queue, an API key and CORS
for one origin, so that each of these meets its limit quickly.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import CIFAR_SAMPLES, ServerProcess, running_server
from tests.service.probes import exchange, metric, raw_request

MODEL = "resnet20-cifar10"
CLASSIFY = f"/v1/models/{MODEL}/classify"
KEY = "hostile-clients-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
ORIGIN = "http://page.example"
QUEUE_SIZE = 8
TIMEOUT_S = 1.5
IMAGE = CIFAR_SAMPLES[0].read_bytes()


@pytest.fixture(scope="module")
def hostile(repository: Path) -> Iterator[ServerProcess]:
    with running_server(
        repository, models=MODEL, max_queue_size=QUEUE_SIZE, request_timeout_s=TIMEOUT_S,
        api_key=KEY, cors_origins=ORIGIN,
    ) as process:
        yield process


def _classify(server: ServerProcess, count: int) -> httpx.Response:
    files = [("file", (f"{i}.png", IMAGE, "image/png")) for i in range(count)]
    return httpx.post(server.url + CLASSIFY, files=files, headers=AUTH, timeout=30)


def _upload_head(content_length: int) -> bytes:
    """The head of a raw PNG upload whose body the test then sends, or not."""
    return (
        f"POST {CLASSIFY} HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
        f"Content-Length: {content_length}\r\nAuthorization: Bearer {KEY}\r\n\r\n"
    ).encode()


def _assert_serving(server: ServerProcess) -> None:
    answer = _classify(server, 1)
    assert answer.status_code == 200, answer.text
    assert metric(server.url, "resnet_serve_queue_depth", model=MODEL) == 0


def test_client_leaving_mid_upload_is_no_error_of_ours(hostile: ServerProcess) -> None:
    errors = metric(hostile.url, "resnet_serve_requests_total", code="500")
    head = _upload_head(len(IMAGE))
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", hostile.port)) as sock:
            sock.sendall(head + IMAGE[: len(IMAGE) // 3])
        time.sleep(0.2)

    _assert_serving(hostile)
    assert metric(hostile.url, "resnet_serve_requests_total", code="500") == errors
    assert metric(hostile.url, "resnet_serve_requests_total", code="499") >= 3
    assert "Traceback" not in hostile.log()


def test_body_trickling_past_the_deadline_is_408(hostile: ServerProcess) -> None:
    head = _upload_head(len(IMAGE))
    with socket.create_connection(("127.0.0.1", hostile.port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(head + IMAGE[:100])
        answer = sock.recv(65536)
        waited_s = time.monotonic() - started

    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"deadline" in answer
    assert TIMEOUT_S <= waited_s < TIMEOUT_S + 2
    _assert_serving(hostile)


def test_head_trickling_past_the_deadline_is_408(hostile: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", hostile.port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"POST " + CLASSIFY.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-")
        answer = sock.recv(65536)
        waited_s = time.monotonic() - started

    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"did not arrive" in answer
    # The deadline counts from the connection, a moment before `started`.
    assert TIMEOUT_S - 0.1 <= waited_s < TIMEOUT_S + 2


def test_connection_that_sends_nothing_is_closed_with_408(hostile: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", hostile.port), timeout=10) as sock:
        started = time.monotonic()
        answer = sock.recv(65536)
        waited_s = time.monotonic() - started
        closed = sock.recv(65536) == b""

    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert closed
    assert TIMEOUT_S - 0.1 <= waited_s < TIMEOUT_S + 2


def test_idle_keep_alive_connection_is_not_answered_408(hostile: ServerProcess) -> None:
    # Between requests uvicorn's keep-alive timer rules, not the head deadline.
    with httpx.Client(base_url=hostile.url, timeout=10) as client:
        assert client.get("/health/live").status_code == 200
        time.sleep(TIMEOUT_S / 2)
        assert client.get("/health/live").status_code == 200


@pytest.mark.parametrize("count", [65, 66, 200])
def test_too_many_files_is_413_naming_the_limit(hostile: ServerProcess, count: int) -> None:
    answer = _classify(hostile, count)
    assert answer.status_code == 413, answer.text
    assert "the limit is 64" in answer.json()["error"]


def test_more_images_than_the_queue_holds_is_413_not_a_retry(hostile: ServerProcess) -> None:
    answer = _classify(hostile, QUEUE_SIZE + 1)
    assert answer.status_code == 413, answer.text
    assert "Retry-After" not in answer.headers
    assert f"holds at most {QUEUE_SIZE}" in answer.json()["error"]
    assert _classify(hostile, QUEUE_SIZE).status_code == 200


def test_cors_preflight_needs_no_key_and_refusals_are_readable(hostile: ServerProcess) -> None:
    preflight = httpx.options(hostile.url + CLASSIFY, headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    })
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == ORIGIN

    refused = httpx.post(hostile.url + CLASSIFY, content=IMAGE,
                         headers={"Origin": ORIGIN, "Content-Type": "image/png"})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in refused.headers["access-control-expose-headers"].lower()


def test_slow_client_does_not_hold_up_others(hostile: ServerProcess) -> None:
    # A trickling client waits on its own deadline; meanwhile others are served.
    with socket.create_connection(("127.0.0.1", hostile.port), timeout=10) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost:")
        started = time.monotonic()
        assert httpx.get(hostile.url + "/health/live").status_code == 200
        assert time.monotonic() - started < 1.0
    assert exchange(hostile.port, raw_request("GET", "/health/live", b"", {})).status == 200
