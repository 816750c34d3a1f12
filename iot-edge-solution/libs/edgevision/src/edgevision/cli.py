"""`edgevision` command line: run a bundled model on images, benchmark the pipeline, publish models, deploy."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

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


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    pairs = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise EdgeVisionError(f"{what} {item!r} is not NAME=VALUE")
        pairs[name.strip()] = value.strip()
    return pairs


def _solution_dir() -> Path:
    """The iot-edge-solution folder of this checkout (or ./iot-edge-solution)."""
    return default_repository().parent if default_repository().name == "models" else Path("iot-edge-solution")


def _deploy_variables(env_file: Path | None, solution: Path) -> dict[str, str]:
    """What placeholders expand from: .env (else .env_template) of the repository, over the shell."""
    # pylint: disable=import-outside-toplevel
    from edgevision.deploy import read_env_file

    if env_file is None:
        root = solution.resolve().parent
        env_file = root / ".env" if (root / ".env").is_file() else root / ".env_template"
    return {**os.environ, **read_env_file(env_file)}


def cmd_deploy(args: argparse.Namespace) -> int:  # pylint: disable=too-many-locals  # one summary of many parts
    """Apply the manifest to one device or as an automatic deployment; optionally wait for the devices."""
    # pylint: disable=import-outside-toplevel
    from edgevision.deploy import (
        AtScale,
        HubClient,
        ManifestSource,
        apply_at_scale,
        apply_to_device,
        content_id,
        default_manifest,
        failed_devices,
        load_modules_content,
        wait_at_scale,
        wait_device,
    )

    if bool(args.device) == bool(args.target_condition):
        raise EdgeVisionError("pass either --device (DEVICE=) or --target-condition (TARGET_CONDITION=), not both")
    if args.device and args.layered:
        raise EdgeVisionError("a layered deployment is an at-scale one: give it --target-condition, not --device")
    solution = _solution_dir()
    variables = _deploy_variables(args.env_file, solution)
    platform = args.platform or variables.get("DEFAULT_PLATFORM") or "amd64"
    manifest = args.manifest or default_manifest(solution, platform)
    modules = load_modules_content(ManifestSource(manifest, platform, variables, solution), args.layered)
    hub = HubClient(args.hub_connection_string or os.environ.get("IOTHUB_CONNECTION_STRING", ""))

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.device:
        version = apply_to_device(hub, args.device, modules)
        summary: dict[str, object] = {"device": args.device, "hub": hub.host, "manifest": str(manifest)}
        summary["desiredVersion"] = version
        if args.wait:
            reported = wait_device(hub, args.device, version, args.timeout, progress)
            summary["modules"] = {n: (s or {}).get("runtimeStatus") for n, s in (reported.get("modules") or {}).items()}
        print(json.dumps(summary), flush=True)
        return 0
    settings = AtScale(
        config_id=args.id or content_id(modules, args.layered),
        target_condition=args.target_condition,
        priority=args.priority,
        labels=_pairs(args.label, "--label"),
        metrics=_pairs(args.metric, "--metric"),
    )
    config, created = apply_at_scale(hub, modules, settings)
    summary = {
        "deployment": config.id,
        "created": created,
        "layered": args.layered,
        "hub": hub.host,
        "manifest": str(manifest),
        "targetCondition": config.target_condition,
        "priority": config.priority,
    }
    if args.wait:
        summary["systemMetrics"] = wait_at_scale(hub, config.id, args.timeout, progress)
        if summary["systemMetrics"].get("reportedFailedCount"):  # type: ignore[union-attr]
            failed, count = failed_devices(hub, config.id)
            summary["failedDevices"] = failed
            print(json.dumps(summary), flush=True)
            named = "; ".join(f"{device}: {status}" for device, status in failed.items())
            more = f" and {count - len(failed)} more" if count > len(failed) else ""
            print(f"edgevision: error: {config.id} failed on {count} device(s): {named}{more}", file=sys.stderr)
            return 1
    print(json.dumps(summary), flush=True)
    return 0


def cmd_deployments(args: argparse.Namespace) -> int:
    """List IoT Edge deployments with their system metrics."""
    from edgevision.deploy import HubClient, list_deployments  # pylint: disable=import-outside-toplevel

    rows = list_deployments(HubClient(args.hub_connection_string or os.environ.get("IOTHUB_CONNECTION_STRING", "")))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'id':<32} {'prio':>5} {'layer':<5} {'targeted':>8} {'applied':>7} {'success':>7} {'failed':>6}  target")
    for row in rows:
        metrics = row["systemMetrics"]
        print(
            f"{row['id']:<32} {row['priority']:>5} {'yes' if row['layered'] else 'no':<5} "
            f"{metrics.get('targetedCount', 0):>8} {metrics.get('appliedCount', 0):>7} "
            f"{metrics.get('reportedSuccessfulCount', 0):>7} {metrics.get('reportedFailedCount', 0):>6}  "
            f"{row['targetCondition']}"
        )
    return 0


def _add_deploy_parsers(commands: Any) -> None:
    hub_help = "IoT Hub service connection string; default: $IOTHUB_CONNECTION_STRING"
    deploy = commands.add_parser(
        "deploy", help="apply the deployment manifest to a device or, at scale, to the devices a condition targets"
    )
    deploy.add_argument(
        "--manifest", type=Path, help="default: config/deployment.<platform>.json, else deployment.template.json"
    )
    deploy.add_argument("--platform", help="amd64, amd64.gpu, arm64v8 (default: $DEFAULT_PLATFORM or amd64)")
    deploy.add_argument("--env-file", type=Path, help="placeholders' values (default: .env, else .env_template)")
    deploy.add_argument("--device", help="one edge device (a single-device deployment)")
    deploy.add_argument("--target-condition", help="at scale: e.g. \"tags.site='lobby'\"")
    deploy.add_argument("--priority", type=int, default=0, help="at scale: higher wins (default 0)")
    deploy.add_argument("--layered", action="store_true", help="at scale: a layered deployment on top of the base")
    deploy.add_argument("--id", help="deployment id (default: from the content, so new content gets a new id)")
    deploy.add_argument("--label", action="append", help="NAME=VALUE label (repeatable)")
    deploy.add_argument("--metric", action="append", help="NAME=QUERY custom metric (repeatable)")
    deploy.add_argument("--wait", action="store_true", help="wait until the targeted devices report it")
    deploy.add_argument("--timeout", type=float, default=300.0, help="seconds --wait waits (default 300)")
    deploy.add_argument("--hub-connection-string", help=hub_help)
    deploy.set_defaults(handler=cmd_deploy)
    listing = commands.add_parser("deployments", help="list IoT Edge deployments with their system metrics")
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    listing.add_argument("--hub-connection-string", help=hub_help)
    listing.set_defaults(handler=cmd_deployments)


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
    _add_deploy_parsers(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `edgevision` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if logging.getLogger().level > logging.DEBUG:
        # its retry warnings would come before the one-line error that says the hub cannot be reached
        logging.getLogger("urllib3").setLevel(logging.ERROR)
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
