"""Throughput of the pipeline against the engine alone, measured in one run (ratios survive a noisy machine)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from edgevision.frames import EndOfStreamError, SourceOptions, open_source
from edgevision.pipeline import Pipeline, PipelineOptions
from edgevision.tasks import Task

log = logging.getLogger(__name__)


def _inference_only_fps(task: Task, video: Path, frames: int, distinct: int = 32) -> float:
    """Engine only, on pre-processed frames of the same video held in memory."""
    prepared = []
    with open_source(str(video), SourceOptions(loop=True)) as source:
        for _ in range(min(distinct, frames)):
            prepared.append(task.pre_process(source.read().image)[0])
    started = time.perf_counter()
    for i in range(frames):
        task.engine.infer(prepared[i % len(prepared)])
    return frames / (time.perf_counter() - started)


def _sequential_fps(task: Task, video: Path, frames: int) -> float:
    """The naive loop: read -> pre-process -> infer -> post-process, one frame at a time on one thread."""
    with open_source(str(video), SourceOptions(loop=True)) as source:
        started = time.perf_counter()
        for _ in range(frames):
            task.run(source.read().image)
        return frames / (time.perf_counter() - started)


def _pipeline_run(task: Task, video: Path, frames: int) -> tuple[float, dict[str, Any]]:
    source = open_source(str(video), SourceOptions(loop=True))
    pipeline = Pipeline(source, task, [], PipelineOptions(every_frame=True, max_results=frames))
    pipeline.start()
    try:
        pipeline.wait()
    finally:
        pipeline.stop()
        source.close()
    if pipeline.error is not None:
        raise pipeline.error
    snapshot = pipeline.stats.snapshot()
    return float(snapshot["mean_fps"]), snapshot


def bench_pipeline(task: Task, video: Path, frames: int = 300, warmup: int = 10) -> dict[str, Any]:
    """Pipeline FPS, engine-only FPS (measured before and after, averaged) and a naive sequential loop's FPS,
    all with the same task, engine and thread settings."""
    with open_source(str(video), SourceOptions(loop=True)) as source:
        try:
            image = source.read().image
        except EndOfStreamError as e:  # pragma: no cover - a looping source does not end
            raise ValueError(f"{video} has no frames") from e
    for _ in range(warmup):
        task.run(image)
    engine_before = _inference_only_fps(task, video, frames)
    pipeline_fps, snapshot = _pipeline_run(task, video, frames)
    sequential_fps = _sequential_fps(task, video, frames)
    engine_after = _inference_only_fps(task, video, frames)
    inference_only = (engine_before + engine_after) / 2
    return {
        "model": task.model.ref,
        "backend": task.engine.name,
        "threads": task.engine.config.intra_op_threads,
        "video": str(video),
        "frames": frames,
        "pipeline_fps": round(pipeline_fps, 2),
        "inference_only_fps": round(inference_only, 2),
        "ratio": round(pipeline_fps / inference_only, 3),
        "sequential_fps": round(sequential_fps, 2),
        "sequential_ratio": round(sequential_fps / inference_only, 3),
        "inference_only_fps_before_after": [round(engine_before, 2), round(engine_after, 2)],
        "stage_mean_ms": {k.removesuffix("_ms"): v for k, v in snapshot.items() if k.endswith("_ms")},
    }
