"""Triton's perf_analyzer drives the real server with its own random data."""

from __future__ import annotations

import re
import subprocess

import httpx
import pytest

from tests.helpers import SHARED, ServerProcess

PERF_ANALYZER = SHARED / "tools" / "perf_analyzer"
MODEL = "resnet56-cifar10"


@pytest.fixture(scope="module")
def perf_analyzer() -> str:
    """The wrapper, once it has set itself up (first use downloads the binary)."""
    if not PERF_ANALYZER.is_file():
        pytest.skip(f"no perf_analyzer at {PERF_ANALYZER}")
    try:
        setup = subprocess.run([str(PERF_ANALYZER), "--version"], capture_output=True,
                               text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.skip("perf_analyzer could not be set up within 5 minutes")
    if setup.returncode != 0 or "perf analyzer" not in (setup.stdout + setup.stderr).lower():
        pytest.skip(f"perf_analyzer could not be set up: {setup.stderr.strip()[-300:]}")
    return str(PERF_ANALYZER)


def _successes(server: ServerProcess) -> int:
    stats = httpx.get(f"{server.url}/v2/models/{MODEL}/stats", timeout=10).json()
    return int(stats["model_stats"][0]["inference_stats"]["success"]["count"])


def test_perf_analyzer_runs_with_random_data(server: ServerProcess, perf_analyzer: str) -> None:
    before = _successes(server)
    # No data or shape flags: perf_analyzer reads the model's metadata and
    # configuration and makes up random inputs. The measurement flags only
    # keep the run short and stable on a shared two-core machine.
    command = [perf_analyzer, "-m", MODEL, "-u", server.url.removeprefix("http://"),
               "--measurement-interval", "1000", "--stability-percentage", "100"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output

    served = re.search(r"Successful request count: (\d+)", output)
    throughput = re.search(r"Throughput: ([\d.]+) infer/sec", output)
    assert served and throughput, output
    assert int(served.group(1)) > 0 and float(throughput.group(1)) > 0
    assert _successes(server) - before >= int(served.group(1))
    assert "error" not in output.lower()
