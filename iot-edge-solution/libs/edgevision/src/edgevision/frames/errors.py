"""The errors of the `frames` package: one small hierarchy under `EdgeVisionError`."""

from __future__ import annotations

from edgevision.errors import EdgeVisionError


class FrameSourceError(EdgeVisionError):
    """A frame source failed, or was used after `close()`."""


class SourceNotFoundError(FrameSourceError):
    """CAMERA_PATH names a local file that does not exist."""


class SourceOpenError(FrameSourceError):
    """The source exists (or is a URL/device/pipeline) but cannot be opened or decoded."""


class UnsupportedSourceError(FrameSourceError):
    """CAMERA_PATH is not understood: empty, an unknown URL scheme, or a malformed `csi://N`."""


class GStreamerUnavailableError(FrameSourceError):
    """CAMERA_PATH needs GStreamer, and the installed OpenCV was built without it."""


class EndOfStreamError(FrameSourceError):
    """A file source with `loop=False` has delivered its last frame."""


class SourceOptionsError(FrameSourceError, ValueError):
    """A `SourceOptions` value is out of range."""
