"""CAMERA_PATH parsing, CSI expansion, redaction, options and small helpers of the frames package."""

from __future__ import annotations

import numpy as np
import pytest

from edgevision.frames import (
    Backoff,
    CameraDeviceSource,
    GStreamerSource,
    SourceOptions,
    SourceOptionsError,
    StreamSource,
    UnsupportedSourceError,
    VideoFileSource,
    csi_pipeline,
    describe_source,
    open_source,
    parse_camera_path,
    redact,
)
from edgevision.frames.camera_path import SourceKind
from edgevision.frames.capture import build_has_gstreamer, to_bgr


@pytest.mark.parametrize(
    ("camera_path", "kind", "target", "device"),
    [
        ("media/vtest.avi", SourceKind.FILE, "media/vtest.avi", None),
        ("  /data/clip.mp4\n", SourceKind.FILE, "/data/clip.mp4", None),
        ("file:///data/clip.mp4", SourceKind.FILE, "/data/clip.mp4", None),
        ("C:\\videos\\clip.mp4", SourceKind.FILE, "C:\\videos\\clip.mp4", None),
        ("rtsp://cam.local:554/stream1", SourceKind.URL, "rtsp://cam.local:554/stream1", None),
        ("RTSPS://cam.local/s", SourceKind.URL, "RTSPS://cam.local/s", None),
        ("rtsp://admin:p!ss@cam/s", SourceKind.URL, "rtsp://admin:p!ss@cam/s", None),
        ("http://10.0.0.5:8080/video.mjpg", SourceKind.URL, "http://10.0.0.5:8080/video.mjpg", None),
        ("https://example.com/clip.mp4", SourceKind.URL, "https://example.com/clip.mp4", None),
        ("/dev/video0", SourceKind.V4L2, "/dev/video0", 0),
        ("/dev/video12", SourceKind.V4L2, "/dev/video12", 12),
        ("1", SourceKind.CAMERA_INDEX, "1", 1),
        ("videotestsrc ! appsink", SourceKind.GSTREAMER, "videotestsrc ! appsink", None),
        ("csi://0", SourceKind.CSI, csi_pipeline(0), 0),
        ("csi://3", SourceKind.CSI, csi_pipeline(3), 3),
    ],
)
def test_parse_camera_path_kinds(camera_path: str, kind: SourceKind, target: str, device: int | None) -> None:
    """Each CAMERA_PATH form maps to its kind, the target to open and the device number."""
    parsed = parse_camera_path(camera_path)
    assert (parsed.kind, parsed.target, parsed.device) == (kind, target, device)


@pytest.mark.parametrize(
    ("camera_path", "error", "message"),
    [
        ("", UnsupportedSourceError, "empty"),
        ("   \t", UnsupportedSourceError, "empty"),
        ("csi://abc", UnsupportedSourceError, "csi://0"),
        ("csi://", UnsupportedSourceError, "sensor number"),
        ("csi://-1", UnsupportedSourceError, "sensor number"),
        ("ftp://x", UnsupportedSourceError, "unsupported scheme ftp://"),
        ("rtmp://host/live", UnsupportedSourceError, "unsupported scheme rtmp://"),
        ("rtsp://", UnsupportedSourceError, "no host"),
        ("http:///path", UnsupportedSourceError, "no host"),
        ("file://", UnsupportedSourceError, "names no file"),
        ("ftp://user:secret@host/x", UnsupportedSourceError, "ftp://***@host/x"),
    ],
)
def test_bad_camera_path_is_rejected_by_open_source(camera_path: str, error: type, message: str) -> None:
    """CAMERA_PATH that is not understood fails in open_source, with a redacted message."""
    with pytest.raises(error) as excinfo:
        open_source(camera_path)
    assert message in str(excinfo.value)
    assert "secret" not in str(excinfo.value)


@pytest.mark.parametrize(
    ("camera_path", "source_class", "live"),
    [
        ("clip.avi", VideoFileSource, False),
        ("rtsp://cam/s", StreamSource, True),
        ("http://cam/video.mjpg", StreamSource, True),
        ("/dev/video0", CameraDeviceSource, True),
        ("0", CameraDeviceSource, True),
        ("videotestsrc ! videoconvert ! appsink", GStreamerSource, True),
        ("csi://0", GStreamerSource, True),
    ],
)
def test_open_source_chooses_class_without_opening(camera_path: str, source_class: type, live: bool) -> None:
    """open_source picks the class and liveness but opens nothing."""
    source = open_source(camera_path)
    assert type(source) is source_class  # pylint: disable=unidiomatic-typecheck
    assert source.live is live
    assert source.stats["frames_read"] == 0
    assert source.stats["last_frame_age_s"] is None
    source.close()  # closing a never-opened source is fine


def test_csi_expansion_defaults() -> None:
    """csi://0 expands to the Argus pipeline at 1280x720@30 with a drop-old appsink."""
    assert parse_camera_path("csi://0").target == (
        "nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM), width=1280, height=720, framerate=30/1 ! "
        "nvvidconv ! video/x-raw, format=BGRx ! videoconvert ! video/x-raw, format=BGR ! "
        "appsink drop=1 max-buffers=1"
    )


