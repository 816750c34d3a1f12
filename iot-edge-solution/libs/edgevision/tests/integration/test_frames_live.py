"""Live sources against a real MJPEG-over-HTTP server on 127.0.0.1, read by OpenCV's FFmpeg backend:
newest-frame reads, reconnect with backoff, the stall watchdog, credential redaction and close()."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import pytest

from edgevision.frames import (
    Frame,
    FrameSource,
    FrameSourceError,
    SourceOpenError,
    SourceOptions,
    open_source,
)
from solution_testkit import free_port

pytestmark = pytest.mark.integration

BOUNDARY = "frame"


class MjpegServer:
    """A `multipart/x-mixed-replace` MJPEG stream as IP cameras serve it; stoppable, restartable on one port.

    `frames_per_connection` makes the server go quiet (connection held open, nothing sent) after that many
    frames, like a camera that hangs without disconnecting.
    """

    def __init__(self, fps: float = 25.0, frames_per_connection: int | None = None) -> None:
        self.fps = fps
        self.frames_per_connection = frames_per_connection
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        """Serve on 127.0.0.1 (the same port as before after a restart)."""
        stopping = self._stopping = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            """Streams numbered JPEG frames until the server stops."""

            def do_GET(self) -> None:  # pylint: disable=invalid-name
                """Send the multipart stream."""
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.end_headers()
                sent = 0
                while not stopping.is_set():
                    if owner.frames_per_connection is not None and sent >= owner.frames_per_connection:
                        stopping.wait(0.05)
                        continue
                    ok, jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), (sent * 10) % 256, np.uint8))
                    assert ok
                    part = jpeg.tobytes()
                    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(part)}\r\n\r\n"
                    try:
                        self.wfile.write(head.encode() + part + b"\r\n")
                        self.wfile.flush()
                    except OSError:
                        return
                    sent += 1
                    stopping.wait(1.0 / owner.fps)

            def log_message(self, format: str, *args: object) -> None:  # pylint: disable=redefined-builtin
                """Keep the test output quiet."""

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, name="mjpeg-server", daemon=True).start()

    def stop(self) -> None:
        """Stop serving and drop every open connection."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def url(self, userinfo: str = "") -> str:
        """The stream URL, optionally with `user:pass@`."""
        return f"http://{userinfo}127.0.0.1:{self.port}/stream.mjpg"


@pytest.fixture(name="server")
def server_fixture() -> Iterator[MjpegServer]:
    """A running MJPEG server at 25 fps, stopped after the test."""
    server = MjpegServer()
    server.start()
    yield server
    server.stop()


