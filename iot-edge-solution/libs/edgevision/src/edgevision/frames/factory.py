"""`open_source`: the one place that maps a CAMERA_PATH to the frame-source class that reads it."""

from __future__ import annotations

import sys

import cv2

from edgevision.frames.base import FrameSource, SourceOptions
from edgevision.frames.camera_path import SourceKind, describe_source, parse_camera_path
from edgevision.frames.file_source import VideoFileSource
from edgevision.frames.live_source import CameraDeviceSource, GStreamerSource, StreamSource


def open_source(camera_path: str, options: SourceOptions | None = None) -> FrameSource:
    """Choose and build the source for CAMERA_PATH without opening it (call `open()` or use `with`).

    Raises `UnsupportedSourceError` when CAMERA_PATH is not understood; everything that needs the file,
    network, device or GStreamer is checked by `open()`.
    """
    options = options or SourceOptions()
    parsed = parse_camera_path(camera_path, options)
    description = describe_source(camera_path)
    if parsed.kind is SourceKind.FILE:
        return VideoFileSource(parsed.target, options, description=description)
    if parsed.kind is SourceKind.URL:
        return StreamSource(parsed.target, options, description=description)
    if parsed.kind in (SourceKind.GSTREAMER, SourceKind.CSI):
        return GStreamerSource(parsed.target, options, description=description)
    assert parsed.device is not None  # V4L2 and camera-index paths always carry a device number
    api = cv2.CAP_V4L2 if parsed.kind is SourceKind.V4L2 and sys.platform.startswith("linux") else cv2.CAP_ANY
    return CameraDeviceSource(parsed.device, options, description=description, api_preference=api)
