"""Understanding CAMERA_PATH: which kind of source it names, its Jetson CSI expansion and its redaction."""

from __future__ import annotations

import enum
import os
import re
from dataclasses import dataclass

from edgevision.frames.base import SourceOptions
from edgevision.frames.errors import UnsupportedSourceError


class SourceKind(enum.Enum):
    """The kinds of CAMERA_PATH `open_source` understands."""

    FILE = "file"
    GSTREAMER = "gstreamer"
    CSI = "csi"
    URL = "url"
    V4L2 = "v4l2"
    CAMERA_INDEX = "camera-index"


@dataclass(frozen=True)
class ParsedCameraPath:
    """CAMERA_PATH taken apart: `target` is the file path, URL, pipeline or device number to open."""

    kind: SourceKind
    target: str
    device: int | None = None  # sensor id for CSI, device number for V4L2 / camera index


STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https")

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_V4L2_DEVICE = re.compile(r"^/dev/video(\d+)$")
# Greedy up to the last '@' before the path, so a password holding '@' is hidden whole.
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s]*@")
_SECRET_QUERY = re.compile(
    r"([?&;](?:password|passwd|pwd|pass|token|access_token|api_key|apikey|key|sig|signature|auth)=)[^&;\s]*",
    re.IGNORECASE,
)
# GStreamer element properties holding credentials, e.g. rtspsrc user-pw=...
_SECRET_PROPERTY = re.compile(r"\b((?:user-pw|password|proxy-pw)\s*=\s*)(\"[^\"]*\"|'[^']*'|\S+)", re.IGNORECASE)


def redact(text: str) -> str:
    """Hide credentials: `user:pass@` in URLs, secret-looking query values, GStreamer password properties."""
    text = _USERINFO.sub(r"\1***@", text)
    text = _SECRET_QUERY.sub(r"\1***", text)
    return _SECRET_PROPERTY.sub(r"\1***", text)


def describe_source(camera_path: str) -> str:
    """A description of CAMERA_PATH safe to log: surrounding blanks trimmed, credentials hidden."""
    return redact(camera_path.strip())


def csi_pipeline(sensor_id: int, width: int = 1280, height: int = 720, fps: int = 30) -> str:
    """The Jetson Argus pipeline for CSI camera `sensor_id`, ending in a BGR appsink that keeps only the
    newest frame (drop=1 max-buffers=1), so a slow consumer never reads stale frames."""
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM), width={width}, height={height}, framerate={fps}/1 ! "
        "nvvidconv ! video/x-raw, format=BGRx ! videoconvert ! video/x-raw, format=BGR ! "
        "appsink drop=1 max-buffers=1"
    )


def parse_camera_path(camera_path: str, options: SourceOptions | None = None) -> ParsedCameraPath:
    """Decide what CAMERA_PATH names; raises `UnsupportedSourceError` when it is not understood.

    Order matters: a leading `scheme://` decides first (so a URL whose password holds '!' stays a URL), then
    '!' marks a GStreamer pipeline, then `/dev/videoN`, a bare camera number; anything else is a file path.
    """
    options = options or SourceOptions()
    path = camera_path.strip()
    if not path:
        raise UnsupportedSourceError("CAMERA_PATH is empty: set it to a video file, URL, /dev/videoN or csi://N")
    scheme_match = _SCHEME.match(path)
    if scheme_match:
        return _parse_url(path, scheme_match.group(1).lower(), options)
    if "!" in path:
        return ParsedCameraPath(SourceKind.GSTREAMER, path)
    device = _V4L2_DEVICE.match(path) or (
        _V4L2_DEVICE.match(os.path.realpath(path)) if path.startswith("/dev/") else None
    )
    if device:
        return ParsedCameraPath(SourceKind.V4L2, path, int(device.group(1)))
    if path.isdigit():
        return ParsedCameraPath(SourceKind.CAMERA_INDEX, path, int(path))
    return ParsedCameraPath(SourceKind.FILE, path)


def _parse_url(path: str, scheme: str, options: SourceOptions) -> ParsedCameraPath:
    rest = path[len(scheme) + 3 :]
    if scheme == "csi":
        if not rest.isdigit():
            raise UnsupportedSourceError(
                f"CAMERA_PATH {describe_source(path)!r}: csi:// needs a sensor number, e.g. csi://0"
            )
        sensor = int(rest)
        pipeline = csi_pipeline(sensor, options.csi_width, options.csi_height, options.csi_fps)
        return ParsedCameraPath(SourceKind.CSI, pipeline, sensor)
    if scheme == "file":
        if not rest:
            raise UnsupportedSourceError("CAMERA_PATH 'file://' names no file")
        return ParsedCameraPath(SourceKind.FILE, rest)
    if scheme in STREAM_SCHEMES:
        if not rest or rest.startswith("/"):
            raise UnsupportedSourceError(f"CAMERA_PATH {describe_source(path)!r} has no host")
        return ParsedCameraPath(SourceKind.URL, path)
    raise UnsupportedSourceError(
        f"CAMERA_PATH {describe_source(path)!r}: unsupported scheme {scheme}://; use a video file, "
        f"{', '.join(s + '://' for s in STREAM_SCHEMES)}, /dev/videoN, csi://N or a GStreamer pipeline"
    )
