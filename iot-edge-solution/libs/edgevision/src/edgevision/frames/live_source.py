"""Live frame sources (streams, cameras, GStreamer pipelines): newest frame only, reconnect, stall watchdog.

A background thread owns the OpenCV capture: it grabs frames as fast as the source delivers them and keeps
only the newest, reconnects with capped exponential backoff when the source drops, and is the only thread
that touches the capture (OpenCV captures are not safe to release from another thread). A second thread is
the watchdog: it flags a stall when no frame has arrived for `watchdog_s`, even while the grabber is blocked
inside OpenCV.
"""

from __future__ import annotations

import abc
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from edgevision.frames.base import Frame, FrameSource, SourceOptions
from edgevision.frames.capture import nominal_fps, opened, require_gstreamer, to_bgr
from edgevision.frames.errors import FrameSourceError, SourceOpenError

logger = logging.getLogger(__name__)

# How long close() waits for the grabber; one blocked inside OpenCV exits on its own after io_timeout_s.
_JOIN_TIMEOUT_S = 2.0


class Capture(Protocol):
    """The part of `cv2.VideoCapture` a live source uses."""

    def read(self) -> tuple[bool, np.ndarray | None]:
        """Grab and decode the next frame."""

    def release(self) -> None:
        """Free the device or connection."""


class Backoff:
    """Capped exponential delays: initial, 2x, 4x, ... never above the cap; `reset()` starts over."""

    def __init__(self, initial_s: float, maximum_s: float, factor: float = 2.0) -> None:
        if initial_s <= 0 or maximum_s < initial_s or factor < 1:
            raise ValueError("need 0 < initial_s <= maximum_s and factor >= 1")
        self.initial_s = initial_s
        self.maximum_s = maximum_s
        self.factor = factor
        self._next = initial_s

    def next_delay(self) -> float:
        """The delay to wait now; the one after it is `factor` times longer, up to the cap."""
        delay = self._next
        self._next = min(self._next * self.factor, self.maximum_s)
        return delay

    def reset(self) -> None:
        """Start again from the initial delay (after a successful reconnect)."""
        self._next = self.initial_s


@dataclass
class _LiveState:
    """What the grabber, the watchdog and readers share; always accessed under `LiveSource._cond`."""

    latest: Frame | None = None
    delivered_index: int = -1
    next_index: int = 0
    frames_delivered: int = 0
    reconnects: int = 0
    reconnect_attempts: int = 0
    stalls: int = 0
    stalled: bool = False
    last_frame_time: float | None = None
    fatal: BaseException | None = None


