"""Several cameras on one engine: how the cost grows with the number of streams, against the engine alone.

For each video (the bundled demo video, 640x480 MPEG-4, and a 1280x720 video made from real footage by
bench/make_720p_video.py) and each camera count (1, 2, 4, 8 by default), every camera opens the file with its own
handle (looping, read as fast as the engine takes frames) and one MultiCameraPipeline (MAX_BATCH = the camera
count, capped by --max-batch) runs the classifier for --seconds after a warm-up. Measured in the same run:

- aggregate results per second, per-camera results per second (min, max, min/max), p95 frame-to-result latency
  (capture of the frame to its result reaching the consumers), RSS and its growth per camera: each camera count
  runs in a fresh process of its own (the model loaded there as the classifier loads it), so a configuration's
  RSS is not what earlier ones left behind; `rss_per_added_camera_mb` = (RSS with N cameras - RSS with the
  first count) / the cameras added, which includes the engine's buffers for the larger batch;
- the engine alone at its best for the same batch size: pre-processed frames of the same video held in memory,
  stacked into batches of that size, at every intra-op thread count from 1 to the CPU count with 1 and 2
  callers at once (the pipeline runs two rounds at once on files); the best rate (`best`: e.g. `1t2c`, one
  thread, two callers).

`ratio_to_engine_best` = aggregate / engine-alone best at that batch size. The load average at the start and end
is recorded: on a shared machine the ratios move with the load.

    .venv/bin/python bench/multicam_bench.py [--cameras 1,2,4,8] [--seconds 8] [--videos demo,720p]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgevision.config import available_cpus, concurrent_call_threads
from edgevision.frames import Frame, SourceOptions, open_source
from edgevision.models import ModelRepository
from edgevision.pipeline import BaseConsumer, MultiCameraOptions, MultiCameraPipeline
from edgevision.tasks import Task, TaskResult
from edgevision.vision import build_task

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_720p_video import make_video  # noqa: E402  # pylint: disable=wrong-import-position

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "iot-edge-solution" / "models"
DEMO = ROOT / "iot-edge-solution" / "media" / "demo.mp4"


def uptime() -> str:
    """`uptime`'s line (the load averages), or /proc/loadavg where the command is missing."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return Path("/proc/loadavg").read_text(encoding="ascii").strip()


def rss_mb() -> float:
    """The process's resident set size now, in MB (Linux /proc)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Meter(BaseConsumer):
    """Counts results per camera and frame-to-result latencies, from `start()` of the measured window on."""

    name = "meter"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counting = False
        self.counts: dict[str, int] = {}
        self.latencies_ms: list[float] = []

    def begin(self) -> None:
        """Start the measured window."""
        with self._lock:
            self.counts.clear()
            self.latencies_ms.clear()
            self.counting = True

    def handle(self, frame: Frame, result: TaskResult) -> None:
        now = time.monotonic()
        with self._lock:
            if self.counting:
                self.counts[frame.camera] = self.counts.get(frame.camera, 0) + 1
                self.latencies_ms.append((now - frame.timestamp) * 1000)


def _engine_rate(task: Task, batches: list[dict[str, np.ndarray]], batch: int, callers: int, seconds: float) -> float:
    """Frames per second with `callers` threads each running batches on the same engine for `seconds`."""
    runs = [0] * callers
    deadline = time.perf_counter() + seconds

    def call(slot: int) -> None:
        while time.perf_counter() < deadline:
            task.engine.infer(batches[(runs[slot] + slot) % 2])
            runs[slot] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=call, args=(slot,)) for slot in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(runs) * batch / (time.perf_counter() - started)


def engine_alone(task_for: dict[int, Task], video: Path, batch: int, seconds: float, cpus: int) -> dict[str, Any]:
    """Frames per second of the engine alone on stacked batches of `batch` frames, per intra-op thread count and
    number of callers at once (1 and 2: the pipeline runs two rounds at once on files); the best of them."""
    rates: dict[str, float] = {}
    for threads, task in task_for.items():
        with open_source(str(video), SourceOptions(loop=True)) as source:
            tensors = [task.pre_process(source.read().image)[0] for _ in range(batch * 2)]
        name = task.manifest.input.name
        batches = [{name: np.concatenate([t[name] for t in tensors[i : i + batch]], axis=0)} for i in (0, batch)]
        task.engine.infer(batches[0])  # warm-up
        for callers in range(1, min(2, cpus) + 1):
            rates[f"{threads}t{callers}c"] = _engine_rate(task, batches, batch, callers, seconds)
    best = max(rates, key=lambda k: rates[k])
    return {
        "best_fps": round(rates[best], 2),
        "best": best,
        "fps_by_threads_and_callers": {k: round(v, 2) for k, v in rates.items()},
    }


def run_cameras(  # pylint: disable=too-many-locals,too-many-arguments,too-many-positional-arguments
    task: Task, video: Path, cameras: int, max_batch: int, seconds: float, workers: int = 2
) -> dict[str, Any]:
    """`cameras` cameras on `video` through one pipeline; figures over `seconds` after a warm-up."""
    before = rss_mb()
    meter = Meter()
    sources = [(f"cam{i}", open_source(str(video), SourceOptions(loop=True))) for i in range(cameras)]
    options = MultiCameraOptions(max_batch=min(cameras, max_batch), inference_workers=workers)
    pipeline = MultiCameraPipeline(sources, task, [meter], options)
    pipeline.start()
    try:
        time.sleep(max(1.5, seconds / 4))  # warm-up: open, first batches
        meter.begin()
        started = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - started
        with meter._lock:  # pylint: disable=protected-access
            counts = dict(meter.counts)
            latencies = list(meter.latencies_ms)
        during = rss_mb()
    finally:
        pipeline.close()
    if pipeline.error is not None:
        raise pipeline.error
    per_camera = [counts.get(f"cam{i}", 0) / elapsed for i in range(cameras)]
    total = sum(counts.values())
    return {
        "cameras": cameras,
        "batch": min(cameras, max_batch),
        "inference_workers": pipeline.inference_workers,  # as started: 1 unless the engine takes concurrent calls
        "aggregate_fps": round(total / elapsed, 2),
        "per_camera_fps_min": round(min(per_camera), 2),
        "per_camera_fps_max": round(max(per_camera), 2),
        "slowest_to_fastest": round(min(per_camera) / max(per_camera), 3) if max(per_camera) else 0.0,
        "p95_latency_ms": round(float(np.percentile(latencies, 95)), 1) if latencies else None,
        "rss_mb": round(during, 1),
        "rss_before_mb": round(before, 1),
    }


def _camera_process(  # pylint: disable=too-many-arguments,too-many-positional-arguments
    model_name: str, threads: int, video: str, cameras: int, max_batch: int, seconds: float, workers: int, answer
):
    """In a fresh process: load the model, run `cameras` cameras (run_cameras), send the row back."""
    model = ModelRepository(MODELS).load(model_name)
    task = build_task(model, threads=threads, max_batch=min(cameras, max_batch))
    loaded = rss_mb()
    try:
        row = run_cameras(task, Path(video), cameras, max_batch, seconds, workers)
        row["rss_model_loaded_mb"] = round(loaded, 1)
        answer.send(row)
    except Exception as e:  # pylint: disable=broad-exception-caught  # reported to the parent, which raises
        answer.send({"error": f"{type(e).__name__}: {e}"})
    finally:
        task.engine.close()
        answer.close()


def run_cameras_in_own_process(args: argparse.Namespace, video: Path, cameras: int, threads: int) -> dict[str, Any]:
    """run_cameras in a fresh process (spawned): its RSS is that configuration's alone."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(
        target=_camera_process,
        args=(args.model, threads, str(video), cameras, args.max_batch, args.seconds, args.inference_workers, send),
    )
    process.start()
    send.close()
    try:
        row = receive.recv()
    except EOFError as e:
        raise RuntimeError(f"the process running {cameras} cameras ended without figures") from e
    finally:
        process.join()
    if "error" in row:
        raise RuntimeError(f"{cameras} cameras on {video.name}: {row['error']}")
    return row


