"""CAMERAS: named sources, parsed with clear errors; CAMERA_PATH alone is the one camera named `default`."""

from __future__ import annotations

import pytest

from edgevision.config import SettingsError, VisionSettings, load_settings
from edgevision.frames import CameraSpec, UnsupportedSourceError, cameras_from, parse_cameras


@pytest.mark.parametrize(
    ("value", "expected", "error"),
    [
        ("a=x.mp4", (CameraSpec("a", "x.mp4"),), None),
        (
            " lobby = rtsp://u:p@h/s?x=1 ; door=/dev/video0;",
            (CameraSpec("lobby", "rtsp://u:p@h/s?x=1"), CameraSpec("door", "/dev/video0")),
            None,
        ),
        ("a=x;b=csi://0;c=3", (CameraSpec("a", "x"), CameraSpec("b", "csi://0"), CameraSpec("c", "3")), None),
        ("x.mp4", None, "entry 1 has no '='"),
        ("a=x;=y", None, "entry 2: name ''"),
        ("a b=x", None, "name 'a b'"),
        ("a=", None, "camera 'a' has no source"),
        ("a=x;a=y", None, "'a' appears twice"),
        (" ; ", None, "names no camera"),
        ("a" * 33 + "=x", None, "1-32 letters"),
    ],
)
def test_parse_cameras(value: str, expected: tuple | None, error: str | None) -> None:
    if error is None:
        assert parse_cameras(value) == expected
    else:
        with pytest.raises(UnsupportedSourceError, match=error.replace("(", r"\(")):
            parse_cameras(value)


def test_camera_path_alone_is_the_default_camera() -> None:
    assert cameras_from("", "demo.mp4") == (CameraSpec("default", "demo.mp4"),)
    assert cameras_from(None, " demo.mp4 ") == (CameraSpec("default", "demo.mp4"),)
    assert cameras_from("a=x", "demo.mp4") == (CameraSpec("a", "x"),)
    with pytest.raises(UnsupportedSourceError, match="neither CAMERAS nor CAMERA_PATH"):
        cameras_from("", "")


def test_settings_read_cameras_and_max_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAMERA_PATH", raising=False)
    monkeypatch.setenv("CAMERAS", "lobby=a.mp4;door=b.mp4")
    monkeypatch.setenv("MAX_BATCH", "8")
    settings = load_settings(VisionSettings)
    assert [spec.name for spec in settings.camera_specs()] == ["lobby", "door"]
    assert settings.max_batch == 8 and settings.camera_path == "a.mp4"  # the first camera, for old readers
    monkeypatch.delenv("CAMERAS")
    monkeypatch.delenv("MAX_BATCH")
    monkeypatch.setenv("CAMERA_PATH", "one.mp4")
    settings = load_settings(VisionSettings)
    assert settings.camera_specs() == (CameraSpec("default", "one.mp4"),) and settings.max_batch == 4


@pytest.mark.parametrize(
    ("env", "fragments"),
    [
        ({"CAMERAS": "lobby=rtsp://user:hunter2@cam/s;lobby=x"}, ["CAMERAS", "'lobby' appears twice"]),
        ({"CAMERAS": "nosource"}, ["CAMERAS", "no '='"]),
        ({"CAMERAS": "a=x", "MAX_BATCH": "0"}, ["MAX_BATCH", "greater than or equal to 1"]),
        ({"CAMERAS": "a=x", "MAX_BATCH": "many"}, ["MAX_BATCH", "integer"]),
    ],
)
def test_bad_cameras_name_the_variable_without_credentials(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], fragments: list[str]
) -> None:
    monkeypatch.delenv("CAMERA_PATH", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings(VisionSettings)
    for fragment in fragments:
        assert fragment in str(caught.value)
    assert "hunter2" not in str(caught.value)
