"""Throughput of the pipeline against the engine alone, measured in one run (ratios survive a noisy machine).

Every figure is taken in the same rounds: each round measures the engine alone and the pipeline at every thread
count from 1 to the CPU count, then the naive sequential loop, so a change in background load hits them alike;
each figure is the median over the rounds. Rates are steady-state: the pipeline is timed from its
`warmup`-th result to its last, so opening the video and starting the threads are not counted.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgevision.config import available_cpus
from edgevision.frames import SourceOptions, open_source
from edgevision.models import LoadedModel
from edgevision.pipeline import STAGES, Pipeline, PipelineOptions, PipelineStats
from edgevision.tasks import Task
from edgevision.vision import backend_for_model, build_task


class _SteadyStats(PipelineStats):
    """PipelineStats that also note when result number `mark` arrived, to time the steady state from there."""

    def __init__(self, mark: int) -> None:
        super().__init__()
        self.mark = mark
        self.marked_perf: float | None = None

    def count_result(self, now: float | None = None) -> None:
        super().count_result(now)
        if self.results == self.mark:
            self.marked_perf = time.perf_counter()

    def steady_fps(self, ended: float) -> float:
        """Results per second from the marked result to `ended` (a perf_counter time)."""
        if self.marked_perf is None or ended <= self.marked_perf:
            return 0.0
        return (self.results - self.mark) / (ended - self.marked_perf)


@dataclass
class _Figures:
    """Per-round rates of one measured configuration; `median` is what the report prints."""

    rates: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        """The median rate over the rounds."""
        return statistics.median(self.rates) if self.rates else 0.0


def _prepared_frames(task: Task, video: Path, count: int) -> list[dict]:
    with open_source(str(video), SourceOptions(loop=True)) as source:
        return [task.pre_process(source.read().image)[0] for _ in range(count)]


def _inference_only_fps(task: Task, prepared: list[dict], frames: int) -> float:
    """Engine only, on pre-processed frames of the same video held in memory, one thread calling."""
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


def _run_pipeline(
    task: Task, video: Path, options: PipelineOptions, stats: PipelineStats, source_options: SourceOptions | None = None
) -> float:
    """Run the pipeline until options.max_results; returns perf_counter() at its end."""
    source = open_source(str(video), source_options or SourceOptions(loop=True))
    pipeline = Pipeline(source, task, [], options, stats=stats)
    pipeline.start()
    try:
        pipeline.wait()
        ended = time.perf_counter()
    finally:
        pipeline.close()
    if pipeline.error is not None:
        raise pipeline.error
    return ended


def _pipeline_fps(
    task: Task, video: Path, frames: int, warmup: int, options: PipelineOptions, totals: PipelineStats | None = None
) -> float:
    """Every frame of the video through the pipeline with `options`; steady-state results per second."""
    stats = _SteadyStats(mark=warmup)
    run_options = PipelineOptions(
        every_frame=True,
        max_results=warmup + frames,
        queue_size=options.queue_size,
        consumer_queue_size=options.consumer_queue_size,
        opencv_threads=options.opencv_threads,
    )
    ended = _run_pipeline(task, video, run_options, stats)
    if stats.results != warmup + frames or stats.frames_skipped or stats.errors:
        raise RuntimeError(f"the pipeline did not process every frame: {stats.snapshot()}")
    if totals is not None:
        _merge_stage_times(totals, stats)
    return stats.steady_fps(ended)


def _merge_stage_times(totals: PipelineStats, stats: PipelineStats) -> None:
    snapshot = stats.snapshot()
    for key, value in snapshot.items():
        if key.endswith("_ms") and value:
            totals.add_latency(key.removesuffix("_ms"), float(value))


def live_latency(task: Task, video: Path, results: int = 45, options: PipelineOptions | None = None) -> dict:
    """A live source at the default settings: the video read at its own frame rate (like a camera), the newest
    frame taken each time. End-to-end is capture -> result, averaged over `results` results."""
    base = options or PipelineOptions()
    stats = PipelineStats()
    run_options = PipelineOptions(
        every_frame=False,
        max_results=results,
        queue_size=base.queue_size,
        consumer_queue_size=base.consumer_queue_size,
        opencv_threads=base.opencv_threads,
    )
    with open_source(str(video), SourceOptions(loop=True)) as probe:
        source_fps = probe.fps
    _run_pipeline(task, video, run_options, stats, SourceOptions(loop=True, realtime=True))
    snapshot = stats.snapshot()
    return {
        "source_fps": source_fps,
        "results": snapshot["results"],
        "results_fps": snapshot["mean_fps"],
        "end_to_end_ms": snapshot["end_to_end_ms"],
        "preprocess_ms": snapshot["preprocess_ms"],
        "inference_ms": snapshot["inference_ms"],
    }


def thread_counts(backend: str, default_threads: int, cpus: int | None = None) -> list[int]:
    """The intra-op thread counts to measure: 1 .. CPU count (and the default, if outside that) for ONNX
    Runtime and LiteRT; only the default for backends that do not use CPU threads."""
    if backend not in ("onnxruntime", "tflite"):
        return [default_threads]
    cpus = cpus or available_cpus()
    return sorted(set(range(1, cpus + 1)) | {default_threads})


@dataclass(frozen=True)
class BenchPlan:
    """How much to measure: `frames` per configuration over all `rounds`, `warmup` results before timing a
    pipeline, `live_results` results of the live-source run."""

    frames: int = 300
    rounds: int = 3
    warmup: int = 10
    live_results: int = 45

    @property
    def per_round(self) -> int:
        """Frames per configuration and round."""
        return max(1, self.frames // self.rounds)


@dataclass
class _Measured:
    engine: dict[int, _Figures]
    pipeline: dict[int, _Figures]
    sequential: _Figures = field(default_factory=_Figures)
    stages: PipelineStats = field(default_factory=PipelineStats)


def _measure(
    tasks: dict[int, Task], default_threads: int, video: Path, plan: BenchPlan, options: PipelineOptions
) -> _Measured:
    """Every configuration once per round, in the same order each round."""
    prepared = _prepared_frames(tasks[default_threads], video, min(32, plan.per_round))
    for task in tasks.values():
        for i in range(plan.warmup):
            task.engine.infer(prepared[i % len(prepared)])
    measured = _Measured({t: _Figures() for t in tasks}, {t: _Figures() for t in tasks})
    for _ in range(plan.rounds):
        for threads, task in tasks.items():
            measured.engine[threads].rates.append(_inference_only_fps(task, prepared, plan.per_round))
            totals = measured.stages if threads == default_threads else None
            measured.pipeline[threads].rates.append(
                _pipeline_fps(task, video, plan.per_round, plan.warmup, options, totals)
            )
        measured.sequential.rates.append(_sequential_fps(tasks[default_threads], video, plan.per_round))
    return measured


def bench_pipeline(
    model: LoadedModel,
    video: Path,
    default_threads: int = 1,
    backend: str = "onnxruntime",
    spinning: bool = False,
    options: PipelineOptions | None = None,
    plan: BenchPlan | None = None,
) -> dict[str, Any]:
    """The engine alone and the pipeline at every thread count, the naive loop, and a live source's latency.

    `default_threads`, `spinning` and `options` are the settings under test (the module's defaults unless the
    caller overrides them). Printed figures:
    - pipeline_fps, inference_only_fps, ratio, sequential_fps, sequential_ratio, stage_mean_ms: at the default
      thread count (the figures of earlier versions);
    - inference_only_best_fps / _threads: the engine alone at its fastest thread count, and ratio_to_best =
      pipeline_fps / inference_only_best_fps: how much of what the model can do here the default pipeline gets;
    - pipeline_best_fps / _threads and default_to_best_pipeline: whether another thread count would beat the
      default pipeline;
    - by_threads: the two rates at each thread count; live: end-to-end latency for a live source.
    """
    options = options or PipelineOptions()
    plan = plan or BenchPlan()
    backend = backend_for_model(model, backend)
    tasks = {t: build_task(model, backend, t, spinning=spinning) for t in thread_counts(backend, default_threads)}
    try:
        measured = _measure(tasks, default_threads, video, plan, options)
        live = live_latency(tasks[default_threads], video, plan.live_results, options)
    finally:
        for task in tasks.values():
            task.engine.close()
    report = {
        "model": model.ref,
        "backend": backend,
        "video": str(video),
        "cpu_count": available_cpus(),
        "frames": plan.per_round * plan.rounds,
        "rounds": plan.rounds,
        "threads": default_threads,
        "settings": {
            "intra_op_spinning": spinning,
            "opencv_threads": options.opencv_threads,
            "queue_size": options.queue_size,
        },
    }
    return {**report, **_figures(measured, default_threads), "live": live}


def _figures(measured: _Measured, default_threads: int) -> dict[str, Any]:
    engine, pipeline, sequential = measured.engine, measured.pipeline, measured.sequential.median
    default_fps = pipeline[default_threads].median
    engine_fps = engine[default_threads].median
    best_engine_threads = max(engine, key=lambda t: engine[t].median)
    best_pipeline_threads = max(pipeline, key=lambda t: pipeline[t].median)
    best_engine_fps = engine[best_engine_threads].median
    best_pipeline_fps = pipeline[best_pipeline_threads].median
    return {
        "pipeline_fps": round(default_fps, 2),
        "inference_only_fps": round(engine_fps, 2),
        "ratio": round(default_fps / engine_fps, 3),
        "sequential_fps": round(sequential, 2),
        "sequential_ratio": round(sequential / engine_fps, 3),
        "inference_only_best_fps": round(best_engine_fps, 2),
        "inference_only_best_threads": best_engine_threads,
        "ratio_to_best": round(default_fps / best_engine_fps, 3),
        "pipeline_best_fps": round(best_pipeline_fps, 2),
        "pipeline_best_threads": best_pipeline_threads,
        "default_to_best_pipeline": round(default_fps / best_pipeline_fps, 3),
        "by_threads": {
            str(t): {"inference_only_fps": round(engine[t].median, 2), "pipeline_fps": round(pipeline[t].median, 2)}
            for t in engine
        },
        "stage_mean_ms": {stage: round(measured.stages.mean_ms(stage), 3) for stage in STAGES},
    }
