"""Throughput and latency of the service against raw ONNX Runtime, measured back to back.

For each model: raw ONNX Runtime in this process (same graph, same thread
count as the service, batch sizes 1 to 64), then the running service through
/v2 with binary tensors (Triton's perf_analyzer) and through /v1 with JPEG
uploads (wrk), at concurrency 1, 8 and 32. /v1 is compared with raw ONNX
Runtime plus the service's own decode and preprocessing, run in-process.

Run from the repository root: `python -m scripts.bench_protocols` (or `make bench`).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.manifest import Preprocessing
from models.prepare import ensure_models
from models.preprocessing import decode_and_preprocess
from service.runtime.session import create_session
from service.settings import available_cpus
from tests.helpers import SAMPLES, SHARED, ServerProcess, weights_mirror

PERF_ANALYZER = SHARED / "tools" / "perf_analyzer"
MODELS = ("resnet20-cifar10", "resnet56-cifar10", "resnet50-imagenet")
IMAGES = {
    "cifar10": SHARED / "data" / "cifar10-test-jpeg" / "cat" / "0000.jpg",
    "imagenet": SAMPLES / "imagenet" / "imagenet_00_243.jpg",
}
WRK_SCRIPT = """wrk.method = "POST"
wrk.headers["Content-Type"] = "image/jpeg"
local file = io.open(os.getenv("BENCH_IMAGE"), "rb")
wrk.body = file:read("*a")
file:close()
"""


@dataclass
class Raw:
    """In-process ONNX Runtime figures of one model."""

    images_per_s: dict[int, float]
    batch1_latency_ms: float
    decode_ms: float

    @property
    def best(self) -> tuple[int, float]:
        return max(self.images_per_s.items(), key=lambda item: item[1])

    @property
    def with_decode_per_s(self) -> float:
        """Decode + preprocess each image, then run them at the best batch size."""
        return 1.0 / (self.decode_ms / 1000 + 1.0 / self.best[1])


@dataclass
class Served:
    protocol: str
    concurrency: int
    images_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    generator_cpu: float  # cores the load generator kept busy


def _model_files(repository: Path, name: str) -> tuple[bytes, dict[str, object]]:
    folder = repository / name / "1"
    metadata = json.loads((folder / "metadata.json").read_text())
    return (folder / "model.onnx").read_bytes(), metadata


def _preprocessing(metadata: dict[str, object]) -> Preprocessing:
    values = metadata["preprocessing"]
    assert isinstance(values, dict)
    return Preprocessing(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def measure_raw(repository: Path, name: str, image: Path, seconds: float) -> Raw:
    """Images/s per batch size with the service's own session options."""
    graph, metadata = _model_files(repository, name)
    session = create_session(graph, ["CPUExecutionProvider"], available_cpus(), name)
    spec = _preprocessing(metadata)
    tensor = decode_and_preprocess(image.read_bytes(), spec)
    blocks = len(metadata["blocks"])  # type: ignore[arg-type]
    sizes = (1, 8, 32) if "imagenet" in name else (1, 8, 32, 64)

    rates = {}
    latency_ms = 0.0
    for batch in sizes:
        feeds = {"input": np.repeat(tensor[None], batch, axis=0),
                 "block_mask": np.ones((batch, blocks), dtype=np.float32)}
        session.run(None, feeds)
        times = []
        started = time.perf_counter()
        while time.perf_counter() - started < seconds or len(times) < 3:
            tick = time.perf_counter()
            session.run(None, feeds)
            times.append(time.perf_counter() - tick)
        rates[batch] = batch * len(times) / sum(times)
        if batch == 1:
            latency_ms = float(np.median(times)) * 1000

    data = image.read_bytes()
    decode = []
    for _ in range(200):
        tick = time.perf_counter()
        decode_and_preprocess(data, spec)
        decode.append(time.perf_counter() - tick)
    return Raw(rates, latency_ms, float(np.median(decode)) * 1000)


def _child_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_perf_analyzer(url: str, name: str, data_file: Path, concurrency: int,
                      window_ms: int) -> Served:
    """/v2 binary tensors at one concurrency; perf_analyzer's own CSV gives the figures."""
    with tempfile.NamedTemporaryFile(suffix=".csv") as report:
        command = [
            str(PERF_ANALYZER), "-m", name, "-u", url, "-i", "http",
            "--concurrency-range", f"{concurrency}:{concurrency}",
            "--input-data", str(data_file), "-p", str(window_ms),
            "--stability-percentage", "50", "--max-trials", "6", "-f", report.name,
        ]
        cpu, started = _child_cpu_s(), time.perf_counter()
        run = subprocess.run(command, capture_output=True, text=True, timeout=600)
        cpu_share = (_child_cpu_s() - cpu) / (time.perf_counter() - started)
        if run.returncode != 0:
            raise RuntimeError(f"perf_analyzer failed:\n{run.stdout}\n{run.stderr}")
        header, row = Path(report.name).read_text().splitlines()[:2]
    values = dict(zip(header.split(","), row.split(","), strict=False))
    return Served(
        "/v2", concurrency, float(values["Inferences/Second"]),
        float(values["p50 latency"]) / 1000, float(values["p90 latency"]) / 1000,
        float(values["p99 latency"]) / 1000, cpu_share,
    )


