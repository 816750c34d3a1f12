"""`CAMERAS`: several named sources for one module, e.g. `lobby=rtsp://cam1/stream;door=/dev/video0`.

Syntax: `name=source` entries separated by `;`. A name is 1-32 letters, digits, `-` or `_` and is unique; a
source is anything CAMERA_PATH accepts (it may itself contain `=`: only the first `=` of an entry splits it).
Blank entries (a trailing `;`) are ignored. Without CAMERAS, CAMERA_PATH is the one camera named `default`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgevision.frames.camera_path import describe_source
from edgevision.frames.errors import UnsupportedSourceError

DEFAULT_CAMERA = "default"
CAMERA_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


@dataclass(frozen=True)
class CameraSpec:
    """One named camera: its name and its CAMERA_PATH-style source."""

    name: str
    source: str

    @property
    def description(self) -> str:
        """The source without credentials, for logs and pages."""
        return describe_source(self.source)


def parse_cameras(cameras: str) -> tuple[CameraSpec, ...]:
    """The cameras of a CAMERAS value, in order; UnsupportedSourceError says which entry is wrong."""
    specs: list[CameraSpec] = []
    for position, raw in enumerate(cameras.split(";"), start=1):
        entry = raw.strip()
        if not entry:
            continue
        name, equals, source = entry.partition("=")
        name, source = name.strip(), source.strip()
        if not equals:
            raise UnsupportedSourceError(f"camera entry {position} has no '=': expected name=source")
        if not CAMERA_NAME.match(name):
            raise UnsupportedSourceError(
                f"camera entry {position}: name {name!r} must be 1-32 letters, digits, '-' or '_'"
            )
        if not source:
            raise UnsupportedSourceError(f"camera {name!r} has no source")
        if any(spec.name == name for spec in specs):
            raise UnsupportedSourceError(f"camera name {name!r} appears twice")
        specs.append(CameraSpec(name, source))
    if not specs:
        raise UnsupportedSourceError("names no camera: expected name=source;name=source")
    return tuple(specs)


def cameras_from(cameras: str | None, camera_path: str | None) -> tuple[CameraSpec, ...]:
    """CAMERAS when set, else CAMERA_PATH as the one camera named `default`."""
    if cameras and cameras.strip():
        return parse_cameras(cameras)
    if not camera_path or not camera_path.strip():
        raise UnsupportedSourceError("neither CAMERAS nor CAMERA_PATH names a camera")
    return (CameraSpec(DEFAULT_CAMERA, camera_path.strip()),)
