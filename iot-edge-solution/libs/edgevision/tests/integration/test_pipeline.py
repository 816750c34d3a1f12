"""The capture -> inference -> consumers pipeline, with the real classification model on real video files."""

from __future__ import annotations

import io
import os
import sys
import threading
import time
from typing import Any

import numpy as np
import pytest

from edgevision.frames import Frame, FrameSource, FrameSourceError, SourceOptions, open_source
from edgevision.models import ModelRepository
from edgevision.pipeline import BaseConsumer, ConsoleReporter, Pipeline, PipelineOptions, PipelineStats, format_summary
from edgevision.vision import build_task


@pytest.fixture(scope="module")
def model(models_dir):
    """The bundled classification model."""
    return ModelRepository(models_dir).load("efficientnet-lite0")


@pytest.fixture()
def task(model):
    """A fresh task (its engine is closed by the pipeline)."""
    return build_task(model, threads=1)


def gradient_frames(count: int, width: int = 320, height: int = 240) -> list[np.ndarray]:
    """Distinct synthetic frames."""
    frames = []
    for i in range(count):
        frame = np.zeros((height, width, 3), np.uint8)
        frame[:, :, 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
        frame[:, :, 1] = (i * 20) % 256
        frame[:, :, 2] = np.linspace(255, 0, height, dtype=np.uint8)[:, None]
        frames.append(frame)
    return frames


class Collector(BaseConsumer):
    """A consumer that records frame indexes and its lifecycle; it can be slow or always fail."""

    def __init__(self, delay_s: float = 0.0, fail: bool = False) -> None:
        self.indexes: list[int] = []
        self.delay_s = delay_s
        self.fail = fail
        self.name = f"collector-{id(self)}"
        self.events: list[str] = []

    def start(self) -> None:
        self.events.append("start")

    def close(self) -> None:
        self.events.append("close")

    def handle(self, frame: Frame, result: Any) -> None:
        if self.fail:
            raise RuntimeError("consumer bug")
        time.sleep(self.delay_s)
        self.indexes.append(frame.index)


class InMemoryCamera(FrameSource):
    """A stand-in for a live camera: yields generated frames as fast as asked, like a camera faster than the
    model. (Cameras cannot be attached here; the real live sources are tested in the frames tests.)"""

    live = True

    def __init__(self, frames: list[np.ndarray], fail_after: int | None = None) -> None:
        super().__init__("in-memory camera")
        self._frames = frames
        self._index = 0
        self._closed = threading.Event()
        self._fail_after = fail_after

    def open(self) -> None:
        self._closed.clear()

    def read(self) -> Frame:
        if self._closed.is_set():
            raise FrameSourceError("source closed")
        if self._fail_after is not None and self._index >= self._fail_after:
            raise FrameSourceError("camera unplugged")
        time.sleep(0.001)
        frame = Frame(self._frames[self._index % len(self._frames)], self._index, time.monotonic(), "mem")
        self._index += 1
        return frame

    def close(self) -> None:
        self._closed.set()

    @property
    def stats(self) -> dict[str, Any]:
        return {"frames_read": self._index}


def test_every_frame_of_a_file_in_order(task, make_video) -> None:
    video = make_video(gradient_frames(12))
    collector = Collector()
    # a queue that holds every result: a loaded machine must not make the fan-out drop any for the collector
    options = PipelineOptions(consumer_queue_size=16)
    pipeline = Pipeline(open_source(str(video), SourceOptions(loop=False)), task, [collector], options)
    stats = pipeline.run()
    assert collector.indexes == list(range(12))
    assert collector.events == ["start", "close"]
    snapshot = stats.snapshot()
    assert snapshot["results"] == 12 and snapshot["frames_skipped"] == 0 and snapshot["errors"] == 0
    for stage in ("capture", "preprocess", "inference", "end_to_end", "queue_wait", "inference_idle"):
        assert snapshot[f"{stage}_ms"] > 0, stage
    assert stats.count("queue_wait") == 12 and stats.count("inference_idle") == 12
    assert snapshot["mean_fps"] > 0
    assert "processed 12 frames" in format_summary(stats, 1.0)


class PriorityProbe(FrameSource):
    """A real video file source that notes the niceness of the thread that reads it."""

    def __init__(self, inner: FrameSource) -> None:
        super().__init__(inner.description, inner.options)
        self.inner = inner
        self.live = inner.live
        self.niceness: set[int] = set()

    def open(self) -> None:
        self.inner.open()

    def read(self) -> Frame:
        self.niceness.add(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return self.inner.read()

    def close(self) -> None:
        self.inner.close()

    @property
    def stats(self) -> dict[str, Any]:
        return self.inner.stats


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux's")
@pytest.mark.parametrize(
    "realtime, capture_nice, raised",
    [(False, 5, 5), (True, 5, 0), (False, 0, 0)],
    ids=["unpaced file: lowered", "paced file: kept", "setting off: kept"],
)
def test_capture_thread_priority(task, make_video, realtime: bool, capture_nice: int, raised: int) -> None:
    """An unpaced file is read at `capture_nice` (decoding fills the engine's idle time); a paced file is read at
    the process's priority, and so is every frame with the setting at 0."""
    base = os.getpriority(os.PRIO_PROCESS, 0)
    source = PriorityProbe(
        open_source(str(make_video(gradient_frames(4))), SourceOptions(loop=False, realtime=realtime))
    )
    options = PipelineOptions(capture_nice=capture_nice)
    Pipeline(source, task, [Collector()], options).run()
    assert source.niceness == {min(19, base + raised)}
    assert os.getpriority(os.PRIO_PROCESS, 0) == base  # the caller's thread is untouched


class ResultCollector(BaseConsumer):
    """Records (frame index, top class, score) of every result."""

    name = "results"

    def __init__(self) -> None:
        self.results: list[tuple[int, str, float]] = []

    def handle(self, frame: Frame, result: Any) -> None:
        top = result.predictions[0]
        self.results.append((frame.index, top.label, top.confidence))


def test_frame_parallel_inference_gives_the_one_worker_results_in_order(task, media) -> None:
    """Two frames in inference at once on the demo video: the same results as one at a time, in frame order."""
    runs = {}
    for workers in (1, 2):
        collector = ResultCollector()
        source = open_source(str(media.path("demo.mp4")), SourceOptions(loop=False))
        options = PipelineOptions(max_results=60, inference_workers=workers, consumer_queue_size=64)
        pipeline = Pipeline(source, task, [collector], options)
        pipeline.run()
        assert pipeline.inference_workers == workers
        runs[workers] = collector.results
    assert [index for index, _, _ in runs[2]] == list(range(60))
    assert [label for _, label, _ in runs[2]] == [label for _, label, _ in runs[1]]
    np.testing.assert_allclose([s for _, _, s in runs[2]], [s for _, _, s in runs[1]], atol=1e-5)


def test_a_live_source_has_one_inference_worker(task) -> None:
    """The newest frame of a live camera is taken by one inference thread: frame-parallel workers are for files."""
    pipeline = Pipeline(InMemoryCamera(gradient_frames(3)), task, [], PipelineOptions(max_results=3))
    pipeline.run()
    assert pipeline.inference_workers == 1


def test_max_results_stops_a_looping_file(task, make_video) -> None:
    video = make_video(gradient_frames(5))
    collector = Collector()
    pipeline = Pipeline(
        open_source(str(video), SourceOptions(loop=True)),
        task,
        [collector],
        PipelineOptions(max_results=13, consumer_queue_size=16),
    )
    pipeline.run()
    assert collector.indexes == list(range(13))  # indexes keep counting across loops


def test_slow_and_failing_consumers_do_not_stall_the_pipeline(task, make_video) -> None:
    video = make_video(gradient_frames(30))
    fast, slow, broken = Collector(), Collector(delay_s=0.2), Collector(fail=True)
    pipeline = Pipeline(
        open_source(str(video), SourceOptions(loop=False)),
        task,
        [fast, slow, broken],
        # one inference thread: results come one at a time, so a queue of 2 is enough for the fast consumer on
        # a loaded machine (two threads can hand over two results at once)
        PipelineOptions(consumer_queue_size=2, inference_workers=1),
    )
    stats = pipeline.run()
    assert stats.results == 30
    assert fast.indexes == list(range(30))
    consumer_stats = pipeline.consumer_stats
    assert consumer_stats[slow.name]["dropped"] > 0
    assert len(slow.indexes) + consumer_stats[slow.name]["dropped"] == 30
    assert consumer_stats[broken.name]["failures"] == 30
    assert slow.indexes == sorted(slow.indexes)


def test_live_source_always_gets_the_newest_frame(task) -> None:
    collector = Collector()
    camera = InMemoryCamera(gradient_frames(4))
    pipeline = Pipeline(camera, task, [collector], PipelineOptions(max_results=15, consumer_queue_size=16))
    assert pipeline.every_frame is False
    pipeline.run()
    assert len(collector.indexes) == 15
    assert collector.indexes == sorted(set(collector.indexes))
    assert pipeline.stats.frames_skipped > 0  # the camera outran the model and old frames were dropped
    assert collector.indexes[-1] > 15


def test_capture_error_ends_the_run_with_that_error(task) -> None:
    pipeline = Pipeline(InMemoryCamera(gradient_frames(2), fail_after=3), task, [])
    with pytest.raises(FrameSourceError, match="camera unplugged"):
        pipeline.run()


def test_stop_from_another_thread(task, make_video) -> None:
    video = make_video(gradient_frames(5))
    pipeline = Pipeline(open_source(str(video), SourceOptions(loop=True)), task, [])
    pipeline.start()
    threading.Timer(0.5, pipeline.stop).start()
    assert pipeline.wait(30), "pipeline did not stop"
    pipeline.close()
    assert pipeline.error is None
    assert pipeline.stats.results > 0


def test_console_reporter_prints_a_line_per_result(task, make_video) -> None:
    stream = io.StringIO()
    stats = PipelineStats()
    video = make_video(gradient_frames(6))
    pipeline = Pipeline(
        open_source(str(video), SourceOptions(loop=False)), task, [ConsoleReporter(stats, stream)], stats=stats
    )
    pipeline.run()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 6
    assert lines[0].startswith("frame      0 | classification: ") and "fps" in lines[0]
