"""Soak test: minutes of mixed traffic above capacity against a real server.

Starts `resnet-serve serve` (exporting the default models first if they are
missing), then keeps `--concurrency` clients busy for `--duration-s` seconds
with a fixed mix: valid images, corrupt images, sub-network requests, short
deadlines, and clients that hang up before their answer. It reports requests
served, refused and failed by kind, latency, the server's RSS after the
warm-up and at the end, and exits non-zero if the server misbehaved: a 5xx
other than 503/504, an answer cut off, RSS grown by more than `--max-rss-growth-mb`,
a queue left non-empty, or an exit status other than 0 on SIGTERM.

    python scripts/soak.py --duration-s 600 --report docs/soak-run.md
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = ROOT.parent / "shared" / "data" / "samples" / "cifar10"
MODELS = {"resnet20-cifar10": 9, "resnet56-cifar10": 27}  # name -> residual blocks
# Sets of removed blocks asked for again and again, so pruned graphs get built.
FREQUENT_REMOVALS = ["3", "1,4", "layer2.0", "0,2,5"]
MIX = {"valid": 45, "subnetwork": 20, "corrupt": 15, "disconnect": 10, "deadline": 10}


@dataclass
class Tally:
    """What the clients saw."""

    outcomes: Counter[str] = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)

    def record(self, kind: str, outcome: str, latency_s: float) -> None:
        self.outcomes[f"{kind} {outcome}"] += 1
        if outcome == "200":
            self.latencies_s.append(latency_s)


def load_images() -> list[bytes]:
    """The CIFAR-10 samples if this checkout has them, else synthetic pictures."""
    found = [path.read_bytes() for path in sorted(SAMPLE_DIR.glob("*.png"))]
    if found:
        return found
    from PIL import Image

    pictures = []
    rng = random.Random(0)
    for _ in range(20):
        buffer = io.BytesIO()
        Image.frombytes("RGB", (32, 32), rng.randbytes(32 * 32 * 3)).save(buffer, "PNG")
        pictures.append(buffer.getvalue())
    return pictures


IMAGES = load_images()


def _multipart(images: list[bytes]) -> tuple[bytes, str]:
    boundary = f"soak{random.getrandbits(64):x}"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{i}.png"\r\nContent-Type: image/png\r\n\r\n'.encode() + data + b"\r\n"
        for i, data in enumerate(images)
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), boundary


def _corrupt(data: bytes, rng: random.Random) -> bytes:
    choice = rng.randrange(3)
    if choice == 0:
        return data[: rng.randrange(8, len(data) // 2)]  # truncated
    if choice == 1:
        return rng.randbytes(rng.randrange(1, 4096))  # not an image
    broken = bytearray(data)
    for _ in range(16):
        broken[rng.randrange(40, len(broken))] ^= 0xFF  # damaged pixels or checksums
    return bytes(broken)


def build_request(kind: str, rng: random.Random) -> bytes:
    """One HTTP/1.1 request of the given kind, ready for the socket."""
    model = rng.choice(list(MODELS))
    images = [rng.choice(IMAGES) for _ in range(rng.choice((1, 1, 2, 4)))]
    path = f"/v1/models/{model}/classify?top_k=3"
    headers = {}
    if kind == "subnetwork":
        if rng.random() < 0.7:
            remove = rng.choice(FREQUENT_REMOVALS)
        else:
            remove = ",".join(map(str, rng.sample(range(MODELS[model]), rng.randrange(1, 4))))
        path = f"/v1/models/{model}/subnetwork/classify?remove={remove}"
    elif kind == "corrupt":
        images[0] = _corrupt(images[0], rng)
    elif kind == "deadline":
        headers["X-Request-Timeout"] = f"{rng.uniform(0.001, 0.02):.3f}"
    body, boundary = _multipart(images)
    lines = [f"POST {path} HTTP/1.1", "Host: soak", "Connection: close",
             f"Content-Type: multipart/form-data; boundary={boundary}",
             f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def classify_answer(data: bytes) -> str:
    """The status code, or `cut` for an answer that stopped part-way."""
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        return "cut" if data else "closed"
    lines = head.decode("latin-1").split("\r\n")
    length = next((line.split(":", 1)[1] for line in lines
                   if line.lower().startswith("content-length:")), None)
    if length is None or int(length) != len(body):
        return "cut"
    return lines[0].split()[1]


async def one_request(port: int, kind: str, rng: random.Random) -> str:
    request = build_request(kind, rng)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        return f"connect-error {type(exc).__name__}"
    try:
        writer.write(request)
        await writer.drain()
        if kind == "disconnect":
            await asyncio.sleep(rng.uniform(0.0, 0.05))
            return "hung-up"
        return classify_answer(await asyncio.wait_for(reader.read(), 120))
    except (OSError, TimeoutError) as exc:
        return f"client-error {type(exc).__name__}"
    finally:
        writer.close()


async def client(port: int, until: float, seed: int, tally: Tally) -> None:
    rng = random.Random(seed)
    kinds, weights = list(MIX), list(MIX.values())
    while time.monotonic() < until:
        kind = rng.choices(kinds, weights)[0]
        started = time.monotonic()
        outcome = await one_request(port, kind, rng)
        tally.record(kind, outcome, time.monotonic() - started)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc: this script needs Linux")


def server_metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text) for sample in family.samples
    }


def start_server(args: argparse.Namespace, log_path: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update({
        "RESNET_SERVE_HOST": "127.0.0.1",
        "RESNET_SERVE_PORT": str(args.port),
        "RESNET_SERVE_MODELS": ",".join(MODELS),
        "RESNET_SERVE_MAX_QUEUE_SIZE": str(args.queue_size),
        "RESNET_SERVE_PROVIDERS": "CPUExecutionProvider",
    })
    log = log_path.open("wb")
    process = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], cwd=ROOT,
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{args.port}"
    deadline = time.monotonic() + 900  # a first run exports the models
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited {process.returncode}; see {log_path}")
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    process.kill()
    raise SystemExit(f"server not ready; see {log_path}")


async def run_traffic(args: argparse.Namespace, pid: int, tally: Tally) -> list[tuple[float, float]]:
    """Drive the clients; sample RSS every 10 s. Returns (elapsed s, RSS MB) pairs."""
    started = time.monotonic()
    until = started + args.duration_s
    clients = [asyncio.create_task(client(args.port, until, args.seed + i, tally))
               for i in range(args.concurrency)]
    samples = [(0.0, rss_mb(pid))]
    while time.monotonic() < until:
        await asyncio.sleep(min(10.0, until - time.monotonic()))
        samples.append((time.monotonic() - started, rss_mb(pid)))
    await asyncio.gather(*clients)
    samples.append((time.monotonic() - started, rss_mb(pid)))
    return samples


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def rss_at(samples: list[tuple[float, float]], elapsed_s: float) -> float:
    return next(rss for t, rss in samples if t >= elapsed_s)


def _every_nth(samples: list[tuple[float, float]], rows: int) -> list[tuple[float, float]]:
    """About `rows` evenly spaced samples, always with the last one."""
    chosen = samples[:: max(1, len(samples) // rows)]
    return chosen if chosen[-1] is samples[-1] else [*chosen, samples[-1]]


def report(args: argparse.Namespace, tally: Tally, samples: list[tuple[float, float]],
           metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], exit_code: int,
           ) -> tuple[str, list[str]]:
    """The markdown report and the list of problems found (empty when all is well)."""
    outcomes = tally.outcomes
    by_status = Counter[str]()
    for key, count in outcomes.items():
        by_status[key.split(" ", 1)[1]] += count
    total = sum(outcomes.values())
    warm_rss, end_rss = rss_at(samples, args.warmup_s), samples[-1][1]
    growth = end_rss - warm_rss
    depth = sum(v for (name, _), v in metrics.items() if name == "resnet_serve_queue_depth")
    dropped = {dict(labels)["reason"]: 0.0 for (name, labels) in metrics
               if name == "resnet_serve_dropped_requests_total"}
    for (name, labels), value in metrics.items():
        if name == "resnet_serve_dropped_requests_total":
            dropped[dict(labels)["reason"]] += value

    problems = [f"{count} x {key}" for key, count in outcomes.items()
                if key.endswith((" cut", " 500", " closed")) or "client-error" in key]
    if growth > args.max_rss_growth_mb:
        problems.append(f"RSS grew {growth:.1f} MB after the warm-up")
    if depth:
        problems.append(f"queues still hold {depth:.0f} images at the end")
    if exit_code != 0:
        problems.append(f"server exited {exit_code} on SIGTERM")

    lines = [
        f"- duration: {args.duration_s:.0f} s, {args.concurrency} concurrent clients, "
        f"queue bound {args.queue_size} images per model, models {', '.join(MODELS)}",
        f"- requests: {total} ({total / args.duration_s:.1f}/s); served (200): "
        f"{by_status['200']}; refused (503): {by_status['503']}; deadline (504): "
        f"{by_status['504']}; rejected input (400): {by_status['400']}; "
        f"hung up on purpose: {by_status['hung-up']}",
        f"- latency of served requests: p50 {percentile(tally.latencies_s, 0.5) * 1000:.0f} ms, "
        f"p99 {percentile(tally.latencies_s, 0.99) * 1000:.0f} ms",
        f"- server RSS: {samples[0][1]:.1f} MB at start, {warm_rss:.1f} MB after the "
        f"{args.warmup_s:.0f} s warm-up, {end_rss:.1f} MB at the end "
        f"(growth {growth:+.1f} MB; limit {args.max_rss_growth_mb:.0f} MB)",
        f"- server's own count of dropped requests: "
        + ", ".join(f"{reason} {value:.0f}" for reason, value in sorted(dropped.items())),
        f"- queue depth at the end: {depth:.0f}; exit status on SIGTERM: {exit_code}",
        "",
        "| request kind | outcome | count |",
        "|---|---|---|",
        *[f"| {key.split(' ', 1)[0]} | {key.split(' ', 1)[1]} | {count} |"
          for key, count in sorted(outcomes.items())],
        "",
        "| elapsed (s) | RSS (MB) |",
        "|---|---|",
        *[f"| {t:.0f} | {rss:.1f} |" for t, rss in _every_nth(samples, 12)],
        "",
        "Result: " + ("PASS" if not problems else "FAIL: " + "; ".join(problems)),
    ]
    return "\n".join(lines) + "\n", problems


def _load_average() -> str:
    """The 1, 5 and 15 minute load averages, as /proc/loadavg gives them."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _report_heading(load_before: str) -> str:
    """Title and circumstances of the run, for the report kept in the docs."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    command = " ".join(["python scripts/soak.py", *sys.argv[1:]])
    return (
        "# Soak test\n\n"
        f"`{command}`, finished {when} on a {os.cpu_count()}-CPU machine "
        f"(load average {load_before} before the run, {_load_average()} after it). "
        "`make soak` reruns it and rewrites this file.\n\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=600)
    parser.add_argument("--warmup-s", type=float, default=60)
    parser.add_argument("--concurrency", type=int, default=48)
    parser.add_argument("--queue-size", type=int, default=32)
    parser.add_argument("--max-rss-growth-mb", type=float, default=50)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--report", type=Path, default=None, help="also write the report here")
    args = parser.parse_args()
    log_path = Path(f"/tmp/resnet-serve-soak-{args.port}.log")
    load_before = _load_average()
    process = start_server(args, log_path)
    tally = Tally()
    try:
        samples = asyncio.run(run_traffic(args, process.pid, tally))
        time.sleep(1.0)  # let hung-up requests leave the server's queues
        metrics = server_metrics(f"http://127.0.0.1:{args.port}")
    finally:
        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(120)
    text, problems = report(args, tally, samples, metrics, exit_code)
    print(text)
    if args.report is not None:
        args.report.write_text(_report_heading(load_before) + text)
    print(f"server log: {log_path}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
