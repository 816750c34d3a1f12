"""`edgevision` command line: run a bundled model on images, and benchmark the pipeline."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from edgevision.config import resolve_threads
from edgevision.engines import BACKENDS
from edgevision.errors import EdgeVisionError
from edgevision.models import ModelRepository
from edgevision.tasks import ImageError, decode_image
from edgevision.vision import build_task

log = logging.getLogger("edgevision.cli")


def default_repository() -> Path:
    """The bundled models when running from the repository, else ./models."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "iot-edge-solution" / "models"
        if candidate.is_dir():
            return candidate
    return Path("models")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0: every available CPU), got {value}")
    return value


def video_file(text: str) -> Path:
    """argparse type: an existing video file."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"video file not found: {text}")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text} is not a video file")
    return path


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model name in the repository, e.g. efficientnet-lite0")
    parser.add_argument("--version", default=None, help="model version (default: the newest)")
    parser.add_argument("--repository", type=Path, default=None, help="model repository folder")
    parser.add_argument("--backend", choices=sorted(BACKENDS), default="onnxruntime")
    parser.add_argument("--threads", type=non_negative_int, default=0, help="intra-op threads (0: every available CPU)")


def _load(args: argparse.Namespace):
    repository = ModelRepository(args.repository or default_repository())
    model = repository.load(args.model, args.version)
    return build_task(model, args.backend, resolve_threads(args.threads))


def cmd_infer(args: argparse.Namespace) -> int:
    """One JSON object per image on stdout; unreadable images get an `error` object and exit status 1."""
    task = _load(args)
    status = 0
    for image_path in args.images:
        try:
            image = decode_image(Path(image_path).read_bytes())
            result = task.run(image)
            record = {"image": image_path, **result.to_dict()}
        except (OSError, ImageError) as e:
            status = 1
            record = {"image": image_path, "error": str(e)}
        print(json.dumps(record), flush=True)
    return status


def cmd_bench_pipeline(args: argparse.Namespace) -> int:
    """Pipeline vs engine-only throughput at every thread count, one JSON object."""
    from edgevision.bench import BenchPlan, bench_pipeline  # pylint: disable=import-outside-toplevel

    model = ModelRepository(args.repository or default_repository()).load(args.model, args.version)
    figures = bench_pipeline(
        model,
        args.video,
        resolve_threads(args.threads),
        args.backend,
        spinning=args.spinning,
        plan=BenchPlan(frames=args.frames, rounds=args.rounds),
    )
    print(json.dumps(figures), flush=True)
    return 0


def cmd_publish_model(args: argparse.Namespace) -> int:
    """Zip, upload, sign and request a model version; one JSON summary (without the SAS token)."""
    from edgevision.publish import publish_model  # pylint: disable=import-outside-toplevel

    storage = args.storage_connection_string or os.environ.get("STORAGE_CONNECTION_STRING", "")
    hub = args.hub_connection_string or os.environ.get("IOTHUB_CONNECTION_STRING", "")
    missing = [
        name for name, value in (("STORAGE_CONNECTION_STRING", storage), ("IOTHUB_CONNECTION_STRING", hub)) if not value
    ]
    if missing:
        print(f"edgevision: error: set {' and '.join(missing)} (or pass the options)", file=sys.stderr)
        return 2
    published = publish_model(args.folder, args.device, args.module, storage, hub, args.container, args.expiry_hours)
    print(json.dumps(published.to_dict()), flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `edgevision` command."""
    parser = argparse.ArgumentParser(prog="edgevision", description=__doc__)
    parser.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING, ERROR")
    commands = parser.add_subparsers(dest="command", required=True)

    infer = commands.add_parser("infer", help="run a model on image files, one JSON line per image")
    _add_model_args(infer)
    infer.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    infer.set_defaults(handler=cmd_infer)

    bench = commands.add_parser("bench", help="benchmarks")
    bench_kinds = bench.add_subparsers(dest="bench", required=True)
    pipeline = bench_kinds.add_parser("pipeline", help="pipeline FPS vs inference-only FPS on a video")
    _add_model_args(pipeline)
    pipeline.add_argument("--video", type=video_file, required=True, help="a video file")
    pipeline.add_argument("--frames", type=int, default=300, help="frames per measurement, over all rounds")
    pipeline.add_argument("--rounds", type=int, default=3, help="rounds; each figure is the median over them")
    pipeline.add_argument(
        "--spinning", action="store_true", help="let ONNX Runtime's idle threads spin (default: they sleep)"
    )
    pipeline.set_defaults(handler=cmd_bench_pipeline)

    publish = commands.add_parser(
        "publish-model", help="zip a model version folder, upload it, and ask a module for it through its twin"
    )
    publish.add_argument("folder", type=Path, help="a model version folder (model.json and its files)")
    publish.add_argument("--device", required=True, help="edge device id")
    publish.add_argument("--module", default="classifier", help="module id (default: classifier)")
    publish.add_argument("--container", default="models", help="blob container (default: models)")
    publish.add_argument("--expiry-hours", type=float, default=24.0, help="how long the SAS URL stays valid")
    publish.add_argument(
        "--storage-connection-string",
        default=None,
        help="default: $STORAGE_CONNECTION_STRING (UseDevelopmentStorage=true: local Azurite)",
    )
    publish.add_argument(
        "--hub-connection-string",
        default=None,
        help="IoT Hub service connection string; default: $IOTHUB_CONNECTION_STRING",
    )
    publish.set_defaults(handler=cmd_publish_model)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `edgevision` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    for name in ("frames", "rounds"):
        if getattr(args, name, 1) <= 0:
            print(f"edgevision: error: --{name} must be > 0", file=sys.stderr)
            return 2
    try:
        return args.handler(args)
    except EdgeVisionError as e:
        print(f"edgevision: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