class LiveSource(FrameSource):
    """Base of all live sources; a subclass only says how to open its capture (`_open_capture`).

    `open()` connects once in the caller's thread and raises `SourceOpenError` if that fails or yields no
    frame, so a bad CAMERA_PATH fails start-up; later drops are reconnected in the background.
    """

    live = True

    def __init__(self, description: str, options: SourceOptions | None = None) -> None:
        super().__init__(description, options)
        self._cond = threading.Condition()
        self._open_lock = threading.Lock()
        self._closed = threading.Event()
        self._started = False
        self._state = _LiveState()  # guarded by _cond
        self._threads: list[threading.Thread] = []

    @abc.abstractmethod
    def _open_capture(self) -> Capture:
        """Open the underlying capture; return it (opened) or raise `SourceOpenError`."""

    def _check_available(self) -> None:
        """Raise before the first connect if this kind of source cannot work here at all."""

    def open(self) -> None:
        # Connecting may take io_timeout_s: hold only the open lock, so stats() and close() stay responsive.
        with self._open_lock:
            with self._cond:
                if self._closed.is_set():
                    raise FrameSourceError(f"source closed: {self.description}")
                if self._started:
                    return
            self._check_available()
            capture, image = self._connect()
            with self._cond:
                if self._closed.is_set():
                    capture.release()
                    raise FrameSourceError(f"source closed while opening: {self.description}")
                self._started = True
                self._publish_locked(image)
            logger.info("opened live source %s (%s fps)", self.description, f"{self.fps:g}" if self.fps else "unknown")
            self._threads = [
                threading.Thread(target=self._grab_loop, args=(capture,), name="frames-grab", daemon=True),
                threading.Thread(target=self._watchdog_loop, name="frames-watchdog", daemon=True),
            ]
            for thread in self._threads:
                thread.start()

    def _connect(self) -> tuple[Capture, np.ndarray]:
        """Open the capture and read one frame from it, or raise `SourceOpenError`."""
        try:
            capture = self._open_capture()
        except cv2.error as e:
            raise SourceOpenError(f"cannot open live source {self.description}: {e}") from e
        try:
            ok, image = capture.read()
        except cv2.error as e:
            capture.release()
            raise SourceOpenError(f"live source {self.description} failed on its first frame: {e}") from e
        if not ok or image is None:
            capture.release()
            raise SourceOpenError(f"live source {self.description} opened but delivered no frame")
        if isinstance(capture, cv2.VideoCapture):
            self.fps = nominal_fps(capture)
        return capture, image

    def read(self) -> Frame:
        with self._cond:
            while True:
                if self._closed.is_set():
                    raise FrameSourceError(f"source closed: {self.description}")
                if not self._started:
                    raise FrameSourceError(f"source not opened: {self.description}; call open() first")
                if self._state.fatal is not None:
                    raise FrameSourceError(f"live source {self.description} failed: {self._state.fatal}")
                latest = self._state.latest
                if latest is not None and latest.index > self._state.delivered_index:
                    self._state.delivered_index = latest.index
                    self._state.frames_delivered += 1
                    return latest
                self._cond.wait()

    def close(self) -> None:
        with self._cond:
            already = self._closed.is_set()
            self._closed.set()
            self._cond.notify_all()
        if already:
            return
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(_JOIN_TIMEOUT_S)
                if thread.is_alive():
                    logger.warning(
                        "%s of %s still blocked in OpenCV; it releases the source when it returns",
                        thread.name,
                        self.description,
                    )
        logger.info("closed live source %s after %d frames", self.description, self._state.next_index)

    @property
    def stats(self) -> dict[str, Any]:
        with self._cond:
            state = self._state
            age = None if state.last_frame_time is None else time.monotonic() - state.last_frame_time
            waiting = 1 if state.latest is not None and state.latest.index > state.delivered_index else 0
            return {
                "frames_read": state.next_index,
                "frames_dropped": state.next_index - state.frames_delivered - waiting,
                "loops": 0,
                "reconnects": state.reconnects,
                "reconnect_attempts": state.reconnect_attempts,
                "stalls": state.stalls,
                "stalled": state.stalled,
                "last_frame_age_s": age,
            }

    def _publish_locked(self, image: np.ndarray) -> None:
        state = self._state
        now = time.monotonic()
        state.latest = Frame(to_bgr(image), state.next_index, now, self.description, time.time())
        state.next_index += 1
        if state.stalled:
            state.stalled = False
            stalled_for = now - state.last_frame_time if state.last_frame_time is not None else 0.0
            logger.info("frames from %s resumed after %.1f s", self.description, stalled_for)
        state.last_frame_time = now
        self._cond.notify_all()

    def _grab_loop(self, capture: Capture | None) -> None:
        try:
            self._grab_until_closed(capture)
        except Exception as e:  # pylint: disable=broad-exception-caught
            # Never die silently: read() reports it instead of blocking forever.
            logger.exception("frame grabber for %s failed", self.description)
            with self._cond:
                self._state.fatal = e
                self._cond.notify_all()

    def _grab_until_closed(self, capture: Capture | None) -> None:
        backoff = Backoff(self.options.reconnect_initial_s, self.options.reconnect_max_s)
        attempt = 0  # within the current outage
        try:
            while not self._closed.is_set():
                if capture is None:
                    attempt += 1
                    capture = self._reconnect(backoff, attempt)
                    continue
                try:
                    ok, image = capture.read()
                except cv2.error as e:
                    logger.warning("reading %s failed: %s", self.description, e)
                    ok, image = False, None
                if self._closed.is_set():
                    break
                if ok and image is not None:
                    with self._cond:
                        self._publish_locked(image)
                    continue
                logger.warning("lost live source %s; reconnecting", self.description)
                capture.release()
                capture = None
                backoff.reset()
                attempt = 0
        finally:
            if capture is not None:
                capture.release()

    def _reconnect(self, backoff: Backoff, attempt: int) -> Capture | None:
        """One reconnect attempt after the next backoff delay; the new capture, or None to try again."""
        delay = backoff.next_delay()
        logger.info("reconnecting to %s in %.2f s (attempt %d)", self.description, delay, attempt)
        if self._closed.wait(delay):
            return None
        with self._cond:
            self._state.reconnect_attempts += 1
        try:
            capture, image = self._connect()
        except SourceOpenError as e:
            logger.warning("reconnect attempt %d to %s failed: %s", attempt, self.description, e)
            return None
        if self._closed.is_set():
            capture.release()
            return None
        with self._cond:
            self._state.reconnects += 1
            self._publish_locked(image)
        logger.info("reconnected to %s after %d attempt(s)", self.description, attempt)
        backoff.reset()
        return capture

    def _watchdog_loop(self) -> None:
        watchdog_s = self.options.watchdog_s
        if watchdog_s <= 0:
            return
        interval = min(1.0, max(0.05, watchdog_s / 4))
        while not self._closed.wait(interval):
            with self._cond:
                if self._state.stalled or self._state.last_frame_time is None:
                    continue
                age = time.monotonic() - self._state.last_frame_time
                if age >= watchdog_s:
                    self._state.stalled = True
                    self._state.stalls += 1
                    logger.warning("no frames from %s for %.1f s", self.description, age)


