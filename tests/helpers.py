"""Shared test plumbing: where the shared data lives, and a real server process."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SAMPLES = SHARED / "data" / "samples"
CIFAR_SAMPLES = sorted((SAMPLES / "cifar10").glob("*.png"))
CIFAR_TEST_JPEG = SHARED / "data" / "cifar10-test-jpeg"


def weights_mirror() -> Path:
    return Path(os.environ.get("RESNET_SERVE_WEIGHTS_MIRROR") or SHARED / "weights")


def cuda_unavailable_reason() -> str | None:
    """Why ONNX Runtime cannot run on an NVIDIA GPU here; None when it can."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "this onnxruntime build has no CUDAExecutionProvider (install onnxruntime-gpu)"
    if shutil.which("nvidia-smi") is None:
        return "no nvidia-smi on PATH: no NVIDIA driver"
    listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30,
                             check=False)
    if listing.returncode != 0 or "GPU" not in listing.stdout:
        return f"nvidia-smi -L lists no GPU: {(listing.stderr or listing.stdout).strip()}"
    return None


def sample_label(path: Path) -> int:
    """`cifar10_07_4.png` -> 4."""
    return int(path.stem.rsplit("_", 1)[1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """`resnet-serve serve` in a child process on a loopback port."""

    def __init__(self, repository: Path, **settings: object) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {key: value for key, value in os.environ.items()
               if not key.startswith("RESNET_SERVE_")}
        env.update({
            "RESNET_SERVE_HOST": "127.0.0.1",
            "RESNET_SERVE_PORT": str(self.port),
            "RESNET_SERVE_MODEL_REPOSITORY": str(repository),
            "RESNET_SERVE_PROVIDERS": "CPUExecutionProvider",
        })
        for key, value in settings.items():
            env[f"RESNET_SERVE_{key.upper()}"] = str(value)
        self.log_path = repository.parent / f"server-{self.port}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--no-prepare"],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server not ready after {timeout_s} s:\n{self.log()}")

    def log(self) -> str:
        # Still readable after `stop`, which closes our handle on the file.
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
        finally:
            self._log.close()


@contextmanager
def running_server(repository: Path, **settings: object) -> Iterator[ServerProcess]:
    """A `ServerProcess` that is ready inside the block and stopped after it."""
    process = ServerProcess(repository, **settings)
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()