def bench_video(
    name: str, video: Path, tasks: dict[int, Task], counts: list[int], args: argparse.Namespace
) -> dict[str, Any]:
    """Every camera count on one video, each against the engine alone at the same batch size."""
    rows = []
    engine: dict[int, dict[str, Any]] = {}
    for cameras in counts:
        batch = min(cameras, args.max_batch)
        if batch not in engine:
            engine[batch] = engine_alone(tasks, video, batch, args.engine_seconds, available_cpus())
        row = run_cameras_in_own_process(args, video, cameras, args.threads or concurrent_call_threads())
        row["rss_own_process"] = True
        row["engine_alone_best_fps"] = engine[batch]["best_fps"]
        row["ratio_to_engine_best"] = round(row["aggregate_fps"] / engine[batch]["best_fps"], 3)
        rows.append(row)
        print(json.dumps({"video": name, **row}), file=sys.stderr, flush=True)
    base = rows[0]
    for row in rows[1:]:
        added = row["cameras"] - base["cameras"]
        row["rss_per_added_camera_mb"] = round((row["rss_mb"] - base["rss_mb"]) / added, 1) if added else None
    return {"path": str(video.relative_to(ROOT)), "runs": rows, "engine_alone": engine}


def main(argv: list[str]) -> int:  # pylint: disable=too-many-locals  # the run's set-up in one place
    """Run the bench; print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--cameras", default="1,2,4,8", help="camera counts, comma-separated")
    parser.add_argument("--videos", default="demo,720p", help="demo and/or 720p")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per configuration")
    parser.add_argument("--engine-seconds", type=float, default=3.0, help="seconds per engine-alone figure")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument(
        "--threads", type=int, default=0, help="pipeline intra-op threads; 0: the classifier's default for files"
    )
    parser.add_argument(
        "--inference-workers",
        type=int,
        default=MultiCameraOptions.inference_workers,
        help="rounds in inference at once",
    )
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)

    counts = [int(c) for c in args.cameras.split(",")]
    videos = {"demo": DEMO, "720p": None}
    chosen = [v.strip() for v in args.videos.split(",")]
    if "720p" in chosen:
        videos["720p"] = make_video()
    cpus = available_cpus()
    model = ModelRepository(MODELS).load(args.model)
    top_batch = min(max(counts), args.max_batch)
    pipeline_threads = args.threads or concurrent_call_threads()
    tasks = {t: build_task(model, threads=t, max_batch=top_batch) for t in range(1, cpus + 1)}
    report: dict[str, Any] = {
        "model": model.ref,
        "cpus": cpus,
        "pipeline_threads": pipeline_threads,
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "uptime_start": uptime(),
        "videos": {},
    }
    for name in chosen:
        video = videos[name]
        assert video is not None
        report["videos"][name] = bench_video(name, video, tasks, counts, args)
    report["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    report["uptime_end"] = uptime()
    for built in tasks.values():
        built.engine.close()
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