def test_csi_expansion_uses_options() -> None:
    """The CSI pipeline takes width, height and fps from the options; the description stays short."""
    options = SourceOptions(csi_width=1920, csi_height=1080, csi_fps=60)
    source = open_source("csi://1", options)
    assert isinstance(source, GStreamerSource)
    assert source.pipeline.startswith(
        "nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM), width=1920, height=1080, framerate=60/1 ! "
    )
    assert source.pipeline.endswith("appsink drop=1 max-buffers=1")
    assert source.description == "csi://1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rtsp://admin:hunter2@10.0.0.7:554/Streaming/101", "rtsp://***@10.0.0.7:554/Streaming/101"),
        ("rtsp://admin@cam/s", "rtsp://***@cam/s"),
        ("rtsp://admin:p@ss@cam/s", "rtsp://***@cam/s"),
        ("rtsp://cam/s", "rtsp://cam/s"),
        ("http://cam/snap@2x.jpg", "http://cam/snap@2x.jpg"),
        ("https://h/v.mjpg?user=bob&token=abc123&fps=5", "https://h/v.mjpg?user=bob&token=***&fps=5"),
        ("https://h/v?sig=abc&password=x", "https://h/v?sig=***&password=***"),
        (
            "rtspsrc location=rtsp://u:pw@cam/s user-id=u user-pw=pw ! decodebin ! appsink",
            "rtspsrc location=rtsp://***@cam/s user-id=u user-pw=*** ! decodebin ! appsink",
        ),
        ("/data/clip.mp4", "/data/clip.mp4"),
    ],
)
def test_redact_hides_credentials(text: str, expected: str) -> None:
    """URL user info, secret query values and GStreamer password properties are hidden."""
    assert redact(text) == expected


def test_source_description_is_redacted() -> None:
    """A source's description and repr never carry the RTSP password."""
    source = open_source(" rtsp://admin:hunter2@cam:554/live ")
    assert source.description == "rtsp://***@cam:554/live"
    assert "hunter2" not in repr(source)
    assert describe_source("rtsp://admin:hunter2@cam/live") == "rtsp://***@cam/live"


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({}, None),
        ({"watchdog_s": 0.0}, None),
        ({"reconnect_initial_s": 0.0}, SourceOptionsError),
        ({"reconnect_initial_s": 5.0, "reconnect_max_s": 1.0}, SourceOptionsError),
        ({"watchdog_s": -1.0}, SourceOptionsError),
        ({"watchdog_s": float("nan")}, SourceOptionsError),
        ({"csi_width": 0}, SourceOptionsError),
        ({"csi_fps": -30}, SourceOptionsError),
        ({"io_timeout_s": 0.0}, SourceOptionsError),
    ],
)
def test_source_options_validation(overrides: dict, error: type | None) -> None:
    """Out-of-range options are a SourceOptionsError (also a ValueError) naming the field."""
    if error is None:
        assert SourceOptions(**overrides).loop is True
    else:
        with pytest.raises(error, match=next(iter(overrides))):
            SourceOptions(**overrides)
        assert issubclass(error, ValueError)


def test_backoff_grows_exponentially_up_to_the_cap_and_resets() -> None:
    """Delays double up to the cap and start over after reset()."""
    backoff = Backoff(0.5, 30.0)
    assert [backoff.next_delay() for _ in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    backoff.reset()
    assert backoff.next_delay() == 0.5


@pytest.mark.parametrize(
    ("initial", "maximum", "factor", "error"),
    [(0.0, 1.0, 2.0, ValueError), (2.0, 1.0, 2.0, ValueError), (1.0, 2.0, 0.5, ValueError)],
)
def test_backoff_rejects_bad_settings(initial: float, maximum: float, factor: float, error: type) -> None:
    """A backoff that could not grow or would start at zero is refused."""
    with pytest.raises(error):
        Backoff(initial, maximum, factor)


@pytest.mark.parametrize(
    ("build_information", "expected"),
    [
        ("  Video I/O:\n    FFMPEG:                      YES\n    GStreamer:                   NO\n", False),
        ("  Video I/O:\n    GStreamer:                   YES (1.16.3)\n", True),
        ("    GStreamer:                   yes\n", True),
        ("  Video I/O:\n    FFMPEG: YES\n", False),
    ],
)
def test_build_has_gstreamer(build_information: str, expected: bool) -> None:
    """GStreamer support is read from OpenCV's build information, version suffix or not."""
    assert build_has_gstreamer(build_information) is expected


@pytest.mark.parametrize(
    ("image", "expected_pixel"),
    [
        (np.full((4, 6), 7, np.uint8), [7, 7, 7]),
        (np.full((4, 6, 1), 9, np.uint8), [9, 9, 9]),
        (np.dstack([np.full((4, 6), v, np.uint8) for v in (1, 2, 3, 255)]), [1, 2, 3]),
        (np.full((4, 6, 3), 5, np.uint8), [5, 5, 5]),
        (np.full((4, 6, 3), 0x1200, np.uint16), [0x12, 0x12, 0x12]),
    ],
)
def test_to_bgr_normalises_backend_images(image: np.ndarray, expected_pixel: list[int]) -> None:
    """Grey, single-channel, BGRA and 16-bit images become HxWx3 uint8 BGR."""
    bgr = to_bgr(image)
    assert bgr.shape == (4, 6, 3)
    assert bgr.dtype == np.uint8
    assert bgr[0, 0].tolist() == expected_pixel
