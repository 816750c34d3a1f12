"""What every frame source shares: the `Frame` it yields, its `SourceOptions`, the `FrameSource` interface."""

from __future__ import annotations

import abc
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, TypeVar

import numpy as np

from edgevision.frames.errors import SourceOptionsError

_SourceT = TypeVar("_SourceT", bound="FrameSource")


@dataclass(frozen=True)
class Frame:
    """One captured image.

    `index` counts the frames captured from one source (0, 1, 2, ...) and keeps counting across file loops and
    reconnects. A live source hands out only the newest frame, so a slow consumer sees gaps in `index`.
    """

    image: np.ndarray  # HxWx3 uint8 BGR
    index: int
    timestamp: float  # time.monotonic() when captured: for latencies within the process
    source: str  # redacted description of the source
    # time.time() when captured: the frame's time in messages and results (monotonic time means nothing outside)
    captured_at: float = field(default_factory=time.time)
    # the camera's name from CAMERAS ("default" when CAMERA_PATH names the one camera)
    camera: str = "default"

    @property
    def captured_at_iso(self) -> str:
        """The capture time as ISO 8601 UTC with milliseconds, e.g. 2026-12-01T21:09:52.123Z."""
        moment = datetime.fromtimestamp(self.captured_at, tz=timezone.utc)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class SourceOptions:
    """How a source behaves; the defaults suit a camera on a Jetson.

    `watchdog_s` of 0 turns the stall watchdog off. `io_timeout_s` bounds how long OpenCV's FFmpeg backend
    waits to open a stream URL or for its next packet, so a dead stream becomes a reconnect, not a hang.
    """

    loop: bool = True
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0
    watchdog_s: float = 10.0
    csi_width: int = 1280
    csi_height: int = 720
    csi_fps: int = 30
    realtime: bool = False  # file only: pace reads to the file's fps (for demos)
    io_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        checks = [
            ("reconnect_initial_s", self.reconnect_initial_s > 0, "must be > 0"),
            (
                "reconnect_max_s",
                self.reconnect_max_s >= self.reconnect_initial_s,
                "must be >= reconnect_initial_s",
            ),
            ("watchdog_s", self.watchdog_s >= 0, "must be >= 0 (0 turns the watchdog off)"),
            ("csi_width", self.csi_width > 0, "must be > 0"),
            ("csi_height", self.csi_height > 0, "must be > 0"),
            ("csi_fps", self.csi_fps > 0, "must be > 0"),
            ("io_timeout_s", self.io_timeout_s > 0, "must be > 0"),
        ]
        for name, ok, rule in checks:
            value = getattr(self, name)
            if not ok or (isinstance(value, float) and not math.isfinite(value)):
                raise SourceOptionsError(f"SourceOptions.{name}={value!r} {rule}")


class FrameSource(abc.ABC):
    """A camera, stream or file that yields `Frame`s: `open()`, `read()` repeatedly, `close()`.

    `live` is True for cameras and streams (consumers should take the newest frame and drop the rest) and
    False for files (every frame, in order). `description` never contains credentials.
    """

    live: bool = False

    def __init__(self, description: str, options: SourceOptions | None = None) -> None:
        self.description = description
        self.options = options or SourceOptions()
        self.fps: float | None = None

    @abc.abstractmethod
    def open(self) -> None:
        """Open the source and check that it yields a frame; raises a `FrameSourceError` subclass if not."""

    @abc.abstractmethod
    def read(self) -> Frame:
        """Block for the next frame."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the source; idempotent, and safe to call from another thread to unblock `read()`."""

    @property
    @abc.abstractmethod
    def stats(self) -> dict[str, Any]:
        """Counters: frames_read, reconnects, stalls, last_frame_age_s (None before the first frame), ..."""

    def __enter__(self: _SourceT) -> _SourceT:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description!r})"
