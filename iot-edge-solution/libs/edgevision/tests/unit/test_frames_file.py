"""VideoFileSource over real video files written with OpenCV in tmp_path."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgevision.frames import (
    EndOfStreamError,
    FrameSourceError,
    GStreamerUnavailableError,
    SourceNotFoundError,
    SourceOpenError,
    SourceOptions,
    UnsupportedSourceError,
    VideoFileSource,
    gstreamer_available,
    open_source,
)

WIDTH, HEIGHT = 64, 48
BUNDLED_VIDEO = Path(__file__).resolve().parents[4] / "media" / "vtest.avi"


def shade(index: int) -> int:
    """The grey level of frame `index` in the test videos: far apart, so MJPEG's loss cannot blur them."""
    return 20 + 40 * index


def write_video(path: Path, frames: int, fps: float = 25.0) -> Path:
    """Write an MJPEG .avi whose frame i is a flat grey of shade(i)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((HEIGHT, WIDTH, 3), shade(i), np.uint8))
    writer.release()
    return path


def frame_shade(image: np.ndarray) -> int:
    """The mean grey level of a decoded frame, rounded."""
    return int(round(float(image.mean())))


@pytest.fixture(name="video")
def video_fixture(tmp_path: Path) -> Path:
    """A five-frame MJPEG video at 25 fps."""
    return write_video(tmp_path / "clip.avi", 5)


def test_stop_at_end_yields_exactly_n_frames_then_end_of_stream(video: Path) -> None:
    """With loop=False a 5-frame file yields frames 0..4 in order, then EndOfStreamError."""
    with open_source(str(video), SourceOptions(loop=False)) as source:
        frames = [source.read() for _ in range(5)]
        with pytest.raises(EndOfStreamError, match="after 5 frames"):
            source.read()
        with pytest.raises(EndOfStreamError):  # and stays ended
            source.read()
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]
    assert [frame_shade(f.image) for f in frames] == pytest.approx([shade(i) for i in range(5)], abs=3)
    assert source.stats["frames_read"] == 5


def test_loop_rewinds_and_indexes_keep_counting(video: Path) -> None:
    """Looping replays the file while the index keeps counting across loops."""
    with open_source(str(video)) as source:
        assert source.live is False
        assert source.fps == pytest.approx(25.0)
        frames = [source.read() for _ in range(13)]
        stats = source.stats
    assert [f.index for f in frames] == list(range(13))
    assert [frame_shade(f.image) for f in frames] == pytest.approx([shade(i % 5) for i in range(13)], abs=3)
    assert stats["loops"] == 2
    assert stats["frames_read"] == 13
    assert stats["last_frame_age_s"] >= 0


def test_frames_are_bgr_uint8_with_source_and_monotonic_timestamps(video: Path) -> None:
    """Frames are HxWx3 uint8, name their source, and are stamped in order."""
    with open_source(str(video), SourceOptions(loop=False)) as source:
        frames = [source.read() for _ in range(5)]
    for frame in frames:
        assert frame.image.shape == (HEIGHT, WIDTH, 3)
        assert frame.image.dtype == np.uint8
        assert frame.source == str(video)
    stamps = [f.timestamp for f in frames]
    assert stamps == sorted(stamps)


def test_zero_frame_video_is_an_open_error(tmp_path: Path) -> None:
    """A valid container with no frames fails at open, naming the file."""
    empty = write_video(tmp_path / "empty.avi", 0)
    with pytest.raises(SourceOpenError, match="empty.avi"):
        open_source(str(empty)).open()


def make_bad_path(tmp_path: Path, kind: str) -> str:
    """Build the bad CAMERA_PATH of one table row inside tmp_path."""
    if kind == "missing":
        return str(tmp_path / "no-such-clip.mp4")
    if kind == "directory":
        return str(tmp_path)
    if kind == "random-bytes":
        path = tmp_path / "noise.mp4"
        path.write_bytes(np.random.default_rng(1).integers(0, 256, 64_000, dtype=np.uint8).tobytes())
        return str(path)
    if kind == "text":
        path = tmp_path / "notes.avi"
        path.write_text("this is not a video\n" * 100)
        return str(path)
    if kind == "zero-bytes":
        path = tmp_path / "zero.avi"
        path.write_bytes(b"")
        return str(path)
    return kind  # the row's CAMERA_PATH is literal


@pytest.mark.parametrize(
    ("kind", "error", "message"),
    [
        ("missing", SourceNotFoundError, "no-such-clip.mp4"),
        ("directory", SourceOpenError, "directory"),
        ("random-bytes", SourceOpenError, "noise.mp4"),
        ("random-bytes", SourceOpenError, "is it a video file"),
        ("text", SourceOpenError, "notes.avi"),
        ("zero-bytes", SourceOpenError, "zero.avi"),
        ("", UnsupportedSourceError, "empty"),
        ("csi://abc", UnsupportedSourceError, "csi://"),
        ("ftp://x", UnsupportedSourceError, "ftp://"),
        ("/dev/video97", SourceOpenError, "/dev/video97"),
        ("http://127.0.0.1:9/none.mjpg", SourceOpenError, "cannot open stream"),
    ],
)
def test_bad_camera_path_fails_at_open(tmp_path: Path, kind: str, error: type, message: str) -> None:
    """Every bad CAMERA_PATH fails at open (or earlier) with its own error class and a clear message."""
    camera_path = make_bad_path(tmp_path, kind)
    with pytest.raises(error) as excinfo:
        with open_source(camera_path, SourceOptions(io_timeout_s=5.0)) as source:
            source.read()
    assert message in str(excinfo.value)


@pytest.mark.skipif(gstreamer_available(), reason="this OpenCV has GStreamer")
@pytest.mark.parametrize("camera_path", ["videotestsrc ! videoconvert ! appsink", "csi://0"])
def test_gstreamer_source_without_gstreamer_says_how_to_get_it(camera_path: str) -> None:
    """On an OpenCV without GStreamer, pipelines fail at open with instructions to get it."""
    source = open_source(camera_path)
    with pytest.raises(GStreamerUnavailableError) as excinfo:
        source.open()
    message = str(excinfo.value)
    assert "without it" in message
    assert "-DWITH_GSTREAMER=ON" in message
    assert "dev container" in message
    assert "pip" in message


def test_read_before_open_and_after_close(video: Path) -> None:
    """read() needs open(); open() and close() are idempotent; a closed source stays closed."""
    source = open_source(str(video))
    with pytest.raises(FrameSourceError, match="not opened"):
        source.read()
    source.open()
    source.open()  # idempotent
    assert source.read().index == 0
    source.close()
    source.close()  # idempotent
    with pytest.raises(FrameSourceError, match="closed"):
        source.read()
    with pytest.raises(FrameSourceError, match="closed"):
        source.open()


def test_realtime_paces_reads_to_the_file_fps(tmp_path: Path) -> None:
    """realtime=True delivers frames no faster than the file's fps."""
    video = write_video(tmp_path / "ten-fps.avi", 4, fps=10.0)
    with open_source(str(video), SourceOptions(realtime=True, loop=False)) as source:
        start = time.monotonic()
        for _ in range(4):
            source.read()
        elapsed = time.monotonic() - start
    # Frames 0..3 are due at 0, 0.1, 0.2, 0.3 s: pacing can only make this slower, never faster.
    assert elapsed >= 0.29


