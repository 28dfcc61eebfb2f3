"""Latency and throughput of sub-networks (Veit et al. 2016) against the full network.

For each model (default resnet56-cifar10), in one run:

1. raw ONNX Runtime in this process, batch 1: the exported (masked) graph
   with every block kept, and the pruned graphs without 9 and 18
   non-downsampling blocks, with the service's own session options;
2. the service over /v2 with binary tensors (one real preprocessed CIFAR-10
   image per request, httpx, keep-alive), one request at a time: the full
   network, and sub-networks without 0, 9 and 18 of the same blocks, each
   first asked for until the service answers from its pruned graph;
3. 32 concurrent clients whose every request removes a fresh random set
   (sets never repeat, so the masked graph serves them all), against 32
   concurrent clients of the full network.

Phases 1 and 2 take turns call by call (full, 0, 9, 18, full, ...), phase 3
in alternating rounds, so that a shared machine's changing load falls on
every variant alike. The target for a sub-network is
`(1 - fraction of MACs removed) x full latency + 15 %` (p50); at concurrency
32 the sub-network throughput should be at least 0.8 of the full network's.

Run from the repository root: `python scripts/bench_subnetwork.py` (or `make bench`).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import onnxruntime as ort

# Run as a file, as `make bench` does, Python puts scripts/ on the path, not the
# repository root that `tests` and `scripts` are imported from.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.manifest import Preprocessing
from models.prepare import ensure_models
from models.preprocessing import decode_and_preprocess
from models.repository import ModelFiles, locate
from scripts.bench_protocols import IMAGES
from service.runtime.pruning import prune_graph
from service.runtime.session import create_session
from service.settings import available_cpus
from tests.helpers import ServerProcess, weights_mirror

MODELS = ("resnet56-cifar10",)
REMOVED_COUNTS = (0, 9, 18)
LATENCY_MARGIN = 0.15
THROUGHPUT_TARGET = 0.8
HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass(frozen=True)
class Variant:
    """The full network (`removed` None), or the network without `removed`."""

    label: str
    removed: tuple[int, ...] | None
    macs_removed: float  # fraction of the full network's MACs

    @property
    def remove(self) -> str | None:
        """The `remove` parameter: "" for a sub-network that removes nothing."""
        return None if self.removed is None else ",".join(map(str, self.removed))


@dataclass
class Timing:
    """Per-call latencies of one variant."""

    latencies_s: list[float]

    def ms(self, percentile: float) -> float:
        return float(np.percentile(self.latencies_s, percentile)) * 1000

    @property
    def per_s(self) -> float:
        return len(self.latencies_s) / sum(self.latencies_s)


@dataclass
class Load:
    """Requests answered by concurrent clients of one variant, over all rounds."""

    requests: int = 0
    pruned: int = 0
    wall_s: float = 0.0
    client_cpu_s: float = 0.0

    @property
    def per_s(self) -> float:
        return self.requests / self.wall_s


def progress(message: str) -> None:
    print(f"[bench_subnetwork] {message}", file=sys.stderr, flush=True)


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def image_tensor(files: ModelFiles) -> np.ndarray:
    """The benchmark's CIFAR-10 JPEG, preprocessed as the model's sidecar says: [1, 3, H, W]."""
    values: dict[str, Any] = {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in files.read_metadata()["preprocessing"].items()
    }
    return decode_and_preprocess(IMAGES["cifar10"].read_bytes(), Preprocessing(**values))[None]


def choose_variants(metadata: dict[str, Any], counts: list[int], seed: int) -> list[Variant]:
    """The full network, then one nested, seeded choice of non-downsampling blocks
    per count: the 9 removed are among the 18, so sets differ only in size."""
    blocks = metadata["blocks"]
    candidates = [block["index"] for block in blocks if not block["downsample"]]
    if max(counts) > len(candidates):
        raise SystemExit(f"{metadata['name']} has {len(candidates)} non-downsampling "
                         f"blocks; cannot remove {max(counts)}")
    order = np.random.default_rng(seed).permutation(candidates)

    variants = [Variant("full", None, 0.0)]
    for count in counts:
        removed = tuple(sorted(int(index) for index in order[:count]))
        saved = sum(blocks[index]["removable_macs"] for index in removed)
        variants.append(Variant(f"without {count}", removed, saved / metadata["total_macs"]))
    return variants


def time_interleaved(
    calls: dict[Variant, Callable[[], object]], seconds: float
) -> dict[Variant, Timing]:
    """One call of each variant in turn, over and over, for about `seconds` per variant.

    Call by call, so that load from other work on a shared machine falls on
    every variant alike; at least three calls each.
    """
    timings = {variant: Timing([]) for variant in calls}
    started = time.perf_counter()
    cycles = 0
    while time.perf_counter() - started < seconds * len(calls) or cycles < 3:
        for variant, call in calls.items():
            tick = time.perf_counter()
            call()
            timings[variant].latencies_s.append(time.perf_counter() - tick)
        cycles += 1
    return timings


def raw_sessions(
    files: ModelFiles, variants: list[Variant]
) -> dict[Variant, Callable[[np.ndarray], object]]:
    """In-process runners: the masked graph for the full network, else pruned graphs."""
    proto = onnx.load(str(files.onnx_path))
    gates = [block["onnx"] for block in files.read_metadata()["blocks"]]
    threads = available_cpus()
    mask = np.ones((1, len(gates)), dtype=np.float32)
    full = create_session(proto.SerializeToString(), ["CPUExecutionProvider"], threads,
                          files.name)

    runners: dict[Variant, Callable[[np.ndarray], object]] = {}
    for variant in variants:
        if variant.removed is None:
            runners[variant] = lambda x: full.run(None, {"input": x, "block_mask": mask})
        elif variant.removed:
            pruned = prune_graph(proto, gates, variant.removed).SerializeToString()
            session = create_session(pruned, ["CPUExecutionProvider"], threads, variant.label)
            runners[variant] = _pruned_runner(session)
    return runners


def _pruned_runner(session: ort.InferenceSession) -> Callable[[np.ndarray], object]:
    return lambda x: session.run(None, {"input": x})


def measure_raw(
    files: ModelFiles, variants: list[Variant], tensor: np.ndarray, seconds: float
) -> dict[Variant, Timing]:
    runners = raw_sessions(files, variants)
    for run in runners.values():
        run(tensor)
    return time_interleaved(
        {variant: functools.partial(run, tensor) for variant, run in runners.items()}, seconds
    )


def infer_body(tensor: np.ndarray, remove: str | None) -> tuple[bytes, dict[str, str]]:
    """A /v2 infer request with `tensor` as binary data, asking for binary logits."""
    data = tensor.astype("<f4").tobytes()
    header: dict[str, Any] = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": list(tensor.shape),
                    "parameters": {"binary_data_size": len(data)}}],
        "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
    }
    if remove is not None:
        header["parameters"] = {"remove": remove}
    text = json.dumps(header).encode()
    return text + data, {HEADER_LENGTH: str(len(text)),
                         "Content-Type": "application/octet-stream"}


def graph_of(response: httpx.Response) -> str:
    """The graph that answered: `pruned` or `masked` (the full network's is masked)."""
    if response.status_code != 200:
        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
    length = int(response.headers[HEADER_LENGTH])
    header = json.loads(response.content[:length])
    return str(header.get("parameters", {}).get("graph", "masked"))


def warm_until_pruned(client: httpx.Client, path: str, variant: Variant,
                      tensor: np.ndarray, timeout_s: float = 120.0) -> str:
    """Repeat the variant's set until the service answers from a pruned graph."""
    content, headers = infer_body(tensor, variant.remove)
    graph = graph_of(client.post(path, content=content, headers=headers))
    if not variant.removed:
        return graph
    deadline = time.monotonic() + timeout_s
    while graph != "pruned":
        if time.monotonic() > deadline:
            raise RuntimeError(f"no pruned graph for {variant.label} after {timeout_s} s")
        time.sleep(0.05)
        graph = graph_of(client.post(path, content=content, headers=headers))
    return graph


def measure_single(
    url: str, name: str, variants: list[Variant], tensor: np.ndarray, seconds: float
) -> tuple[dict[Variant, Timing], dict[Variant, str]]:
    """One request at a time, variants in turn; also the graph that served each."""
    path = f"/v2/models/{name}/infer"
    with httpx.Client(base_url=url, timeout=60) as client:
        graphs = {v: warm_until_pruned(client, path, v, tensor) for v in variants}

        calls: dict[Variant, Callable[[], object]] = {}
        for variant in variants:
            content, headers = infer_body(tensor, variant.remove)
            calls[variant] = functools.partial(client.post, path, content=content,
                                               headers=headers)
        timings = time_interleaved(calls, seconds)
    return timings, graphs


async def run_clients(
    url: str, path: str, make_body: Callable[[], tuple[bytes, dict[str, str]]],
    concurrency: int, seconds: float, load: Load,
) -> None:
    """`concurrency` clients posting back to back for `seconds`; adds to `load`."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        stop = time.perf_counter() + seconds

        async def client_loop() -> None:
            while time.perf_counter() < stop:
                content, headers = make_body()
                response = await client.post(path, content=content, headers=headers)
                load.pruned += graph_of(response) == "pruned"
                load.requests += 1

        cpu, started = time.process_time(), time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        load.wall_s += time.perf_counter() - started
        load.client_cpu_s += time.process_time() - cpu


def measure_concurrent(
    url: str, name: str, num_blocks: int, tensor: np.ndarray, concurrency: int,
    seconds: float, rounds: int, seed: int,
) -> dict[str, Load]:
    """Full network against fresh random sets, in alternating rounds of
    `concurrency` clients each."""
    rng = np.random.default_rng(seed)
    path = f"/v2/models/{name}/infer"
    full_body = infer_body(tensor, None)
    used: set[str] = set()

    def random_set_body() -> tuple[bytes, dict[str, str]]:
        # Never repeated: a set asked for again would get a pruned graph.
        remove = ""
        while not remove or remove in used:
            size = int(rng.integers(1, num_blocks))
            chosen = rng.choice(num_blocks, size=size, replace=False)
            remove = ",".join(str(index) for index in sorted(chosen))
        used.add(remove)
        return infer_body(tensor, remove)

    loads = {"full": Load(), "random sets": Load()}
    makers = {"full": lambda: full_body, "random sets": random_set_body}
    asyncio.run(run_clients(url, path, makers["full"], concurrency, 1.0, Load()))
    for round_number in range(1, rounds + 1):
        progress(f"  round {round_number}/{rounds}")
        for label, make_body in makers.items():
            asyncio.run(run_clients(url, path, make_body, concurrency, seconds / rounds,
                                    loads[label]))
    return loads


def latency_rows(
    timings: dict[Variant, Timing], graphs: dict[Variant, str] | None
) -> list[str]:
    """Markdown rows; the bound is relative to the full network of the same table."""
    full_ms = next(t.ms(50) for v, t in timings.items() if v.removed is None)
    rows = []
    for variant, timing in timings.items():
        bound_ms = (1 - variant.macs_removed) * full_ms * (1 + LATENCY_MARGIN)
        judged = variant.removed is not None
        met = ("yes" if timing.ms(50) <= bound_ms else "**no**") if judged else "-"
        graph = graphs[variant] if graphs else ("masked" if variant.removed is None
                                                else "pruned")
        rows.append(
            f"| {variant.label} | {len(variant.removed or ())} | "
            f"{variant.macs_removed:.1%} | {graph} | {timing.ms(50):.2f} | "
            f"{timing.ms(90):.2f} | {timing.per_s:,.1f} | "
            f"{bound_ms if judged else full_ms:.2f} | {met} |"
        )
    return rows


def report(
    name: str, raw: dict[Variant, Timing], single: dict[Variant, Timing],
    graphs: dict[Variant, str], loads: dict[str, Load], concurrency: int,
) -> list[str]:
    header = ("| network | blocks removed | MACs removed | graph | p50 ms | p90 ms "
              "| calls/s | bound ms (p50) | bound met |")
    rule = "|---|---|---|---|---|---|---|---|---|"
    ratio = loads["random sets"].per_s / loads["full"].per_s
    chosen = "; ".join(f"{v.label}: {list(v.removed)}" for v in single if v.removed)
    lines = [
        f"\n### {name}\n",
        f"Blocks removed: {chosen}\n",
        ("Raw ONNX Runtime in-process, batch 1 (the full network's row is the masked "
         "graph with every block kept):\n"),
        header, rule, *latency_rows(raw, None),
        ("\nService, `/v2` binary tensors, one request at a time (the bound column of "
         "the full row is its own p50):\n"),
        header, rule, *latency_rows(single, graphs),
        f"\nService, `/v2` binary tensors, {concurrency} concurrent clients:\n",
        "| clients of | requests | requests/s | answered by a pruned graph | client CPU |",
        "|---|---|---|---|---|",
    ]
    for label, load in loads.items():
        lines.append(f"| {label} | {load.requests} | {load.per_s:,.1f} | {load.pruned} "
                     f"| {load.client_cpu_s / load.wall_s:.2f} cores |")
    met = "met" if ratio >= THROUGHPUT_TARGET else "**not met**"
    lines.append(f"\nRandom sets / full throughput: {ratio:.2f} (target >= "
                 f"{THROUGHPUT_TARGET}: {met})")
    return lines


def bench_model(
    args: argparse.Namespace, repository: Path, server: ServerProcess, name: str
) -> list[str]:
    files = locate(repository, name, None)
    metadata = files.read_metadata()
    variants = choose_variants(metadata, args.removed, args.seed)
    tensor = image_tensor(files)

    progress(f"{name}: raw ONNX Runtime, {args.seconds:g} s per graph")
    raw = measure_raw(files, variants, tensor, args.seconds)
    progress(f"{name}: service, single requests, {args.seconds:g} s per network")
    single, graphs = measure_single(server.url, name, variants, tensor, args.seconds)
    progress(f"{name}: service, {args.concurrency} concurrent clients, "
             f"{args.seconds:g} s per network")
    loads = measure_concurrent(server.url, name, len(metadata["blocks"]), tensor,
                               args.concurrency, args.seconds, args.rounds, args.seed)
    return report(name, raw, single, graphs, loads, args.concurrency)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS),
                        help="CIFAR-10 models of the manifest (pretrained weights)")
    parser.add_argument("--removed", nargs="+", type=int, default=list(REMOVED_COUNTS),
                        help="how many non-downsampling blocks each sub-network removes")
    parser.add_argument("--seconds", type=float, default=8,
                        help="measurement time per network in each of the three phases")
    parser.add_argument("--rounds", type=int, default=4,
                        help="alternating slices of the concurrent phase")
    parser.add_argument("--concurrency", type=int, default=32,
                        help="clients in the throughput phase")
    parser.add_argument("--seed", type=int, default=2016, help="seeds the choice of blocks")
    parser.add_argument("--markdown", type=Path, help="also write the tables here")
    args = parser.parse_args()
    if args.seconds <= 0 or args.rounds < 1 or args.concurrency < 1:
        parser.error("--seconds must be positive, --rounds and --concurrency at least 1")
    return args


def main() -> int:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-subnetwork-"))
    repository = work / "repository"
    lines = [(
        f"Measured {time.strftime('%Y-%m-%d %H:%M %Z')}; CPUs available: "
        f"{available_cpus()}; onnxruntime {ort.__version__}; load average at start: "
        f"{load_average()}"
    )]
    progress(lines[0])
    try:
        progress(f"exporting {', '.join(args.models)} into {repository}")
        ensure_models(args.models, repository, cache_dir=work / "cache",
                      mirror=str(weights_mirror()))
        server = ServerProcess(repository, models=",".join(args.models), log_level="WARNING")
        try:
            progress(f"starting the service on {server.url}")
            server.wait_ready(timeout_s=300)
            for name in args.models:
                report_lines = bench_model(args, repository, server, name)
                print("\n".join(report_lines), flush=True)
                lines += report_lines
        finally:
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    lines.append(f"\nLoad average at the end: {load_average()}")
    print(lines[0], lines[-1], sep="\n")
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
