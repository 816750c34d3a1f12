"""Several cameras, one engine: a capture thread per camera, one inference thread that batches the newest frame
of each camera into one engine run.

Each camera keeps one slot holding its newest frame (never a backlog): a live camera overwrites it, a video file
waits until inference took it (every frame, at the engine's pace). An inference thread takes at most
`max_batch` frames per round, one per camera, starting after the last camera it served, so a fast camera cannot
starve a slow one. When every camera is a file read unpaced and the engine takes concurrent calls (ONNX
Runtime), two inference threads run rounds at once (`inference_workers`), as the one-camera pipeline runs two
frames; rounds are numbered as they are taken and their results published in that order, so each camera's
results stay in frame order. A camera that cannot open, fails or ends is marked (`down` or `ended`, with the reason) and
the others run on; the pipeline ends when every camera has ended or failed, or on `stop()`."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import cv2

from edgevision.errors import EdgeVisionError
from edgevision.frames import EndOfStreamError, Frame, FrameSource, FrameSourceError
from edgevision.manager import ModelManager, ServedModel
from edgevision.pipeline.core import PipelineRunner, _InOrder
from edgevision.pipeline.fanout import Consumer, Fanout
from edgevision.pipeline.stats import PipelineStats
from edgevision.tasks import Geometry, Task

log = logging.getLogger(__name__)

STARTING, UP, ENDED, DOWN = "starting", "up", "ended", "down"


class AllCamerasDownError(EdgeVisionError):
    """No camera of a multi-camera pipeline could be opened or kept running."""


@dataclass(frozen=True)
class MultiCameraOptions:
    """`max_batch`: the most frames (one per camera) in one engine run; 1 runs frame by frame."""

    max_batch: int = 4
    # once one camera has a frame, how long to wait for the other running cameras' frames to fill the batch
    # (a muxer's batch timeout): a camera whose decode is a little slower still gets its turn in every round
    batch_wait_s: float = 0.01
    consumer_queue_size: int = 8
    max_consecutive_errors: int = 50
    max_results: int | None = None
    opencv_threads: int | None = 1
    # as PipelineOptions.capture_nice: the capture threads of unthrottled files run this much nicer
    capture_nice: int = 5
    # as PipelineOptions.inference_workers: rounds in inference at once when every camera is a file read
    # unpaced and the engine takes concurrent calls; otherwise one
    inference_workers: int = 2


# A file camera's frame pre-processed by its capture thread: the model that did it (its result is used only if
# that model is still the one in service), the inputs, the geometry and the milliseconds it took.
_Prepared = tuple[ServedModel, dict[str, Any], Geometry, float]


class Camera:
    """One named source with its slot, its own statistics and its state."""

    def __init__(self, name: str, source: FrameSource) -> None:
        self.name = name
        self.source = source
        self.stats = PipelineStats()
        self.state = STARTING
        self.reason = ""
        self.pending: Frame | None = None
        self.prepared: _Prepared | None = None  # the pending frame pre-processed (file cameras)
        self.thread: threading.Thread | None = None

    @property
    def finished(self) -> bool:
        """True once the camera has ended or failed for good."""
        return self.state in (ENDED, DOWN)

    def snapshot(self) -> dict[str, Any]:
        """State, reason, description and statistics, JSON-ready."""
        state = self.state
        age = self.source.stats.get("last_frame_age_s") if state == UP else None
        watchdog = self.source.options.watchdog_s
        if state == UP and self.source.live and watchdog and age is not None and age > watchdog:
            state = "stalled"
        return {
            "name": self.name,
            "source": self.source.description,
            "state": state,
            "reason": self.reason,
            **self.stats.snapshot(),
        }


class MultiCameraPipeline(PipelineRunner):  # pylint: disable=too-many-instance-attributes
    """Runs one model (a fixed Task or a ModelManager's current model) on frames from several named sources and
    hands every result, its frame carrying the camera's name, to every consumer. The interface of `Pipeline`:
    start, stop, wait, close, run, stats, error."""

    def __init__(
        self,
        cameras: list[tuple[str, FrameSource]],
        task: Task | ModelManager,
        consumers: list[Consumer] | None = None,
        options: MultiCameraOptions | None = None,
        stats: PipelineStats | None = None,
    ) -> None:
        if not cameras:
            raise ValueError("a multi-camera pipeline needs at least one camera")
        names = [name for name, _ in cameras]
        if len(set(names)) != len(names):
            raise ValueError(f"camera names must be unique, got {names}")
        self.cameras = [Camera(name, source) for name, source in cameras]
        self.models = task if isinstance(task, ModelManager) else ModelManager.for_task(task)
        self.options = options or MultiCameraOptions()
        self.stats = stats or PipelineStats()
        self.error: BaseException | None = None
        self._fanout = Fanout(list(consumers or []), self.options.consumer_queue_size)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._next = 0  # the camera served first in the next round
        self._order = _InOrder()  # rounds are numbered as they are taken (under _cond), published in that order
        self._inference: list[threading.Thread] = []

    # -- control ---------------------------------------------------------------------------------------------
    def _worker_count(self) -> int:
        """`inference_workers` when every camera is a file read unpaced and the engine takes concurrent calls."""
        unpaced = all(not c.source.live and not getattr(c.source.options, "realtime", False) for c in self.cameras)
        return max(1, self.options.inference_workers) if unpaced and self._engine_takes_concurrent_calls() else 1

    def start(self) -> None:
        """Start a capture thread per camera (each opens its own source) and the inference threads."""
        if self.options.opencv_threads is not None:
            cv2.setNumThreads(self.options.opencv_threads)
        self._fanout.start()
        for camera in self.cameras:
            camera.thread = threading.Thread(
                target=self._capture_loop, args=(camera,), name=f"capture-{camera.name}", daemon=True
            )
            camera.thread.start()
        self._order.workers = self._order.workers_left = self._worker_count()
        self._inference = [
            threading.Thread(target=self._inference_loop, name=f"inference-{i}" if i else "inference", daemon=True)
            for i in range(self._order.workers)
        ]
        for thread in self._inference:
            thread.start()

    def stop(self) -> None:
        """Ask every thread to finish; safe from any thread or a signal handler."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the pipeline ends; True when ended."""
        return self._done.wait(timeout)

    def close(self) -> None:
        """Stop, close the sources, join the threads and drain the consumers (the engine stays open)."""
        self.stop()
        for camera in self.cameras:
            camera.source.close()
        for camera in self.cameras:
            if camera.thread is not None and camera.thread.is_alive():
                camera.thread.join(10)
        for thread in self._inference:
            if thread.is_alive():
                thread.join(10)
        self._fanout.close()

    def camera_status(self) -> dict[str, dict[str, Any]]:
        """Per camera, in CAMERAS order: state (starting, up, stalled, ended, down), reason and statistics."""
        return {camera.name: camera.snapshot() for camera in self.cameras}

    @property
    def camera_names(self) -> list[str]:
        """The cameras' names, in CAMERAS order."""
        return [camera.name for camera in self.cameras]

    # -- capture ---------------------------------------------------------------------------------------------
    def _finish(self, camera: Camera, state: str, reason: str) -> None:
        with self._cond:
            camera.state, camera.reason = state, reason
            self._cond.notify_all()

    def _capture_loop(self, camera: Camera) -> None:
        try:
            camera.source.open()
        except FrameSourceError as e:
            log.error("camera %s down: %s", camera.name, e)
            self._finish(camera, DOWN, str(e))
            return
        camera.state = UP
        log.info("camera %s up: %s", camera.name, camera.source.description)
        file_camera = not camera.source.live
        if file_camera and not getattr(camera.source.options, "realtime", False):
            self._lower_priority()
        try:
            while not self._stop.is_set():
                started = time.perf_counter()
                frame = dataclasses.replace(camera.source.read(), camera=camera.name)
                camera.stats.add_latency("capture", (time.perf_counter() - started) * 1000)
                # a file's frame is always used: pre-process it here, in parallel with the engine
                prepared = self._prepare(frame) if file_camera else None
                if not self._hand_over(camera, frame, prepared):
                    break
        except EndOfStreamError:
            log.info("camera %s ended: end of %s", camera.name, camera.source.description)
            self._finish(camera, ENDED, "end of the video")
        except FrameSourceError as e:
            if not self._stop.is_set():
                log.error("camera %s down: %s", camera.name, e)
            self._finish(camera, DOWN, str(e))
        except Exception as e:  # pylint: disable=broad-exception-caught  # one camera never stops the others
            log.exception("camera %s capture crashed", camera.name)
            self._finish(camera, DOWN, f"capture crashed: {e}")

    def _lower_priority(self) -> None:
        """This capture thread's niceness + `capture_nice` (at most 19): decoding a file as fast as the engine
        goes then takes the engine's idle time rather than delaying its threads."""
        if not self.options.capture_nice:
            return
        try:
            thread = threading.get_native_id()
            os.setpriority(
                os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + self.options.capture_nice)
            )
        except (AttributeError, OSError) as e:  # not Linux, or not allowed
            log.debug("capture thread keeps its priority: %s", e)

    def _prepare(self, frame: Frame) -> _Prepared | None:
        """The frame pre-processed by the model in service now; None when there is none or it failed (inference
        then pre-processes it again and reports the error)."""
        model = self.models.current
        if model is None:
            return None
        started = time.perf_counter()
        try:
            inputs, geometry = model.pre_process(frame.image)
        except EdgeVisionError:
            return None
        return model, inputs, geometry, (time.perf_counter() - started) * 1000

    def _hand_over(self, camera: Camera, frame: Frame, prepared: _Prepared | None = None) -> bool:
        """Put the newest frame in the camera's slot; a file waits for inference to take the previous one."""
        with self._cond:
            if not camera.source.live:
                self._cond.wait_for(lambda: camera.pending is None or self._stop.is_set())
                if self._stop.is_set():
                    return False
            skipped = int(camera.pending is not None)
            camera.pending, camera.prepared = frame, prepared
            camera.stats.count_capture(skipped)
            self.stats.count_capture(skipped)
            self._cond.notify_all()
        return True

    # -- inference -------------------------------------------------------------------------------------------
    def _take_round(self) -> tuple[int, list[tuple[Frame, _Prepared | None]]] | None:
        """The round's number and up to max_batch newest frames, one per camera, fair by rotation; None when
        every camera is finished and nothing is pending (or on stop)."""
        with self._cond:
            while True:
                if self._stop.is_set():
                    return None
                if any(c.pending is not None for c in self.cameras):
                    self._gather()
                    break
                if all(c.finished for c in self.cameras):
                    return None
                self._cond.wait(0.5)
            count = len(self.cameras)
            order = [self.cameras[(self._next + i) % count] for i in range(count)]
            taken: list[tuple[Frame, _Prepared | None]] = []
            for camera in order:
                if camera.pending is None:
                    continue
                taken.append((camera.pending, camera.prepared))
                camera.pending, camera.prepared = None, None
                self._next = (self.cameras.index(camera) + 1) % count
                if len(taken) >= self.options.max_batch:
                    break
            number = self._order.taken
            self._order.taken += 1
            self._cond.notify_all()
            return number, taken

    def _gather(self) -> None:
        """With the lock held and one frame ready: wait up to batch_wait_s for every running camera's frame."""
        deadline = time.monotonic() + self.options.batch_wait_s
        wanted = min(self.options.max_batch, sum(1 for c in self.cameras if not c.finished or c.pending))
        while not self._stop.is_set():
            if sum(1 for c in self.cameras if c.pending is not None) >= wanted:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._cond.wait(remaining)
            wanted = min(self.options.max_batch, sum(1 for c in self.cameras if not c.finished or c.pending))

    def _inference_loop(self) -> None:
        try:
            while not self._stop.is_set():
                taken = self._take_round()
                if taken is None:
                    self._note_all_down()
                    break
                number, round_ = taken
                try:
                    results, error = self._infer_round(round_), None
                except EdgeVisionError as e:
                    results, error = None, e
                self._complete(number, ([frame for frame, _ in round_], results, error))
        except BaseException as e:  # pylint: disable=broad-exception-caught
            log.exception("inference thread crashed")
            self.error = e
            self.stop()
        finally:
            self._worker_done()

    def _publish(self, frames: list[Frame], results: list[Any] | None, error: EdgeVisionError | None) -> None:
        """One round's outcome, in order (the order lock held): statistics, the consumers, the error budget."""
        if error is not None or results is None:
            self._order.consecutive_errors += 1
            self.stats.count_error()
            log.error("frames of %s failed: %s", ", ".join(f.camera for f in frames), error)
            if self._order.consecutive_errors >= self.options.max_consecutive_errors:
                self.error = error
                self.stop()
            return
        self._order.consecutive_errors = 0
        now = time.monotonic()
        for frame, result in zip(frames, results):
            camera = self._camera(frame.camera)
            for stats in (self.stats, camera.stats):
                stats.add_latency("preprocess", result.preprocess_ms)
                stats.add_latency("inference", result.inference_ms)
                stats.add_latency("postprocess", result.postprocess_ms)
                stats.add_latency("end_to_end", (now - frame.timestamp) * 1000)
                stats.count_result(now)
            self._fanout.publish(frame, result)
            self._order.produced += 1
        if self.options.max_results and self._order.produced >= self.options.max_results:
            self.stop()

    def _note_all_down(self) -> None:
        """The rounds ran out: when no one asked to stop and every camera failed, that is the pipeline's error."""
        with self._cond:
            if self.error is None and not self._stop.is_set() and all(c.state == DOWN for c in self.cameras):
                self.error = AllCamerasDownError(
                    "no camera is running: " + "; ".join(f"{c.name}: {c.reason}" for c in self.cameras)
                )

    def _camera(self, name: str) -> Camera:
        return next(camera for camera in self.cameras if camera.name == name)

    def _infer_round(self, round_: list[tuple[Frame, _Prepared | None]]) -> list[Any]:
        """Pre-process each frame (unless its capture thread did, with this model) and run them through one model:
        batched where its batch axis is open."""
        model: ServedModel = self.models.acquire()
        try:
            items = []
            for frame, prepared in round_:
                if prepared is not None and prepared[0] is model:
                    items.append(prepared[1:])
                    continue
                started = time.perf_counter()
                inputs, geometry = model.pre_process(frame.image)
                items.append((inputs, geometry, (time.perf_counter() - started) * 1000))
            if len(items) > 1 and model.batchable:
                return model.infer_batch(items)
            return [model.infer(*item) for item in items]
        finally:
            model.release()