def test_close_from_another_thread_unblocks_a_paced_read(tmp_path: Path) -> None:
    """close() from another thread wakes a read() waiting for its frame's due time."""
    video = write_video(tmp_path / "slow.avi", 3, fps=0.5)  # the second frame is due 2 s after the first
    source = open_source(str(video), SourceOptions(realtime=True))
    source.open()
    assert source.read().index == 0
    closer = threading.Timer(0.2, source.close)
    closer.start()
    # Without the unblock, read() would sleep until the frame is due and then return it.
    with pytest.raises(FrameSourceError, match="closed"):
        source.read()
    closer.join()


def test_file_truncated_while_looping_is_an_open_error_not_a_spin(tmp_path: Path) -> None:
    """A file that vanishes while looping raises SourceOpenError instead of spinning."""
    video = tmp_path / "vanishing.avi"
    # Noise frames defeat JPEG compression, so the file is far larger than FFmpeg's read buffer.
    rng = np.random.default_rng(2)
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (320, 240))
    for _ in range(20):
        writer.write(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))
    writer.release()
    assert video.stat().st_size > 1_000_000
    with open_source(str(video)) as source:
        source.read()
        with open(video, "wb"):  # truncate to zero bytes under the open capture
            pass
        with pytest.raises(SourceOpenError, match="vanishing.avi"):
            for _ in range(100):
                source.read()


def test_file_source_can_be_built_directly(video: Path) -> None:
    """VideoFileSource works without open_source, describing itself by its path."""
    with VideoFileSource(os.fspath(video), SourceOptions(loop=False)) as source:
        assert source.description == str(video)
        assert source.read().index == 0


@pytest.mark.skipif(not BUNDLED_VIDEO.exists(), reason="iot-edge-solution/media/vtest.avi not present")
def test_bundled_sample_video_reads_and_loops() -> None:
    """The bundled sample video decodes to BGR frames and loops with continuous indexes."""
    with open_source(str(BUNDLED_VIDEO), SourceOptions(loop=False)) as source:
        count = 0
        with pytest.raises(EndOfStreamError):
            while True:
                frame = source.read()
                assert frame.image.ndim == 3 and frame.image.shape[2] == 3
                count += 1
    assert count > 1
    with open_source(str(BUNDLED_VIDEO)) as source:
        indexes = [source.read().index for _ in range(count + 2)]
    assert indexes == list(range(count + 2))
