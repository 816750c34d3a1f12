"""Thin helpers over OpenCV's `VideoCapture`: backend checks and image normalisation."""

from __future__ import annotations

import functools
import re

import cv2
import numpy as np

from edgevision.frames.errors import GStreamerUnavailableError, SourceOpenError

_GSTREAMER_LINE = re.compile(r"^\s*GStreamer:\s*(\S+)", re.MULTILINE)

GSTREAMER_HELP = (
    "pip's opencv-python / opencv-python-headless wheels are built without GStreamer. "
    "Run inside the solution's dev container or the Jetson module image (JetPack's OpenCV has GStreamer), "
    "or build OpenCV yourself with -DWITH_GSTREAMER=ON; check with "
    'python -c "import cv2; print(cv2.getBuildInformation())" | grep GStreamer'
)


def opened(capture: cv2.VideoCapture, error: str) -> cv2.VideoCapture:
    """The capture if OpenCV opened it; otherwise it is released and `error` raised as a SourceOpenError."""
    if not capture.isOpened():
        capture.release()
        raise SourceOpenError(error)
    return capture


def build_has_gstreamer(build_information: str) -> bool:
    """True when an OpenCV build-information text says `GStreamer: YES` (possibly with a version after it)."""
    match = _GSTREAMER_LINE.search(build_information)
    return bool(match) and match.group(1).upper().startswith("YES")


@functools.lru_cache(maxsize=1)
def gstreamer_available() -> bool:
    """True when the installed OpenCV can open GStreamer pipelines (`cv2.CAP_GSTREAMER`)."""
    return build_has_gstreamer(cv2.getBuildInformation())


def require_gstreamer(description: str) -> None:
    """Raise `GStreamerUnavailableError`, saying how to get GStreamer, when this OpenCV lacks it."""
    if not gstreamer_available():
        raise GStreamerUnavailableError(
            f"CAMERA_PATH {description!r} needs GStreamer, but the installed OpenCV {cv2.__version__} was "
            f"built without it (cv2.getBuildInformation() does not say 'GStreamer: YES'). {GSTREAMER_HELP}"
        )


def to_bgr(image: np.ndarray) -> np.ndarray:
    """Return `image` as HxWx3 uint8 BGR: backends may hand out grey, BGRA/BGRx or 16-bit images."""
    if image.dtype != np.uint8:
        # 16-bit sources (some USB cameras, depth-like formats): keep the most significant byte.
        image = (image >> 8).astype(np.uint8) if image.dtype == np.uint16 else image.astype(np.uint8)
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def nominal_fps(capture: cv2.VideoCapture) -> float | None:
    """The capture's frame rate if the container/driver reports a plausible one, else None."""
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    return fps if 0.0 < fps <= 1000.0 else None
