"""Throughput of the pipeline against the engine alone, measured in one run (ratios survive a noisy machine).

Every figure is taken in the same rounds: each round measures the engine alone and the pipeline at every thread
count from 1 to the CPU count, then the naive sequential loop, so a change in background load hits them alike;
each figure is the median over the rounds. Rates are steady-state: the pipeline is timed from its
`warmup`-th result to its last, so opening the video and starting the threads are not counted.
"""

from __future__ import annotations

import dataclasses
import statistics
import threading
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
        self.workers = 1  # the pipeline's inference threads

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


def _inference_only_fps(task: Task, prepared: list[dict], frames: int, callers: int = 1) -> float:
    """Engine only, on pre-processed frames of the same video held in memory, `callers` threads calling at once
    (each `frames // callers` times; ONNX Runtime sessions run concurrent calls)."""
    each = max(1, frames // callers)

    def call(offset: int) -> None:
        for i in range(each):
            task.engine.infer(prepared[(offset + i) % len(prepared)])

    if callers == 1:
        started = time.perf_counter()
        call(0)
        return each / (time.perf_counter() - started)
    threads = [threading.Thread(target=call, args=(c * 7,)) for c in range(callers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return each * callers / (time.perf_counter() - started)


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
    if isinstance(stats, _SteadyStats):
        stats.workers = pipeline.inference_workers
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
    run_options = dataclasses.replace(options, every_frame=True, max_results=warmup + frames)
    ended = _run_pipeline(task, video, run_options, stats)
    if stats.results != warmup + frames or stats.frames_skipped or stats.errors:
        raise RuntimeError(f"the pipeline did not process every frame: {stats.snapshot()}")
    if totals is not None:
        _merge_stage_times(totals, stats)
        totals.workers = stats.workers  # type: ignore[attr-defined]
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
    max_callers: int = 1  # the engine alone is also measured with 2 .. max_callers threads calling at once

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
    # the engine alone with several callers at once, by (threads, callers); callers >= 2
    engine_callers: dict[tuple[int, int], _Figures] = field(default_factory=dict)
    # the default pipeline with the capture thread at the process's priority (capture_nice 0)
    capture_nice_off: _Figures = field(default_factory=_Figures)
    # the default pipeline with one inference thread (inference_workers 1)
    one_worker: _Figures = field(default_factory=_Figures)
    workers: int = 1  # the default pipeline's inference threads


def _measure(
    tasks: dict[int, Task], default_threads: int, video: Path, plan: BenchPlan, options: PipelineOptions
) -> _Measured:
    """Every configuration once per round, in the same order each round."""
    prepared = _prepared_frames(tasks[default_threads], video, min(32, plan.per_round))
    for task in tasks.values():
        for i in range(plan.warmup):
            task.engine.infer(prepared[i % len(prepared)])
    measured = _Measured({t: _Figures() for t in tasks}, {t: _Figures() for t in tasks})
    callers = range(2, plan.max_callers + 1)
    measured.engine_callers = {(t, c): _Figures() for t in tasks for c in callers}
    nice_off = dataclasses.replace(options, capture_nice=0)
    one_worker = dataclasses.replace(options, inference_workers=1)
    for _ in range(plan.rounds):
        for threads, task in tasks.items():
            measured.engine[threads].rates.append(_inference_only_fps(task, prepared, plan.per_round))
            for count in callers:
                measured.engine_callers[(threads, count)].rates.append(
                    _inference_only_fps(task, prepared, plan.per_round, count)
                )
            totals = measured.stages if threads == default_threads else None
            measured.pipeline[threads].rates.append(
                _pipeline_fps(task, video, plan.per_round, plan.warmup, options, totals)
            )
        if options.capture_nice:
            measured.capture_nice_off.rates.append(
                _pipeline_fps(tasks[default_threads], video, plan.per_round, plan.warmup, nice_off)
            )
        if options.inference_workers > 1:
            measured.one_worker.rates.append(
                _pipeline_fps(tasks[default_threads], video, plan.per_round, plan.warmup, one_worker)
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
            "capture_nice": options.capture_nice,
            "inference_workers": options.inference_workers,
            "video_realtime": False,
        },
    }
    measured.workers = getattr(measured.stages, "workers", 1)
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
        **_machine_best(measured, default_fps),
        **_where_time_goes(measured.stages, default_fps, measured.workers),
        **_capture_nice_figures(measured, default_fps),
    }


def _machine_best(measured: _Measured, default_fps: float) -> dict[str, Any]:
    """The engine alone at its best over thread counts *and* concurrent callers (one caller per thread count is
    `inference_only_best_fps`), and the default pipeline against it: the machine's best inference-only rate."""
    rates = {(t, 1): f.median for t, f in measured.engine.items()}
    rates.update({key: f.median for key, f in measured.engine_callers.items()})
    (threads, callers), best = max(rates.items(), key=lambda item: item[1])
    return {
        "inference_only_by_threads_and_callers": {
            f"{t} threads, {c} callers": round(r, 2) for (t, c), r in rates.items()
        },
        "inference_only_machine_best_fps": round(best, 2),
        "inference_only_machine_best_config": f"{threads} threads, {callers} callers",
        "ratio_to_machine_best": round(default_fps / best, 3) if best else 0.0,
    }


def _where_time_goes(stages: PipelineStats, fps: float, workers: int) -> dict[str, Any]:
    """Per frame of the default pipeline: what each thread spent its time on, against the frame interval.

    The capture thread decodes and pre-processes; each of the `workers` inference threads runs the engine and
    post-processes, and waits when capture has not delivered (`inference_idle`); `queue_wait` is how long a
    pre-processed frame waited for an inference thread (a full queue: capture is ahead, as it should be). With
    two workers each one has two frame intervals per frame (the busy share is per worker)."""
    interval = 1000 / fps if fps else 0.0

    def mean(stage: str) -> float:
        return round(stages.mean_ms(stage), 3)

    capture = mean("capture") + mean("preprocess")
    inference = mean("inference") + mean("postprocess")
    return {
        "where_time_goes_ms": {
            "frame_interval": round(interval, 3),
            "inference_workers": workers,
            "capture_thread": {"decode": mean("capture"), "preprocess": mean("preprocess"), "busy": round(capture, 3)},
            "inference_thread": {
                "inference": mean("inference"),
                "postprocess": mean("postprocess"),
                "idle_waiting_for_a_frame": mean("inference_idle"),
                "busy": round(inference, 3),
            },
            "queue_wait": mean("queue_wait"),
        },
        "capture_thread_busy_share": round(capture / interval, 3) if interval else 0.0,
        "inference_thread_busy_share": round(inference / (interval * workers), 3) if interval else 0.0,
    }


def _capture_nice_figures(measured: _Measured, default_fps: float) -> dict[str, Any]:
    """The default pipeline against itself without the lower capture priority, and with one inference thread."""
    figures: dict[str, Any] = {}
    off, one = measured.capture_nice_off.median, measured.one_worker.median
    if off:
        figures.update(
            {"pipeline_capture_nice_off_fps": round(off, 2), "capture_nice_gain": round(default_fps / off, 3)}
        )
    if one:
        figures.update(
            {"pipeline_one_worker_fps": round(one, 2), "inference_workers_gain": round(default_fps / one, 3)}
        )
    return figures
