"""Pipeline throughput against the engine alone, on the demo video, measured in one run.

Prints one JSON object: pipeline_fps, inference_only_fps (same model, same pre-processed frames, engine only,
same threads), their ratio, and the naive sequential read -> pre-process -> infer loop for comparison.

    .venv/bin/python bench/pipeline_bench.py [--model efficientnet-lite0] [--frames 600] [--threads 0]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from edgevision.bench import bench_pipeline
from edgevision.config import resolve_threads
from edgevision.models import ModelRepository
from edgevision.vision import build_task

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    """Run the benchmark and print its JSON figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--video", type=Path, default=ROOT / "iot-edge-solution" / "media" / "demo.mp4")
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads; 0: CPU count - 1")
    args = parser.parse_args()
    threads = resolve_threads(args.threads)
    model = ModelRepository(ROOT / "iot-edge-solution" / "models").load(args.model)
    task = build_task(model, "onnxruntime", threads)
    figures = bench_pipeline(task, args.video, args.frames)
    figures["cpu_count"] = os.cpu_count()
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
