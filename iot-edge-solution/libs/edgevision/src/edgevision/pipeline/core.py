"""Capture thread -> inference thread(s) -> consumers.

Files (every frame): the capture thread reads *and* pre-processes into a short queue, so decoding and
pre-processing overlap with inference, and `inference_workers` threads run frames from it at once where the
engine takes concurrent calls (ONNX Runtime); results reach the consumers in frame order all the same. Live
sources (and files with every_frame off): the capture thread only keeps the newest frame; one inference thread
takes it when ready, pre-processes and runs, so results are never stale."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import cv2
import numpy as np

from edgevision.errors import EdgeVisionError
from edgevision.frames import EndOfStreamError, Frame, FrameSource, FrameSourceError
from edgevision.manager import ModelManager, ServedModel
from edgevision.pipeline.fanout import Consumer, Fanout
from edgevision.pipeline.latest import LatestValue
from edgevision.pipeline.stats import PipelineStats
from edgevision.tasks import Geometry, Task

log = logging.getLogger(__name__)

_END = object()


@dataclass(frozen=True)
class PipelineOptions:
    """How frames flow. `every_frame` None means: every frame for files, the newest for live sources."""

    every_frame: bool | None = None
    queue_size: int = 4
    max_results: int | None = None
    consumer_queue_size: int = 8
    max_consecutive_errors: int = 50
    # OpenCV's own worker threads for decoding and pre-processing. 1 keeps capture on one core and leaves the
    # others to the engine, which is what makes the two stages overlap instead of fighting; None keeps
    # OpenCV's default (all cores). OpenCV's setting is process-wide.
    opencv_threads: int | None = 1
    # Niceness of the capture thread while it reads a file as fast as the engine goes (every frame, not paced):
    # decoding then fills the time the engine's threads leave idle instead of delaying them (an intra-op thread
    # that wakes to find its core taken holds up the whole inference). 0 leaves it at the process's priority.
    # Live and paced sources keep the process's priority: their frames must be read when they come.
    capture_nice: int = 5
    # Frames in inference at once when every frame of a file is processed and the engine runs concurrent calls
    # (ONNX Runtime): a second frame's inference fills the cores while the first one's operators run on fewer
    # threads than there are cores. Results are published in frame order. Live sources always use one.
    inference_workers: int = 2


@dataclass
class _Prepared:
    """A frame pre-processed by `model`, which it holds until its inference is done (a swap in between does not
    feed one model's tensors to another). `error` is set when pre-processing failed."""

    frame: Frame
    model: ServedModel | None
    inputs: dict[str, np.ndarray] | None = None
    geometry: Geometry | None = None
    preprocess_ms: float = 0.0
    error: EdgeVisionError | None = None
    ready_at: float = 0.0  # perf_counter() when it was queued for inference

    def release(self) -> None:
        """Let go of the model (once)."""
        if self.model is not None:
            self.model.release()
            self.model = None


@dataclass
class _InOrder:
    """What the inference threads share to publish results in frame order: frames are numbered as they are taken
    (`take_lock`), and results wait in `finished` until every earlier one is out (`lock`, which also guards the
    error budget and the count towards max_results)."""

    take_lock: threading.Lock = field(default_factory=threading.Lock)
    lock: threading.Lock = field(default_factory=threading.Lock)
    input_ended: threading.Event = field(default_factory=threading.Event)
    taken: int = 0
    next_to_publish: int = 0
    finished: dict[int, tuple[Any, ...]] = field(default_factory=dict)  # each the arguments of `_publish`
    produced: int = 0
    consecutive_errors: int = 0
    workers: int = 1  # inference threads started
    workers_left: int = 0


class PipelineRunner:
    """What the one-camera and the multi-camera pipelines share: run to the end, their consumers' statistics, and
    inference threads whose results are published in the order their work was taken. A subclass has start, wait,
    close, error, stats, its model manager in `models`, a Fanout in `_fanout`, `_stop` and `_done` events and an
    `_InOrder` in `_order`, and publishes one unit of work's outcome in `_publish`."""

    error: BaseException | None
    stats: PipelineStats
    models: ModelManager
    _fanout: Fanout
    _stop: threading.Event
    _done: threading.Event
    _order: _InOrder
    _publish: Callable[..., None]  # one work item's outcome, in order (the order lock held)

    def start(self) -> None:
        """Start capture and inference."""
        raise NotImplementedError

    def wait(self, timeout: float | None = None) -> bool:
        """True once the pipeline has ended (or failed)."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop and release everything; safe to call twice."""
        raise NotImplementedError

    def run(self) -> PipelineStats:
        """start, wait until done, close; re-raises a capture or inference error."""
        self.start()
        try:
            while not self.wait(0.2):
                pass
        finally:
            self.close()
        if self.error is not None:
            raise self.error
        return self.stats

    @property
    def consumer_stats(self) -> dict[str, dict[str, int]]:
        """Per consumer: dropped results and failures."""
        return self._fanout.stats()

    @property
    def inference_workers(self) -> int:
        """How many inference threads run (known once started)."""
        return self._order.workers

    def stop(self) -> None:
        """Ask every thread to finish."""
        raise NotImplementedError

    def _engine_takes_concurrent_calls(self) -> bool:
        """Whether the model in service runs concurrent calls (ONNX Runtime), so two inferences may overlap."""
        current = self.models.current
        return current is not None and bool(getattr(current.task.engine, "concurrent_infer", False))

    def _complete(self, number: int, outcome: tuple[Any, ...]) -> bool:
        """Hand work item `number`'s outcome (the arguments of `_publish`) over; publish every outcome now due, in
        the order the work was taken. False once the pipeline is to stop (max_results, the error budget spent)."""
        with self._order.lock:
            self._order.finished[number] = outcome
            while self._order.next_to_publish in self._order.finished and not self._stop.is_set():
                due = self._order.finished.pop(self._order.next_to_publish)
                self._order.next_to_publish += 1
                self._publish(*due)
            return not self._stop.is_set()

    def _worker_done(self) -> None:
        """The last inference thread to end stops the pipeline, lets go of what is still queued and lets `wait`
        return (a thread that ran out of work leaves the others to publish what they hold)."""
        with self._order.lock:
            self._order.workers_left -= 1
            last = self._order.workers_left <= 0
        if last:
            self.stop()
            self._release_queued()
            self._done.set()

    def _release_queued(self) -> None:
        """Let go of what waits for inference (nothing, unless a subclass queues frames holding a model)."""


class Pipeline(PipelineRunner):
    """Runs the model on frames from `source` and hands each result to every consumer. `task` is a fixed Task
    (its owner closes its engine) or a ModelManager, whose current model is taken per frame (hot swaps)."""

    def __init__(
        self,
        source: FrameSource,
        task: Task | ModelManager,
        consumers: list[Consumer] | None = None,
        options: PipelineOptions | None = None,
        stats: PipelineStats | None = None,
    ) -> None:
        self.source = source
        self.models = task if isinstance(task, ModelManager) else ModelManager.for_task(task)
        self.options = options or PipelineOptions()
        self.stats = stats or PipelineStats()
        self.error: BaseException | None = None
        every = self.options.every_frame
        self.every_frame = (not source.live) if every is None else every
        self._fanout = Fanout(list(consumers or []), self.options.consumer_queue_size)
        self._stop = threading.Event()
        self._done = threading.Event()
        self._queue: queue.Queue | LatestValue = (
            queue.Queue(maxsize=self.options.queue_size) if self.every_frame else LatestValue()
        )
        self._threads = [threading.Thread(target=self._capture_loop, name="capture", daemon=True)]
        self._order = _InOrder()

    @property
    def task(self) -> Task:
        """The task in service now."""
        current = self.models.current
        if current is None:
            raise RuntimeError("the pipeline's model manager has no model in service")
        return current.task

    # -- control ---------------------------------------------------------------------------------------------
    def _worker_count(self) -> int:
        """`inference_workers` for every frame of a file on an engine that takes concurrent calls, else 1."""
        if not self.every_frame or not self._engine_takes_concurrent_calls():
            return 1
        return max(1, self.options.inference_workers)

    def start(self) -> None:
        """Open the source (errors raise here) and start the threads."""
        if self.options.opencv_threads is not None:
            cv2.setNumThreads(self.options.opencv_threads)
        self.source.open()
        self._fanout.start()
        self._order.workers = self._order.workers_left = self._worker_count()
        self._threads += [
            threading.Thread(target=self._inference_loop, name=f"inference-{i}" if i else "inference", daemon=True)
            for i in range(self._order.workers)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Ask every thread to finish; safe from any thread or a signal handler."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the pipeline ends (source exhausted, max_results, stop or error); True when ended."""
        return self._done.wait(timeout)

    def close(self) -> None:
        """Stop, join the threads, drain the consumers and close the source. The task's engine stays open: its
        owner closes it (a model manager may hand the same engine to the next pipeline)."""
        self.stop()
        self.source.close()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(10)
        self._release_queued()
        self._fanout.close()

    def camera_status(self) -> dict[str, dict[str, object]]:
        """The one camera (`default`) in the shape MultiCameraPipeline reports: state, reason, statistics."""
        state, reason = "up", ""
        if self._done.is_set():
            state, reason = ("down", str(self.error)) if self.error is not None else ("ended", "")
        return {
            "default": {"name": "default", "source": self.source.description, "state": state, "reason": reason}
            | self.stats.snapshot()
        }

    # -- threads ---------------------------------------------------------------------------------------------
    def _put(self, item: object) -> bool:
        if isinstance(self._queue, LatestValue):
            self.stats.count_capture(skipped=int(self._queue.put(item)))
            return True
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                self.stats.count_capture()
                return True
            except queue.Full:
                continue
        return False

    def _lower_capture_priority(self) -> None:
        """Lower this (the capture) thread's priority by `capture_nice` (added to its niceness, at most 19) when it
        reads a file unpaced, every frame; the other threads keep theirs."""
        paced = bool(getattr(self.source.options, "realtime", False))
        if not self.options.capture_nice or not self.every_frame or self.source.live or paced:
            return
        try:
            thread = threading.get_native_id()
            niceness = os.getpriority(os.PRIO_PROCESS, thread)
            os.setpriority(os.PRIO_PROCESS, thread, min(19, niceness + self.options.capture_nice))
        except (AttributeError, OSError) as e:  # not Linux, or not allowed: run at the process's priority
            log.debug("capture thread keeps its priority: %s", e)

    def _capture_loop(self) -> None:
        self._lower_capture_priority()
        try:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    frame = self.source.read()
                except EndOfStreamError:
                    log.info("end of %s", self.source.description)
                    break
                self.stats.add_latency("capture", (time.perf_counter() - started) * 1000)
                item: object = frame
                if self.every_frame:
                    item = self._prepare(frame)
                if not self._put(item):
                    if isinstance(item, _Prepared):
                        item.release()
                    break
        except FrameSourceError as e:
            if not self._stop.is_set():
                log.error("frame source failed: %s", e)
                self.error = e
        except BaseException as e:  # pylint: disable=broad-exception-caught
            log.exception("capture thread crashed")
            self.error = e
        finally:
            self._put_end()

    def _put_end(self) -> None:
        if isinstance(self._queue, LatestValue):
            self._queue.put(_END)
            return
        while True:
            try:
                self._queue.put(_END, timeout=0.1)
                return
            except queue.Full:
                if self._stop.is_set() or self._done.is_set():
                    return

    def _prepare(self, frame: Frame) -> _Prepared:
        """Pre-process with the current model, which the result holds; errors travel with it to the inference
        thread, which counts them against the error budget."""
        try:
            model = self.models.acquire()
        except EdgeVisionError as e:
            return _Prepared(frame, None, error=e)
        started = time.perf_counter()
        try:
            inputs, geometry = model.pre_process(frame.image)
        except EdgeVisionError as e:
            model.release()
            return _Prepared(frame, None, error=e)
        done = time.perf_counter()
        elapsed = (done - started) * 1000
        self.stats.add_latency("preprocess", elapsed)
        return _Prepared(frame, model, inputs, geometry, elapsed, ready_at=done)

    def _next_item(self) -> object | None:
        if isinstance(self._queue, LatestValue):
            return self._queue.take(timeout=0.1)
        try:
            return self._queue.get(timeout=0.1)
        except queue.Empty:
            return None

    def _take(self) -> tuple[object | None, int]:
        """The next item and its number in frame order; (None, -1) when none came or the input has ended."""
        with self._order.take_lock:
            if self._order.input_ended.is_set():
                return None, -1
            item = self._next_item()
            if item is _END:
                self._order.input_ended.set()
                return None, -1
            if item is None:
                return None, -1
            number = self._order.taken
            self._order.taken += 1
            return item, number

    def _inference_loop(self) -> None:
        idle_since = time.perf_counter()
        try:
            while not self._stop.is_set() and not self._order.input_ended.is_set():
                item, number = self._take()
                if item is None:
                    continue
                taken = time.perf_counter()
                self.stats.add_latency("inference_idle", (taken - idle_since) * 1000)
                if isinstance(item, _Prepared) and item.ready_at:
                    self.stats.add_latency("queue_wait", (taken - item.ready_at) * 1000)
                prepared = item if isinstance(item, _Prepared) else self._prepare(item)  # type: ignore[arg-type]
                frame = prepared.frame
                try:
                    result, error = self._infer(prepared), None
                except EdgeVisionError as e:
                    result, error = None, e
                if not self._complete(number, (frame, result, error)):
                    break
                idle_since = time.perf_counter()
        except BaseException as e:  # pylint: disable=broad-exception-caught
            log.exception("inference thread crashed")
            self.error = e
            self._stop.set()
        finally:
            self._worker_done()

    def _publish(self, frame: Frame, result: Any, error: EdgeVisionError | None) -> None:
        """One frame's outcome, in order (the order lock held)."""
        if error is not None:
            self._order.consecutive_errors += 1
            self.stats.count_error()
            log.error("frame %d failed: %s", frame.index, error)
            if self._order.consecutive_errors >= self.options.max_consecutive_errors:
                self.error = error
                self._stop.set()
            return
        self._order.consecutive_errors = 0
        now = time.monotonic()
        self.stats.add_latency("inference", result.inference_ms)
        self.stats.add_latency("postprocess", result.postprocess_ms)
        self.stats.add_latency("end_to_end", (now - frame.timestamp) * 1000)
        self.stats.count_result(now)
        self._fanout.publish(frame, result)
        self._order.produced += 1
        if self.options.max_results and self._order.produced >= self.options.max_results:
            self._stop.set()

    @staticmethod
    def _infer(prepared: _Prepared):
        """Inference and post-processing of one prepared frame on the model that pre-processed it: together with
        pre-processing one guarded step, whose EdgeVisionError counts against the error budget."""
        try:
            if prepared.error is not None:
                raise prepared.error
            assert prepared.model is not None and prepared.inputs is not None and prepared.geometry is not None
            return prepared.model.infer(prepared.inputs, prepared.geometry, prepared.preprocess_ms)
        finally:
            prepared.release()

    def _release_queued(self) -> None:
        """Let go of the models held by frames pre-processed but never inferred."""
        if isinstance(self._queue, LatestValue):
            return
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Prepared):
                item.release()
