"""The `resnet-serve` command: fetch, export, serve, lesion.

Exporting needs PyTorch and the lesion study's figure needs matplotlib (both
in the `[export]` extra); `serve` needs neither, as long as the configured
models are already in the repository.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from service.lesion.command import add_arguments as add_lesion_arguments
from service.logging import configure_logging
from service.settings import Settings

logger = logging.getLogger("service.cli")


class _ProgressBar:
    """Draws a download's progress with tqdm; library code only calls back."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar: Any = None

    def __call__(self, received: int, total: int | None) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(
                total=total, desc=self.label, unit="B", unit_scale=True,
                unit_divisor=1024, file=sys.stderr,
            )
        self.bar.update(received - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _cmd_fetch(args: argparse.Namespace) -> int:
    from models.manifest import get_spec
    from models.weights import fetch_weights

    for name in args.models:
        bar = _ProgressBar(name)
        try:
            path = fetch_weights(get_spec(name), args.cache_dir, args.mirror, bar)
        finally:
            bar.close()
        print(f"{name}: {path}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from models.prepare import export_checkpoint, export_known_model
    from models.repository import require_valid_name

    if args.checkpoint is not None:
        if not (args.name and args.labels and args.depth):
            raise SystemExit("export --checkpoint needs --name, --depth and --labels")
        # Checked here too, so that a bad name fails before the checkpoint is read.
        require_valid_name(args.name)
        folder = export_checkpoint(
            args.checkpoint, args.repository, name=args.name, family=args.family,
            depth=args.depth, labels_file=args.labels, preactivation=args.preactivation,
            version=args.version,
        )
        print(f"{args.name}: {folder}")
        return 0

    for name in args.models:
        bar = _ProgressBar(name)
        try:
            folder = export_known_model(
                name, args.repository, version=args.version, random_init=args.random_init,
                cache_dir=args.cache_dir, mirror=args.mirror, progress=bar,
            )
        finally:
            bar.close()
        print(f"{name}: {folder}")
    return 0


def _prepare_models(settings: Settings, random_init: bool) -> None:
    """Export configured models missing from the repository, if PyTorch is here."""
    from models.repository import list_versions

    missing = [
        ref.name for ref in settings.model_refs()
        if not list_versions(settings.model_repository, ref.name)
    ]
    if not missing:
        return
    try:
        from models.prepare import ensure_models
    except ImportError as exc:
        raise SystemExit(
            f"models {', '.join(missing)} are not in {settings.model_repository} and "
            f"exporting them needs PyTorch ({exc}); install the [export] extra"
        ) from exc

    logger.info("exporting %s into %s", ", ".join(missing), settings.model_repository)
    for position, name in enumerate(missing, start=1):
        # The bar moves only while weights download; a cached file is silent.
        logger.info("[%d/%d] %s: fetching weights and exporting to ONNX",
                    position, len(missing), name)
        started = time.perf_counter()
        bar = _ProgressBar(name)
        try:
            ensure_models(
                [name], settings.model_repository, random_init=random_init,
                cache_dir=settings.cache_dir, mirror=settings.weights_mirror, progress=bar,
            )
        finally:
            bar.close()
        logger.info("[%d/%d] %s: exported in %.1f s", position, len(missing), name,
                    time.perf_counter() - started)


def _cmd_serve(args: argparse.Namespace) -> int:
    from service.server import run_server

    settings = Settings.from_environment()
    configure_logging(settings.log_level, settings.log_format)
    if not args.no_prepare:
        _prepare_models(settings, args.random_init)
    return run_server(settings)


def _cmd_lesion(args: argparse.Namespace) -> int:
    from service.lesion.command import main as lesion_main

    return lesion_main(args)


def _positive_int(text: str) -> int:
    """argparse type: versions are folders named 1, 2, ..., which the service reads."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def _add_model_source_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache-dir", type=Path, default=None,
        help="weights cache (default: RESNET_SERVE_CACHE_DIR or ~/.cache/resnet-serve)",
    )
    parser.add_argument(
        "--mirror", default=None,
        help="base address or directory replacing the publishers' (default: "
        "RESNET_SERVE_WEIGHTS_MIRROR)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resnet-serve", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    fetch = commands.add_parser("fetch", help="download published weights, hash-checked")
    fetch.add_argument("models", nargs="+", help="manifest names, e.g. resnet56-cifar10")
    _add_model_source_args(fetch)
    fetch.set_defaults(handler=_cmd_fetch)

    export = commands.add_parser("export", help="export models to the ONNX repository")
    export.add_argument("models", nargs="*", help="manifest names to fetch and export")
    export.add_argument(
        "--repository", type=Path, default=Settings.model_fields["model_repository"].default,
    )
    export.add_argument("--version", type=_positive_int, default=1,
                        help="version folder to write (a positive integer; default 1)")
    export.add_argument(
        "--random-init", action="store_true",
        help="no published weights: initialise randomly (metadata says pretrained: false)",
    )
    export.add_argument("--checkpoint", type=Path, help="your own trained ResNet checkpoint")
    export.add_argument("--name", help="model name for --checkpoint")
    export.add_argument("--family", choices=["cifar", "imagenet"], default="cifar")
    export.add_argument("--depth", type=int, help="network depth for --checkpoint")
    export.add_argument("--preactivation", action="store_true")
    export.add_argument("--labels", type=Path, help="labels file, one class per line")
    _add_model_source_args(export)
    export.set_defaults(handler=_cmd_export)

    serve = commands.add_parser("serve", help="serve the configured models over HTTP")
    serve.add_argument(
        "--no-prepare", action="store_true",
        help="do not export missing models; fail instead",
    )
    serve.add_argument(
        "--random-init", action="store_true",
        help="export missing models with random weights (for tests and demos)",
    )
    serve.set_defaults(handler=_cmd_serve)

    lesion = commands.add_parser(
        "lesion", help="lesion study: top-1 error with blocks removed or reordered",
    )
    add_lesion_arguments(lesion)
    lesion.set_defaults(handler=_cmd_lesion)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "serve":
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except Exception as exc:
        from models.repository import RepositoryError
        from models.weights import WeightsError

        # ValueError covers bad input named in the message: model names and
        # depths, checkpoints (models.build.CheckpointError), configuration
        # (service.settings.ConfigurationError).
        known = (WeightsError, RepositoryError, KeyError, FileNotFoundError, ValueError)
        if isinstance(exc, known):
            print(f"resnet-serve {args.command}: {_message(exc)}", file=sys.stderr)
            return 2
        raise


def _message(exc: Exception) -> str:
    # str() of a KeyError is the repr of its argument, quotes included.
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc)


if __name__ == "__main__":
    sys.exit(main())
