"""TensorFlow Lite on LiteRT against ONNX Runtime, and the bundled TFLite SSD in the pipeline.

1. `runtimes`: NanoDet-m 416 as ONNX (ONNX Runtime) and as TFLite float32 (LiteRT, the same weights) on the
   same pre-processed real photos, inference only, at every thread count from 1 to the CPU count; the
   configurations take turns in each round (interleaved), and each figure is the median over the rounds.
   `tflite_to_onnx` = LiteRT fps / ONNX Runtime fps at that thread count.
2. `ssd_pipeline`: `edgevision bench pipeline` on the TFLite SSD MobileNet V2 and the demo video: the pipeline's
   fps against the engine alone at its best thread count (`ratio_to_best`; the goal is >= 0.8, as for the
   ONNX models).

    .venv/bin/python bench/tflite_bench.py [--rounds 7] [--frames 40] [--pipeline-frames 300]

Prints one JSON object. Speed figures depend on the machine and what else runs on it: read `load_average`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from edgevision.bench import BenchPlan, bench_pipeline
from edgevision.config import available_cpus
from edgevision.models import ModelRepository
from edgevision.tasks import decode_image
from edgevision.vision import build_task

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "iot-edge-solution" / "models"
MEDIA = ROOT / "iot-edge-solution" / "media"
PHOTOS = ("dog.jpg", "chelsea.png", "coffee.png", "squirrel_cls.jpg")


def _fps(task, prepared: list[dict], frames: int) -> float:
    start = time.perf_counter()
    for i in range(frames):
        task.engine.infer(prepared[i % len(prepared)])
    return frames / (time.perf_counter() - start)


def runtimes(rounds: int, frames: int) -> dict:
    """NanoDet ONNX vs TFLite, inference only, at each thread count; interleaved rounds."""
    repository = ModelRepository(MODELS)
    images = [decode_image((MEDIA / name).read_bytes()) for name in PHOTOS]
    tasks, prepared = {}, {}
    for threads in range(1, available_cpus() + 1):
        for model in ("nanodet-m-416", "nanodet-m-416-tflite"):
            task = build_task(repository.load(model), "onnxruntime", threads)
            tasks[(task.backend, threads)] = task
            prepared[(task.backend, threads)] = [task.pre_process(image)[0] for image in images]
    rates: dict[tuple[str, int], list[float]] = {key: [] for key in tasks}
    try:
        for key, task in tasks.items():  # warm-up
            _fps(task, prepared[key], 5)
        for _ in range(rounds):
            for key, task in tasks.items():
                rates[key].append(_fps(task, prepared[key], frames))
    finally:
        for task in tasks.values():
            task.engine.close()
    by_threads = {}
    for threads in range(1, available_cpus() + 1):
        onnx = statistics.median(rates[("onnxruntime", threads)])
        tflite = statistics.median(rates[("tflite", threads)])
        by_threads[str(threads)] = {
            "onnxruntime_fps": round(onnx, 2),
            "tflite_fps": round(tflite, 2),
            "tflite_to_onnx": round(tflite / onnx, 3),
        }
    return {"model": "nanodet-m-416 (ONNX) / nanodet-m-416-tflite (float32)", "by_threads": by_threads}


def main(argv: list[str]) -> int:
    """Both measurements, one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds of the runtime comparison")
    parser.add_argument("--frames", type=int, default=40, help="inferences per configuration and round")
    parser.add_argument("--pipeline-frames", type=int, default=300, help="frames of the SSD pipeline bench")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    figures = {"cpu_count": available_cpus(), "runtimes": runtimes(args.rounds, args.frames)}
    ssd = ModelRepository(MODELS).load("ssd-mobilenet-v2-coco-tflite")
    pipeline = bench_pipeline(
        ssd,
        MEDIA / "demo.mp4",
        default_threads=available_cpus(),
        plan=BenchPlan(frames=args.pipeline_frames, rounds=5),
    )
    figures["ssd_pipeline"] = {
        key: pipeline[key]
        for key in (
            "model",
            "backend",
            "threads",
            "pipeline_fps",
            "inference_only_fps",
            "ratio",
            "inference_only_best_fps",
            "inference_only_best_threads",
            "ratio_to_best",
            "by_threads",
        )
    }
    figures["load_average"] = {"before": [round(v, 2) for v in load_before], "after": list(os.getloadavg())}
    print(json.dumps(figures, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
