"""Build `resnet-serve:cpu` or `resnet-serve:gpu` with docker or podman.

    python3 scripts/container_build.py cpu [--target STAGE] [--tag NAME] [--models A,B]

`make docker-cpu` and `make docker-gpu` call this. The engine is
`CONTAINER_ENGINE` if set, else docker when its daemon answers, else podman.
With `RESNET_SERVE_WEIGHTS_MIRROR` set, the weights and the wheels that pip on
this machine finds locally (the CPU torch build above all) are served to the
build over loopback (see container_inputs.py) and their addresses passed as
build arguments; the build runs with host networking to reach them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from container_inputs import pip_find_links_dirs, serve_inputs, wheels_in  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = {"cpu": ROOT / "docker" / "Dockerfile.cpu", "gpu": ROOT / "docker" / "Dockerfile"}


def find_engine() -> str:
    """The container engine to build with; exits with a hint when there is none."""
    configured = os.environ.get("CONTAINER_ENGINE")
    if configured:
        return configured
    if shutil.which("docker") and _answers("docker"):
        return "docker"
    if shutil.which("podman"):
        return "podman"
    raise SystemExit(
        "no container engine: install docker or podman (or set CONTAINER_ENGINE); "
        "scripts/container_engine_setup.sh prepares podman on Debian"
    )


def _answers(engine: str) -> bool:
    try:
        probe = subprocess.run(
            [engine, "info"],
            capture_output=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def build_command(
    engine: str,
    flavour: str,
    tag: str,
    target: str | None,
    build_args: dict[str, str],
) -> list[str]:
    command = [engine, "build", "--network", "host", "-f", str(DOCKERFILES[flavour]), "-t", tag]
    if Path(engine).name == "podman":
        # podman's default OCI image format silently drops HEALTHCHECK.
        command += ["--format", "docker"]
    if target:
        command += ["--target", target]
    for name, value in build_args.items():
        command += ["--build-arg", f"{name}={value}"]
    return [*command, str(ROOT)]


def _mirror_dir(mirror: str) -> Path | None:
    if "://" in mirror:
        return None
    path = Path(mirror).expanduser().resolve()
    if not path.is_dir():
        raise SystemExit(f"RESNET_SERVE_WEIGHTS_MIRROR={mirror} is not a folder or an address")
    return path


def run_build(flavour: str, tag: str, target: str | None, models: str | None) -> int:
    engine = find_engine()
    build_args = {"MODELS": models} if models else {}
    mirror = os.environ.get("RESNET_SERVE_WEIGHTS_MIRROR", "")
    if not mirror:
        return _run(build_command(engine, flavour, tag, target, build_args))

    weights_dir = _mirror_dir(mirror)
    wheel_dirs = pip_find_links_dirs()
    with serve_inputs(weights_dir, wheel_dirs) as base:
        build_args["WEIGHTS_MIRROR"] = f"{base}/weights" if weights_dir else mirror
        if wheel_dirs:
            build_args["WHEELS_URL"] = f"{base}/wheels/"
        if any(
            path.name.startswith("torch-") and "+cpu" in path.name for path in wheels_in(wheel_dirs)
        ):
            # The CPU torch wheel is served: no need to reach the PyTorch index.
            build_args["TORCH_INDEX"] = ""
        return _run(build_command(engine, flavour, tag, target, build_args))


def _run(command: list[str]) -> int:
    print("+", " ".join(command), flush=True)
    started = time.monotonic()
    status = subprocess.run(command, check=False).returncode
    print(f"build exited {status} after {time.monotonic() - started:.0f} s", flush=True)
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("flavour", choices=sorted(DOCKERFILES))
    parser.add_argument("--tag", help="image name (default: resnet-serve:<flavour>)")
    parser.add_argument("--target", help="build only up to this stage")
    parser.add_argument("--models", help="models to bake in, comma-separated")
    args = parser.parse_args(argv)
    tag = args.tag or f"resnet-serve:{args.flavour}"
    return run_build(args.flavour, tag, args.target, args.models)


if __name__ == "__main__":
    sys.exit(main())
