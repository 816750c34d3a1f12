"""Frame sources chosen from CAMERA_PATH: video files, RTSP/HTTP streams, V4L2 cameras, GStreamer
pipelines and Jetson CSI cameras, behind one `FrameSource` interface."""

from edgevision.frames.base import Frame, FrameSource, SourceOptions
from edgevision.frames.cameras import DEFAULT_CAMERA, CameraSpec, cameras_from, parse_cameras
from edgevision.frames.camera_path import csi_pipeline, describe_source, parse_camera_path, redact
from edgevision.frames.capture import gstreamer_available
from edgevision.frames.errors import (
    EndOfStreamError,
    FrameSourceError,
    GStreamerUnavailableError,
    SourceNotFoundError,
    SourceOpenError,
    SourceOptionsError,
    UnsupportedSourceError,
)
from edgevision.frames.factory import open_source
from edgevision.frames.file_source import VideoFileSource
from edgevision.frames.live_source import (
    Backoff,
    CameraDeviceSource,
    GStreamerSource,
    LiveSource,
    StreamSource,
)

__all__ = [
    "DEFAULT_CAMERA",
    "CameraSpec",
    "cameras_from",
    "parse_cameras",
    "Backoff",
    "CameraDeviceSource",
    "EndOfStreamError",
    "Frame",
    "FrameSource",
    "FrameSourceError",
    "GStreamerSource",
    "GStreamerUnavailableError",
    "LiveSource",
    "SourceNotFoundError",
    "SourceOpenError",
    "SourceOptions",
    "SourceOptionsError",
    "StreamSource",
    "UnsupportedSourceError",
    "VideoFileSource",
    "csi_pipeline",
    "describe_source",
    "gstreamer_available",
    "open_source",
    "parse_camera_path",
    "redact",
]
