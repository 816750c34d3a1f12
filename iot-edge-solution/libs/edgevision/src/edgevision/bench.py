"""Throughput of the pipeline against the engine alone, measured in one run (ratios survive a noisy machine)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from edgevision.frames import SourceOptions, open_source
from edgevision.pipeline import Pipeline, PipelineOptions, PipelineStats
from edgevision.tasks import Task

def _prepared_frames(task: Task, video: Path, count: int) -> list[dict]:
    prepared = []
    with open_source(str(video), SourceOptions(loop=True)) as source:
        for _ in range(count):
            prepared.append(task.pre_process(source.read().image)[0])
    return prepared


def _inference_only_seconds(task: Task, prepared: list[dict], frames: int) -> float:
    """Engine only, on pre-processed frames of the same video held in memory."""
    started = time.perf_counter()
    for i in range(frames):
        task.engine.infer(prepared[i % len(prepared)])
    return time.perf_counter() - started


def _sequential_seconds(task: Task, video: Path, frames: int) -> float:
    """The naive loop: read -> pre-process -> infer -> post-process, one frame at a time on one thread."""
    with open_source(str(video), SourceOptions(loop=True)) as source:
        started = time.perf_counter()
        for _ in range(frames):
            task.run(source.read().image)
        return time.perf_counter() - started


def _pipeline_seconds(task: Task, video: Path, frames: int, stats: PipelineStats) -> float:
    """Every frame of the video through the pipeline, from start to the last result."""
    source = open_source(str(video), SourceOptions(loop=True))
    pipeline = Pipeline(source, task, [], PipelineOptions(every_frame=True, max_results=frames), stats=stats)
    started = time.perf_counter()
    pipeline.start()
    try:
        pipeline.wait()
        elapsed = time.perf_counter() - started
    finally:
        pipeline.close()
    if pipeline.error is not None:
        raise pipeline.error
    return elapsed


def bench_pipeline(task: Task, video: Path, frames: int = 300, warmup: int = 10, rounds: int = 3) -> dict[str, Any]:
    """Pipeline FPS, engine-only FPS and a naive sequential loop's FPS, all with the same task, engine and thread
    settings. The three are interleaved in `rounds` rounds of frames/rounds each, so a change in background load
    hits all three alike."""
    per_round = max(1, frames // rounds)
    prepared = _prepared_frames(task, video, min(32, per_round))
    for i in range(warmup):
        task.engine.infer(prepared[i % len(prepared)])
    stats = PipelineStats()
    totals = {"pipeline": 0.0, "engine": 0.0, "sequential": 0.0}
    for _ in range(rounds):
        totals["engine"] += _inference_only_seconds(task, prepared, per_round)
        totals["pipeline"] += _pipeline_seconds(task, video, per_round, stats)
        totals["sequential"] += _sequential_seconds(task, video, per_round)
    counted = per_round * rounds
    pipeline_fps = counted / totals["pipeline"]
    inference_only = counted / totals["engine"]
    sequential_fps = counted / totals["sequential"]
    snapshot = stats.snapshot()
    return {
        "model": task.model.ref,
        "backend": task.engine.name,
        "threads": task.engine.config.intra_op_threads,
        "video": str(video),
        "frames": counted,
        "rounds": rounds,
        "pipeline_fps": round(pipeline_fps, 2),
        "inference_only_fps": round(inference_only, 2),
        "ratio": round(pipeline_fps / inference_only, 3),
        "sequential_fps": round(sequential_fps, 2),
        "sequential_ratio": round(sequential_fps / inference_only, 3),
        "stage_mean_ms": {k.removesuffix("_ms"): v for k, v in snapshot.items() if k.endswith("_ms")},
    }
