"""Overload, deadlines and disconnects, against a real server whose queues are slow on purpose.

resnet20's queue holds 4 images and waits 1.5 s before running a batch, so that
requests sit in it long enough to be seen, refused, expired or abandoned.
resnet56 runs at once, in batches of up to 256 images: long enough for a
deadline to pass while its batch runs.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.helpers import CIFAR_SAMPLES, ServerProcess, running_server
from tests.service.probes import metric, raw_request, wait_for

SLOW = "resnet20-cifar10"
BIG = "resnet56-cifar10"
QUEUE_SIZE = 4
QUEUE_DELAY_S = 1.5
IMAGE = CIFAR_SAMPLES[0].read_bytes()


@pytest.fixture(scope="module")
def slow_server(
    repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    config = tmp_path_factory.mktemp("reliability") / "models.json"
    config.write_text(json.dumps({
        SLOW: {"max_batch_size": 64, "max_queue_delay_ms": QUEUE_DELAY_S * 1000,
               "max_queue_size": QUEUE_SIZE},
        BIG: {"max_batch_size": 256, "max_queue_delay_ms": 0, "max_queue_size": 512},
    }))
    with running_server(repository, models=f"{SLOW},{BIG}", model_config=config,
                        max_images_per_request=256) as process:
        yield process


def _classify(url: str, model: str, images: list[bytes], timeout_s: float | None = None,
              ) -> httpx.Response:
    headers = {"X-Request-Timeout": str(timeout_s)} if timeout_s else {}
    files = [("file", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
    return httpx.post(f"{url}/v1/models/{model}/classify", files=files, headers=headers,
                      timeout=60)


def _depth(url: str, model: str) -> float:
    return metric(url, "resnet_serve_queue_depth", model=model)


def _batches(url: str, model: str) -> float:
    return metric(url, "resnet_serve_batch_size_count", model=model)


def test_full_queue_answers_503_at_once_and_accepted_requests_complete(
    slow_server: ServerProcess,
) -> None:
    url = slow_server.url
    overloads = metric(url, "resnet_serve_dropped_requests_total", model=SLOW, reason="overload")
    with ThreadPoolExecutor(QUEUE_SIZE) as pool:
        accepted = [pool.submit(_classify, url, SLOW, [IMAGE]) for _ in range(QUEUE_SIZE)]
        wait_for(lambda: _depth(url, SLOW) == QUEUE_SIZE, 10, "a full queue")

        started = time.monotonic()
        refused = _classify(url, SLOW, [IMAGE])
        refused_after_s = time.monotonic() - started

        answers = [future.result() for future in accepted]

    assert refused.status_code == 503, refused.text
    assert "overloaded" in refused.json()["error"]
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused_after_s < QUEUE_DELAY_S / 2, "refused only after waiting"
    assert [answer.status_code for answer in answers] == [200] * QUEUE_SIZE
    assert all(len(answer.json()["predictions"]) == 1 for answer in answers)
    assert metric(url, "resnet_serve_dropped_requests_total", model=SLOW,
                  reason="overload") == overloads + 1
    assert _depth(url, SLOW) == 0


def test_request_expiring_in_queue_gets_504_and_never_runs(slow_server: ServerProcess) -> None:
    url = slow_server.url
    batches = _batches(url, SLOW)
    expired = metric(url, "resnet_serve_dropped_requests_total", model=SLOW, reason="deadline")

    started = time.monotonic()
    response = _classify(url, SLOW, [IMAGE], timeout_s=0.3)
    elapsed_s = time.monotonic() - started

    assert response.status_code == 504, response.text
    assert "deadline" in response.json()["error"]
    # Answered at its deadline, not when its batch would have run.
    assert 0.3 <= elapsed_s < QUEUE_DELAY_S
    assert _depth(url, SLOW) == 0
    time.sleep(QUEUE_DELAY_S + 0.3)
    assert _batches(url, SLOW) == batches, "the expired request ran anyway"
    assert metric(url, "resnet_serve_dropped_requests_total", model=SLOW,
                  reason="deadline") == expired + 1


def test_request_running_past_its_deadline_still_completes(slow_server: ServerProcess) -> None:
    url = slow_server.url
    images = [path.read_bytes() for path in CIFAR_SAMPLES] * 12  # 240 images, one batch

    # How long this request takes here, and how much of it is its batch: the
    # deadline is then set to pass half-way through the batch, whatever the
    # speed of the machine.
    running_s = _inference_s(url, BIG)
    started = time.monotonic()
    assert _classify(url, BIG, images).status_code == 200
    total_s = time.monotonic() - started
    batch_s = _inference_s(url, BIG) - running_s
    timeout_s = total_s - batch_s / 2

    started = time.monotonic()
    response = _classify(url, BIG, images, timeout_s=timeout_s)
    elapsed_s = time.monotonic() - started

    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == len(images)
    assert elapsed_s > timeout_s, f"answered in {elapsed_s:.2f} s, before its deadline"


def _inference_s(url: str, model: str) -> float:
    return metric(url, "resnet_serve_inference_duration_seconds_sum", model=model)


def _send_and_hold(port: int, images: int) -> socket.socket:
    files = b"".join(
        b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n"
        b"Content-Type: image/png\r\n\r\n" + IMAGE + b"\r\n" for _ in range(images)
    ) + b"--b--\r\n"
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(raw_request("POST", f"/v1/models/{SLOW}/classify", files,
                             {"Content-Type": "multipart/form-data; boundary=b"}))
    return sock


def test_client_disconnecting_while_queued_is_dropped(slow_server: ServerProcess) -> None:
    url = slow_server.url
    batches = _batches(url, SLOW)
    images = metric(url, "resnet_serve_images_total", model=SLOW)
    gone = metric(url, "resnet_serve_dropped_requests_total", model=SLOW, reason="disconnect")
    closed = metric(url, "resnet_serve_requests_total", model=SLOW, code="499")

    sockets = [_send_and_hold(slow_server.port, images) for images in (1, 3)]
    wait_for(lambda: _depth(url, SLOW) == 4, 10, "both requests queued")
    for sock in sockets:
        sock.close()

    # Out of the queue at once, long before their batch was due.
    wait_for(lambda: _depth(url, SLOW) == 0, QUEUE_DELAY_S / 2, "the queue to empty")
    wait_for(lambda: metric(url, "resnet_serve_requests_total", model=SLOW, code="499")
             == closed + 2, 5, "two requests recorded as 499")
    assert metric(url, "resnet_serve_dropped_requests_total", model=SLOW,
                  reason="disconnect") == gone + 2
    time.sleep(QUEUE_DELAY_S + 0.3)
    assert _batches(url, SLOW) == batches, "a batch ran for clients that had left"
    assert metric(url, "resnet_serve_images_total", model=SLOW) == images

    # The queue is whole again: it takes a full load and answers it.
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda n: _classify(url, SLOW, [IMAGE] * n), (1, 3)))
    assert [answer.status_code for answer in answers] == [200, 200]