class StreamSource(LiveSource):
    """An RTSP or HTTP(S) stream read by OpenCV's FFmpeg backend, with open/read timeouts."""

    def __init__(self, url: str, options: SourceOptions | None = None, description: str | None = None) -> None:
        super().__init__(description or url, options)
        self._url = url  # may hold credentials: never log it

    def _open_capture(self) -> Capture:
        timeout_ms = int(self.options.io_timeout_s * 1000)
        return opened(
            cv2.VideoCapture(
                self._url,
                cv2.CAP_FFMPEG,
                [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms],
            ),
            f"cannot open stream {self.description}: unreachable, refused, wrong path or credentials, "
            "or not a video stream",
        )


class CameraDeviceSource(LiveSource):
    """A local camera by device number: V4L2 on Linux (`/dev/videoN`), or whatever backend OpenCV picks."""

    def __init__(
        self,
        device: int,
        options: SourceOptions | None = None,
        description: str | None = None,
        api_preference: int = cv2.CAP_ANY,
    ) -> None:
        super().__init__(description or f"camera {device}", options)
        self.device = device
        self.api_preference = api_preference

    def _open_capture(self) -> Capture:
        return opened(
            cv2.VideoCapture(self.device, self.api_preference),
            f"cannot open camera {self.description}: no such device, busy, or no permission "
            "(in a container, pass the device through and add the user to the 'video' group)",
        )


class GStreamerSource(LiveSource):
    """A GStreamer pipeline ending in an appsink, via OpenCV's GStreamer backend (Jetson CSI cameras too)."""

    def __init__(self, pipeline: str, options: SourceOptions | None = None, description: str | None = None) -> None:
        super().__init__(description or pipeline, options)
        self.pipeline = pipeline

    def _check_available(self) -> None:
        require_gstreamer(self.description)

    def _open_capture(self) -> Capture:
        return opened(
            cv2.VideoCapture(self.pipeline, cv2.CAP_GSTREAMER),
            f"cannot start GStreamer pipeline {self.description}: check the elements exist "
            "(gst-inspect-1.0), the camera is connected, and the pipeline ends in an appsink",
        )