def wait_until(condition: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    """Poll `condition` until it holds or the (generous) timeout passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def read_or_close(source: FrameSource, timeout_s: float = 30.0) -> Frame:
    """read(), but close the source if no frame comes in time, so a broken test fails instead of hanging."""
    guard = threading.Timer(timeout_s, source.close)
    guard.start()
    try:
        return source.read()
    finally:
        guard.cancel()


def test_stream_delivers_newest_frames_in_order(server: MjpegServer) -> None:
    """A stream is live, yields BGR frames with rising indexes, and counts what it captured."""
    with open_source(server.url(), SourceOptions(io_timeout_s=5.0)) as source:
        assert source.live is True
        frames = [read_or_close(source) for _ in range(5)]
        time.sleep(0.3)  # let frames pile up: read() must skip to the newest
        newest = read_or_close(source)
        stats = source.stats
    indexes = [f.index for f in frames] + [newest.index]
    assert indexes == sorted(set(indexes))
    assert newest.index > frames[-1].index + 1
    assert all(f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 for f in frames)
    assert stats["frames_read"] >= newest.index + 1
    assert stats["frames_dropped"] >= 1
    assert stats["reconnects"] == 0 and stats["stalls"] == 0


def test_reconnects_with_backoff_flags_the_stall_and_resumes(
    server: MjpegServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopping the server: reconnect attempts with growing, capped delays and one stall warning;
    restarting it: frames resume with indexes still counting, the stall flag clears, no password is logged."""
    caplog.set_level(logging.INFO, logger="edgevision.frames")
    options = SourceOptions(reconnect_initial_s=0.05, reconnect_max_s=0.4, watchdog_s=0.5, io_timeout_s=5.0)
    source = open_source(server.url("viewer:s3cret-pw@"), options)
    with source:
        before = read_or_close(source)
        assert "s3cret" not in before.source

        server.stop()
        assert wait_until(lambda: source.stats["reconnect_attempts"] >= 5 and source.stats["stalled"])
        stalled = source.stats
        assert stalled["stalls"] == 1
        assert stalled["reconnects"] == 0
        assert stalled["last_frame_age_s"] >= 0.5

        restarted_at = time.monotonic()
        server.start()
        assert wait_until(lambda: source.stats["reconnects"] == 1 and not source.stats["stalled"])
        after = read_or_close(source)  # the newest frame, so one captured after the reconnect
        resumed = source.stats

    assert after.timestamp > restarted_at

    assert after.index > before.index
    assert resumed["stalls"] == 1
    assert resumed["frames_read"] > after.index

    messages = [r.getMessage() for r in caplog.records]
    delays = [float(m) for m in re.findall(r"reconnecting to \S+ in ([\d.]+) s", "\n".join(messages))]
    assert delays[:4] == [0.05, 0.1, 0.2, 0.4]
    assert max(delays) == 0.4
    assert sum("no frames from" in m for m in messages) == 1  # warned once per stall
    assert any("resumed after" in m for m in messages)
    assert any(re.search(r"reconnected to \S+ after \d+ attempt", m) for m in messages)
    assert not [m for m in messages if "s3cret" in m]


def test_live_source_that_cannot_open_first_time_raises(caplog: pytest.LogCaptureFixture) -> None:
    """A stream that is down at start-up fails open() (a bad CAMERA_PATH fails start-up), password unsaid."""
    caplog.set_level(logging.DEBUG, logger="edgevision.frames")
    source = open_source(f"http://admin:topsecret@127.0.0.1:{free_port()}/x.mjpg", SourceOptions(io_timeout_s=5.0))
    with pytest.raises(SourceOpenError) as excinfo:
        source.open()
    assert "127.0.0.1" in str(excinfo.value)
    assert "topsecret" not in str(excinfo.value)
    assert not [r for r in caplog.records if "topsecret" in r.getMessage()]
    source.close()


@pytest.mark.timeout(60)
def test_close_from_another_thread_unblocks_read() -> None:
    """read() waiting on a stream that went quiet returns (with an error) as soon as close() is called."""
    server = MjpegServer(frames_per_connection=3)
    server.start()
    try:
        source = open_source(server.url(), SourceOptions(io_timeout_s=1.0, watchdog_s=0.0))
        source.open()
        first = read_or_close(source)
        closer = threading.Timer(0.5, source.close)
        closer.start()
        # At most 3 frames exist, so this loop ends only through close(); if close() failed to wake read(),
        # the test would hang until pytest-timeout fails it.
        with pytest.raises(FrameSourceError, match="source closed"):
            for _ in range(10):
                assert source.read().index > first.index
        closer.join()
        assert source.stats["frames_read"] <= 3
        source.close()  # idempotent
    finally:
        server.stop()


def test_hung_stream_is_flagged_then_reconnected_after_the_read_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A camera that keeps the connection open but stops sending: the watchdog flags the stall while the
    grabber is blocked in OpenCV, the read timeout turns the hang into a reconnect, and frames come again."""
    caplog.set_level(logging.INFO, logger="edgevision.frames")
    server = MjpegServer(frames_per_connection=3)
    server.start()
    options = SourceOptions(reconnect_initial_s=0.05, watchdog_s=0.3, io_timeout_s=1.0)
    try:
        with open_source(server.url(), options) as source:
            read_or_close(source)
            assert wait_until(lambda: source.stats["stalls"] >= 1 and source.stats["reconnects"] >= 1)
            assert wait_until(lambda: source.stats["frames_read"] > 3)
    finally:
        server.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert any("lost live source" in m for m in messages)
    assert any("no frames from" in m for m in messages)