def _wrk_ms(text: str, percentile: str) -> float:
    match = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    assert match, text
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]
    return float(match.group(1)) * scale


def run_wrk(url: str, name: str, image: Path, concurrency: int, seconds: int) -> Served:
    """/v1 JPEG uploads at one concurrency (one connection per outstanding request)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(WRK_SCRIPT)
        script.flush()
        command = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--latency",
                   "-s", script.name, f"{url}/v1/models/{name}/classify?top_k=1"]
        cpu, started = _child_cpu_s(), time.perf_counter()
        run = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60,
                             env={**os.environ, "BENCH_IMAGE": str(image)})
        cpu_share = (_child_cpu_s() - cpu) / (time.perf_counter() - started)
    text = run.stdout
    if run.returncode != 0 or "Non-2xx" in text:
        raise RuntimeError(f"wrk failed or got errors:\n{text}\n{run.stderr}")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    return Served("/v1", concurrency, rate, _wrk_ms(text, "50"), _wrk_ms(text, "90"),
                  _wrk_ms(text, "99"), cpu_share)


def _perf_input_file(repository: Path, name: str, image: Path, folder: Path) -> Path:
    """perf_analyzer's --input-data: one real preprocessed image, the same as raw's."""
    _, metadata = _model_files(repository, name)
    tensor = decode_and_preprocess(image.read_bytes(), _preprocessing(metadata))
    content = base64.b64encode(tensor.astype("<f4").tobytes()).decode()
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"data": [{"input": {"b64": content,
                                                     "shape": list(tensor.shape)}}]}))
    return path


def _rss_mib(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if ":" in line)
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--seconds", type=int, default=5, help="per /v1 run and raw batch size")
    parser.add_argument("--window-ms", type=int, default=3000, help="perf_analyzer window")
    parser.add_argument("--markdown", type=Path, help="also write the tables here")
    args = parser.parse_args()
    if not PERF_ANALYZER.is_file() or shutil.which("wrk") is None:
        parser.error(f"needs {PERF_ANALYZER} and wrk (Debian: apt-get install wrk)")

    work = Path(tempfile.mkdtemp(prefix="bench-"))
    repository = work / "repository"
    mirror = weights_mirror()
    for name in args.models:
        ensure_models([name], repository, random_init="imagenet" in name,
                      cache_dir=work / "cache", mirror=str(mirror))
    server = ServerProcess(repository, models=",".join(args.models), log_level="WARNING")
    lines = [f"CPUs available: {available_cpus()}; ONNX Runtime threads: {available_cpus()}"]
    try:
        server.wait_ready(timeout_s=300)
        rss_start = _rss_mib(server.process.pid)
        address = server.url.removeprefix("http://")
        for name in args.models:
            image = IMAGES["imagenet" if "imagenet" in name else "cifar10"]
            raw = measure_raw(repository, name, image, args.seconds / 2)
            data_file = _perf_input_file(repository, name, image, work)
            served = [_attempt(run_perf_analyzer, address, name, data_file, c, args.window_ms)
                      for c in args.concurrency]
            served += [_attempt(run_wrk, server.url, name, image, c, args.seconds)
                       for c in args.concurrency]
            report = _report(name, raw, [result for result in served if result is not None])
            print("\n".join(report), flush=True)
            lines += report
        rss_end = _rss_mib(server.process.pid)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    lines.append(f"\nService RSS with {', '.join(args.models)} loaded: {rss_start[0]:.0f} MiB; "
                 f"after the benchmark: {rss_end[0]:.0f} MiB (peak {rss_end[1]:.0f} MiB)")
    print(lines[-1])
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n")
    return 0


def _attempt(run: Callable[..., Served], *args: object) -> Served | None:
    """One load run; a failed one is reported and skipped, not fatal to the others."""
    try:
        return run(*args)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"{run.__name__}{args[1:]} failed: {str(exc)[-500:]}", flush=True)
        return None


def _report(name: str, raw: Raw, served: list[Served]) -> list[str]:
    best_batch, best_rate = raw.best
    rates = ", ".join(f"b{b} {r:,.0f}" for b, r in raw.images_per_s.items())
    lines = [
        f"\n### {name}\n",
        f"Raw ONNX Runtime, images/s: {rates}; batch 1 latency {raw.batch1_latency_ms:.2f} ms; "
        f"decode + preprocess {raw.decode_ms:.3f} ms/image; raw + decode at batch "
        f"{best_batch}: {raw.with_decode_per_s:,.0f} images/s\n",
        "| path | concurrency | images/s | p50 ms | p90 ms | p99 ms | baseline images/s "
        "| ratio | load generator CPU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in served:
        baseline = best_rate if result.protocol == "/v2" else raw.with_decode_per_s
        lines.append(
            f"| {result.protocol} | {result.concurrency} | {result.images_per_s:,.1f} "
            f"| {result.p50_ms:.2f} | {result.p90_ms:.2f} | {result.p99_ms:.2f} "
            f"| {baseline:,.0f} | {result.images_per_s / baseline:.2f} "
            f"| {result.generator_cpu:.2f} cores |"
        )
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
