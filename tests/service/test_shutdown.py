"""SIGTERM under load: readiness off at once, 503 while draining, nothing cut off, exit 0.

Every request goes over its own raw connection, so that the test sees exactly
what came back: a complete answer, a refused connection, or (never) an answer
cut off part-way. The queue waits seconds before running a batch, so that the
burst is still queued when the signal arrives and still running when the
listener closes.
"""

from __future__ import annotations

import io
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
from PIL import Image

from tests.helpers import CIFAR_SAMPLES, ServerProcess
from tests.service.probes import Exchange, exchange, metric, raw_request, wait_for

MODEL = "resnet20-cifar10"
BURST = 12
IMAGE = CIFAR_SAMPLES[3].read_bytes()
CLASSIFY = raw_request("POST", f"/v1/models/{MODEL}/classify", IMAGE,
                       {"Content-Type": "image/png"})


def _start(repository: Path, queue_delay_s: float, drain_delay_s: float, grace_s: float,
           ) -> ServerProcess:
    server = ServerProcess(
        repository, models=MODEL, max_batch_size=256, max_queue_delay_ms=queue_delay_s * 1000,
        drain_delay_s=drain_delay_s, shutdown_grace_s=grace_s,
    )
    server.wait_ready()
    return server


class _Prober(threading.Thread):
    """New requests every 50 ms until the server exits, each with its send time."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.results: list[tuple[float, Exchange]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            sent = time.monotonic()
            self.results.append((sent, exchange(self.port, CLASSIFY, timeout_s=30)))
            time.sleep(0.05)


def _timed_exchange(port: int) -> tuple[Exchange, float]:
    """The answer and when it was complete."""
    answer = exchange(port, CLASSIFY)
    return answer, time.monotonic()


def _burst(server: ServerProcess, pool: ThreadPoolExecutor) -> list[Future[tuple[Exchange, float]]]:
    futures = [pool.submit(_timed_exchange, server.port) for _ in range(BURST)]
    wait_for(lambda: metric(server.url, "resnet_serve_queue_depth", model=MODEL) == BURST,
             15, "the whole burst to be queued")
    return futures


def _assert_nothing_cut(exchanges: list[Exchange]) -> None:
    cut = [item for item in exchanges if item.outcome == "cut"]
    assert not cut, f"{len(cut)} answers cut off: {cut[:2]}"


def test_sigterm_drains_queue_and_exits_zero(repository: Path) -> None:
    drain_delay_s, queue_delay_s, grace_s = 0.8, 2.5, 15.0
    server = _start(repository, queue_delay_s, drain_delay_s, grace_s)
    with ThreadPoolExecutor(BURST) as pool:
        burst = _burst(server, pool)

        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        ready = httpx.get(f"{server.url}/health/ready", timeout=5)
        ready_after_s = time.monotonic() - signalled
        prober = _Prober(server.port)
        prober.start()

        code = server.process.wait(drain_delay_s + grace_s + 5)
        exited_after_s = time.monotonic() - signalled
        prober.stop.set()
        prober.join(30)
        answers = [future.result()[0] for future in burst]
        answered_at = min(future.result()[1] for future in burst)
    server.stop()

    assert ready.status_code == 503 and ready_after_s < drain_delay_s
    assert code == 0, server.log()[-3000:]
    assert exited_after_s < drain_delay_s + grace_s

    # The burst, accepted before the signal: every request fully answered.
    _assert_nothing_cut(answers)
    assert [item.status for item in answers] == [200] * BURST
    assert all(len(item.json()["predictions"]) == 1 for item in answers)  # type: ignore[index]

    # Newcomers: 503 while draining, then refused once the listener closed.
    probes = [item for _, item in prober.results]
    _assert_nothing_cut(probes)
    statuses = {item.status for item in probes if item.outcome == "complete"}
    assert statuses == {503}, statuses
    assert all("shutting down" in item.json()["error"]  # type: ignore[index]
               for item in probes if item.status == 503)
    first_refused = next(sent for sent, item in prober.results if item.outcome == "refused")
    assert first_refused - signalled >= drain_delay_s - 0.1
    # The burst's batch ran after the listener had closed: accepted work went on.
    assert answered_at > first_refused


def test_grace_period_bounds_shutdown_and_refuses_what_is_left(repository: Path) -> None:
    drain_delay_s, queue_delay_s, grace_s = 0.2, 10.0, 1.5
    server = _start(repository, queue_delay_s, drain_delay_s, grace_s)
    with ThreadPoolExecutor(BURST) as pool:
        burst = _burst(server, pool)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(drain_delay_s + grace_s + 10)
        exited_after_s = time.monotonic() - signalled
        answers = [future.result()[0] for future in burst]
    server.stop()

    assert code == 0, server.log()[-3000:]
    # The queue would have held them 10 s: the grace period cut that short.
    assert exited_after_s < drain_delay_s + grace_s + 2.0
    _assert_nothing_cut(answers)
    assert [item.status for item in answers] == [503] * BURST
    assert all(item.headers and "retry-after" in item.headers for item in answers)


def test_request_still_running_when_the_grace_period_ends_gets_a_json_503(
    repository: Path,
) -> None:
    # Decoding 24 photos of 36 megapixels takes seconds on two cores: the
    # request is still being preprocessed, not queued, when the grace ends.
    huge = _solid_png((6000, 6000))
    files = b"".join(
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + huge + b"\r\n" for _ in range(24)
    ) + b"--b--\r\n"
    request = raw_request("POST", f"/v1/models/{MODEL}/classify", files,
                          {"Content-Type": "multipart/form-data; boundary=b"})
    drain_delay_s, grace_s = 0.1, 1.0
    server = _start(repository, queue_delay_s=0.0, drain_delay_s=drain_delay_s, grace_s=grace_s)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(exchange, server.port, request)
        time.sleep(0.5)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(15)
        exited_after_s = time.monotonic() - signalled
        answer = pending.result()
    server.stop()

    assert code == 0, server.log()[-3000:]
    # The abandoned request's decoding stopped too: it does not hold up the exit.
    assert exited_after_s < drain_delay_s + grace_s + 1.5
    assert answer.outcome == "complete" and answer.status == 503, answer
    assert "shut down before this request finished" in answer.json()["error"]  # type: ignore[index]
    assert "Traceback" not in server.log()


def _solid_png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 140, 200)).save(buffer, format="PNG")
    return buffer.getvalue()
