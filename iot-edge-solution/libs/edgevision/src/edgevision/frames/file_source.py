"""A local video file as a frame source: every frame in order, looping or stopping at the end."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import cv2
import numpy as np

from edgevision.frames.base import Frame, FrameSource, SourceOptions
from edgevision.frames.capture import nominal_fps, opened, to_bgr
from edgevision.frames.errors import EndOfStreamError, FrameSourceError, SourceNotFoundError, SourceOpenError

logger = logging.getLogger(__name__)

_NOT_A_VIDEO_HINT = (
    "OpenCV could not decode it; is it a video file (e.g. .mp4 with H.264, .avi with MJPEG) and not "
    "truncated? Try: ffprobe <file>"
)
# If pacing falls this far behind (a slow consumer), restart the schedule instead of bursting to catch up.
_MAX_PACING_LAG_S = 1.0


class VideoFileSource(FrameSource):
    """Reads a video file with OpenCV. Not live: `read()` returns every frame in order.

    At the end it rewinds when `options.loop` (indexes keep counting) or raises `EndOfStreamError`.
    With `options.realtime` reads are paced to the file's fps, as a camera would deliver them.
    """

    live = False

    def __init__(self, path: str, options: SourceOptions | None = None, description: str | None = None) -> None:
        super().__init__(description or path, options)
        self.path = path
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._capture: cv2.VideoCapture | None = None
        self._pending: np.ndarray | None = None  # the frame read by open() to prove the file decodes
        self._ended = False
        self._next_index = 0
        self._loops = 0
        self._last_frame_time: float | None = None
        self._pace_start = 0.0
        self._paced_frames = 0

    def open(self) -> None:
        with self._lock:
            if self._closed.is_set():
                raise FrameSourceError(f"source closed: {self.description}")
            if self._capture is not None:
                return
            if not os.path.exists(self.path):
                raise SourceNotFoundError(f"video file not found: {self.description} (check CAMERA_PATH)")
            if os.path.isdir(self.path):
                raise SourceOpenError(f"{self.description} is a directory, not a video file (check CAMERA_PATH)")
            capture = self._open_capture()
            ok, image = capture.read()
            if not ok or image is None:
                capture.release()
                raise SourceOpenError(
                    f"video file {self.description} opened but yielded no frames (empty or corrupt). "
                    + _NOT_A_VIDEO_HINT
                )
            self._capture = capture
            self._pending = image
            self.fps = nominal_fps(capture)
            self._pace_start = time.monotonic()
            logger.info(
                "opened video file %s (%s fps, loop=%s, realtime=%s)",
                self.description,
                f"{self.fps:g}" if self.fps else "unknown",
                self.options.loop,
                self.options.realtime,
            )

    def _open_capture(self) -> cv2.VideoCapture:
        try:
            capture = cv2.VideoCapture(self.path)
        except cv2.error as e:
            raise SourceOpenError(f"cannot open video file {self.description}: {e}. {_NOT_A_VIDEO_HINT}") from e
        return opened(capture, f"cannot open {self.description} as a video. {_NOT_A_VIDEO_HINT}")

    def read(self) -> Frame:
        if self.options.realtime:
            self._wait_for_schedule()
        with self._lock:
            if self._closed.is_set():
                raise FrameSourceError(f"source closed: {self.description}")
            if self._capture is None:
                raise FrameSourceError(f"source not opened: {self.description}; call open() first")
            if self._ended:
                raise EndOfStreamError(f"end of video file {self.description}")
            image = self._next_image(self._capture)
            now = time.monotonic()
            frame = Frame(to_bgr(image), self._next_index, now, self.description, time.time())
            self._next_index += 1
            self._paced_frames += 1
            self._last_frame_time = now
            return frame

    def _next_image(self, capture: cv2.VideoCapture) -> np.ndarray:
        if self._pending is not None:
            image, self._pending = self._pending, None
            return image
        ok, image = capture.read()
        if ok and image is not None:
            return image
        if not self.options.loop:
            self._ended = True
            logger.info("end of video file %s after %d frames", self.description, self._next_index)
            raise EndOfStreamError(f"end of video file {self.description} after {self._next_index} frames")
        return self._rewind(capture)

    def _rewind(self, capture: cv2.VideoCapture) -> np.ndarray:
        self._loops += 1
        logger.debug("looping video file %s (loop %d)", self.description, self._loops)
        capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
        ok, image = capture.read()
        if ok and image is not None:
            return image
        # Some containers cannot seek; reopening is the reliable rewind.
        capture.release()
        self._capture = None
        capture = self._open_capture()
        self._capture = capture
        ok, image = capture.read()
        if ok and image is not None:
            return image
        self._ended = True
        raise SourceOpenError(f"video file {self.description} yielded no frame after rewinding to its start")

    def _wait_for_schedule(self) -> None:
        if not self.fps:
            return
        due = self._pace_start + self._paced_frames / self.fps
        delay = due - time.monotonic()
        if delay < -_MAX_PACING_LAG_S:
            self._pace_start = time.monotonic() - self._paced_frames / self.fps
        elif delay > 0:
            self._closed.wait(delay)  # returns early when close() is called

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            if self._capture is not None:
                self._capture.release()
                self._capture = None
                self._pending = None
                logger.info("closed video file %s after %d frames", self.description, self._next_index)

    @property
    def stats(self) -> dict[str, Any]:
        with self._lock:
            age = None if self._last_frame_time is None else time.monotonic() - self._last_frame_time
            return {
                "frames_read": self._next_index,
                "frames_dropped": 0,
                "loops": self._loops,
                "reconnects": 0,
                "reconnect_attempts": 0,
                "stalls": 0,
                "stalled": False,
                "last_frame_age_s": age,
            }
