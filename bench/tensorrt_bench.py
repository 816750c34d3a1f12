"""TensorRT against ONNX Runtime on one GPU machine, measured in one run (ratios, not absolute figures).

For one model: the cold engine build (empty cache) and the cached load, FP16 and FP32, and the pipeline and
engine-only frame rates of TensorRT FP16, TensorRT FP32 and ONNX Runtime on the same video and machine. Prints
one JSON object; the ratios are TensorRT over ONNX Runtime, FP16 over FP32 and cached load over cold build.
Each engine's describe() (TensorRT version, GPU, precision built) is included. Where TensorRT cannot run it
prints the reason and exits with status 2.

    .venv/bin/python bench/tensorrt_bench.py [--model efficientnet-lite0] [--frames 600] [--threads 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edgevision.bench import bench_pipeline
from edgevision.config import resolve_threads
from edgevision.engines import EngineUnavailableError, check_backend, create_engine
from edgevision.models import LoadedModel, ModelRepository
from edgevision.tasks import Task, create_task
from edgevision.vision import engine_config_for

ROOT = Path(__file__).resolve().parents[1]


def load_task(model: LoadedModel, backend: str, threads: int, precision: str, cache_dir: Path) -> tuple[Task, float]:
    """A loaded task, and the seconds `load()` took (a build on an empty cache, else a cached load)."""
    config = dataclasses.replace(engine_config_for(model, threads, cache_dir), precision=precision)
    engine = create_engine(backend, config)
    started = time.perf_counter()
    engine.load()
    return create_task(model, engine), time.perf_counter() - started


def measure(model: LoadedModel, args: argparse.Namespace, cache_root: Path) -> dict[str, Any]:
    """Every figure for one model."""
    threads = resolve_threads(args.threads)
    runs: dict[str, Any] = {}
    for precision in ("fp16", "fp32"):
        cache_dir = cache_root / precision
        task, cold = load_task(model, "tensorrt", threads, precision, cache_dir)
        task.engine.close()
        task, cached = load_task(model, "tensorrt", threads, precision, cache_dir)
        try:
            figures = bench_pipeline(task, args.video, args.frames)
            figures["engine"] = task.engine.describe()
        finally:
            task.engine.close()
        figures.update(cold_build_s=round(cold, 2), cached_load_s=round(cached, 3))
        figures["cached_over_cold"] = round(cached / cold, 4)
        runs[f"tensorrt_{precision}"] = figures
    task, _ = load_task(model, "onnxruntime", threads, "fp32", cache_root / "unused")
    try:
        runs["onnxruntime"] = bench_pipeline(task, args.video, args.frames)
        runs["onnxruntime"]["engine"] = task.engine.describe()
    finally:
        task.engine.close()
    return {"model": model.ref, "ratios": ratios_of(runs), "runs": runs}


def ratios_of(runs: dict[str, Any]) -> dict[str, float]:
    """TensorRT over ONNX Runtime (engine only and pipeline) per precision, and FP16 over FP32."""
    ort = runs["onnxruntime"]
    ratios = {}
    for precision in ("fp16", "fp32"):
        trt = runs[f"tensorrt_{precision}"]
        for kind, key in (("engine", "inference_only_fps"), ("pipeline", "pipeline_fps")):
            ratios[f"tensorrt_{precision}_over_onnxruntime_{kind}"] = round(trt[key] / ort[key], 3)
    fp16, fp32 = runs["tensorrt_fp16"], runs["tensorrt_fp32"]
    ratios["fp16_over_fp32_engine"] = round(fp16["inference_only_fps"] / fp32["inference_only_fps"], 3)
    return ratios


def main() -> int:
    """Run the benchmark and print its JSON figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--video", type=Path, default=ROOT / "iot-edge-solution" / "media" / "demo.mp4")
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads; 0: CPU count - 1")
    args = parser.parse_args()
    try:
        check_backend("tensorrt")
    except EngineUnavailableError as e:
        print(f"tensorrt_bench: TensorRT cannot run here: {e}", file=sys.stderr)
        return 2
    model = ModelRepository(ROOT / "iot-edge-solution" / "models").load(args.model)
    with tempfile.TemporaryDirectory(prefix="trt-bench-") as cache_root:
        print(json.dumps(measure(model, args, Path(cache_root)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
