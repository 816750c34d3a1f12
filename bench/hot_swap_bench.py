"""Hot swaps under load, measured in one run: while `--clients` keep calling POST /score and the pipeline runs
on the demo video (every frame), activate a new model version `--swaps` times (build, warm up, swap).

Prints one JSON object: failed_requests (goal 0), dropped_frames (frames captured but never answered: errors
and skips; goal 0), the largest gap between two consecutive answers (pipeline results and /score answers
together) against the mean inference time (goal <= 2x), and the answers per model version. The same run first
measures as long without swaps: the largest gap there is what the machine's own noise gives.

    .venv/bin/python bench/hot_swap_bench.py [--swaps 5] [--clients 2] [--threads 0]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from edgevision.config import resolve_threads
from edgevision.frames import SourceOptions, open_source
from edgevision.manager import ModelManager
from edgevision.models import ModelRepository
from edgevision.pipeline import BaseConsumer, Pipeline, PipelineOptions, PipelineStats
from edgevision.scoring import ScoringServer
from edgehub_emulator.process import free_port

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "iot-edge-solution" / "models"
IMAGE = ROOT / "iot-edge-solution" / "media" / "squirrel_cls.jpg"
VIDEO = ROOT / "iot-edge-solution" / "media" / "demo.mp4"


class Answers:
    """Times and model versions of every answer, from any thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.times: list[float] = []
        self.versions: Counter[str] = Counter()

    def add(self, model: str) -> None:
        """One answer now."""
        with self.lock:
            self.times.append(time.perf_counter())
            self.versions[model] += 1


class Recorder(BaseConsumer):
    """Counts pipeline results as answers."""

    name = "recorder"

    def __init__(self, answers: Answers) -> None:
        self.answers = answers

    def handle(self, frame: Any, result: Any) -> None:
        self.answers.add(result.model)


def make_version(root: Path, version: int) -> Path:
    """efficientnet-lite0 as version `version` (the real model file)."""
    target = root / "efficientnet-lite0" / str(version)
    shutil.copytree(MODELS / "efficientnet-lite0" / "1", target)
    manifest = json.loads((target / "model.json").read_text(encoding="utf-8"))
    manifest["version"] = str(version)
    (target / "model.json").write_text(json.dumps(manifest), encoding="utf-8")
    return target


def main() -> None:  # pylint: disable=too-many-locals,too-many-statements
    """Run the benchmark and print its JSON figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--swaps", type=int, default=5)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between activations")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads; 0: CPU count - 1")
    args = parser.parse_args()
    threads = resolve_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        versions = [ModelRepository.load_folder(make_version(Path(scratch), v)) for v in range(2, 2 + args.swaps)]
        manager = ModelManager("onnxruntime", threads, sample_image=IMAGE)
        manager.activate(ModelRepository(MODELS).load("efficientnet-lite0", "1"))
        answers = Answers()
        stats = PipelineStats()
        pipeline = Pipeline(
            open_source(str(VIDEO), SourceOptions(loop=True)),
            manager,
            [Recorder(answers)],
            PipelineOptions(every_frame=True),
            stats,
        )
        server = ScoringServer(manager, "127.0.0.1", free_port())
        server.start()
        stop = threading.Event()
        failed = [0]
        jpeg = IMAGE.read_bytes()

        def client() -> None:
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            while not stop.is_set():
                try:
                    connection.request("POST", "/score", body=jpeg, headers={"Content-Type": "image/jpeg"})
                    response = connection.getresponse()
                    body = response.read()
                    if response.status == 200:
                        answers.add(json.loads(body)["model"])
                    else:
                        failed[0] += 1
                except (OSError, http.client.HTTPException):
                    failed[0] += 1
                    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)

        pipeline.start()
        workers = [threading.Thread(target=client) for _ in range(args.clients)]
        for worker in workers:
            worker.start()
        time.sleep(1.0)  # threads and connections warm
        with answers.lock:
            baseline_start = len(answers.times)
        time.sleep(args.interval * max(1, args.swaps))  # as long as the swap phase: the same run without swaps
        with answers.lock:
            first = len(answers.times)
        for model in versions:
            manager.activate(model)
            time.sleep(args.interval)
        stop.set()
        for worker in workers:
            worker.join()
        pipeline.stop()
        pipeline.wait(30)
        pipeline.close()
        server.stop()
        manager.close()

    def largest_gap_ms(times: list[float]) -> float:
        return max((b - a for a, b in zip(times, times[1:])), default=0.0) * 1000

    times = answers.times[first:]
    baseline_gap_ms = largest_gap_ms(answers.times[baseline_start : first + 1])
    inference_ms = stats.mean_ms("inference")
    gap_ms = largest_gap_ms(times)
    print(
        json.dumps(
            {
                "swaps": args.swaps,
                "clients": args.clients,
                "cpu_count": os.cpu_count(),
                "failed_requests": failed[0],
                "dropped_frames": stats.errors + stats.frames_skipped,
                "pipeline_errors": pipeline.error is not None,
                "answers": len(times),
                "answers_per_version": dict(answers.versions),
                "mean_inference_ms": round(inference_ms, 2),
                "largest_gap_ms": round(gap_ms, 2),
                "largest_gap_vs_inference": round(gap_ms / inference_ms, 2) if inference_ms else None,
                "largest_gap_without_swaps_ms": round(baseline_gap_ms, 2),
                "largest_gap_without_swaps_vs_inference": round(baseline_gap_ms / inference_ms, 2)
                if inference_ms
                else None,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
