"""The live preview over real HTTP on a free port: the page, the MJPEG stream and the snapshot of an annotated
bundled photo; encoding only while someone watches and at most PREVIEW_MAX_FPS; a viewer that does not read
holds nobody back; the connection cap, timeouts and bad requests."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from typing import Iterator

import cv2
import numpy as np
import pytest

from edgevision.config import load_settings
from edgevision.frames import Frame
from edgevision.preview import BOUNDARY, PreviewServer, PreviewSettings
from edgevision.tasks.results import DetectionResult, Prediction


class Clock:
    """A hand-driven monotonic clock."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def detection(image: np.ndarray) -> DetectionResult:
    """A detection result for the dog photo: one dog box."""
    return DetectionResult(
        task="detection",
        model="nanodet-m-416:1",
        predictions=(Prediction("dog", 0.42, 16, box=(120.0, 220.0, 320.0, 540.0)),),
        image_size=(image.shape[1], image.shape[0]),
    )


@pytest.fixture
def dog(media) -> np.ndarray:
    """The bundled dog photo."""
    return media.image("dog.jpg")


def make_preview(clock=time.monotonic, timeout_s: float = 10.0, **settings: object) -> PreviewServer:
    """A PreviewServer on a free port of 127.0.0.1."""
    values = {"preview_port": 0, "preview_host": "127.0.0.1", "preview_max_fps": 10, **settings}
    return PreviewServer(load_settings(PreviewSettings, **values), fps=lambda: 12.5, clock=clock, timeout_s=timeout_s)


@pytest.fixture
def preview() -> Iterator[PreviewServer]:
    """A started preview."""
    server = make_preview()
    server.start()
    yield server
    server.close()


def get(server: PreviewServer, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """One HTTP request: status, headers, body."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def open_stream(server: PreviewServer) -> socket.socket:
    """A raw socket that asked for the MJPEG stream."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
    return sock


def read_parts(sock: socket.socket, count: int) -> list[bytes]:
    """The first `count` JPEG parts of an MJPEG response."""
    data = b""
    parts: list[bytes] = []
    while len(parts) < count:
        chunk = sock.recv(65536)
        assert chunk, "stream ended"
        data += chunk
        while True:
            start = data.find(f"--{BOUNDARY}\r\n".encode())
            head_end = data.find(b"\r\n\r\n", start)
            if start < 0 or head_end < 0:
                break
            headers = data[start:head_end].decode()
            length = int(headers.split("Content-Length: ")[1].split("\r\n")[0])
            if len(data) < head_end + 4 + length:
                break
            parts.append(data[head_end + 4 : head_end + 4 + length])
            data = data[head_end + 4 + length :]
    return parts


def wait_for(condition, timeout: float = 10.0) -> None:
    """Poll `condition` until it is truthy (returned) or the timeout passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_page_names_the_model_and_embeds_the_stream(preview: PreviewServer, dog: np.ndarray) -> None:
    preview.handle(Frame(dog, 0, 0.0, "t"), detection(dog))
    status, headers, body = get(preview, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert 'src="/stream.mjpg"' in body.decode() and "nanodet-m-416:1" in body.decode()
    assert "default-src 'self'" in headers["Content-Security-Policy"]


def test_snapshot_is_the_annotated_newest_frame(preview: PreviewServer, dog: np.ndarray) -> None:
    assert get(preview, "/snapshot.jpg")[0] == 503  # no frame yet
    preview.handle(Frame(dog, 0, 0.0, "t"), detection(dog))
    status, headers, body = get(preview, "/snapshot.jpg")
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == dog.shape
    # the box edge (green) is drawn where the box is; far from it the photo is as it was (JPEG noise aside)
    assert np.abs(image[400, 120].astype(int) - dog[400, 120].astype(int)).sum() > 100
    assert np.abs(image[100, 700].astype(int) - dog[100, 700].astype(int)).sum() < 60


def test_snapshots_encode_each_result_once_however_many_ask(preview: PreviewServer, dog: np.ndarray) -> None:
    preview.handle(Frame(dog, 0, 0.0, "t"), detection(dog))
    first = [get(preview, "/snapshot.jpg")[2] for _ in range(3)]
    assert preview.counters["snapshots"] == 1 and first[0] == first[1] == first[2]
    preview.handle(Frame(dog[:, ::-1].copy(), 1, 0.0, "t"), detection(dog))
    assert get(preview, "/snapshot.jpg")[2] != first[0]
    assert preview.counters["snapshots"] == 2


def test_encodes_only_while_watched_and_at_most_max_fps(dog: np.ndarray) -> None:
    clock = Clock()
    server = make_preview(clock, preview_max_fps=5)
    server.start()
    try:
        for index in range(20):
            clock.now += 0.05
            server.handle(Frame(dog, index, 0.0, "t"), detection(dog))
        assert server.counters["encoded"] == 0  # nobody watches
        sock = open_stream(server)
        wait_for(lambda: server.viewers == 1)
        for index in range(40):  # 2 s of 20 fps results at 5 fps max: 10 encodings
            clock.now += 0.05
            server.handle(Frame(dog, index, 0.0, "t"), detection(dog))
        assert server.counters["encoded"] == 10
        parts = read_parts(sock, 1)
        assert cv2.imdecode(np.frombuffer(parts[0], np.uint8), cv2.IMREAD_COLOR).shape == dog.shape
        sock.close()
        wait_for(lambda: server.viewers == 0)
    finally:
        server.close()


def test_a_viewer_that_never_reads_holds_back_neither_results_nor_other_viewers(dog: np.ndarray) -> None:
    server = make_preview(preview_max_fps=60)
    server.start()
    try:
        stuck = open_stream(server)
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        reader = open_stream(server)
        wait_for(lambda: server.viewers == 2)
        got: list[bytes] = []
        thread = threading.Thread(target=lambda: got.extend(read_parts(reader, 30)), daemon=True)
        thread.start()
        index = 0
        while thread.is_alive() and index < 3000:
            server.handle(Frame(dog, index, 0.0, "t"), detection(dog))  # returns at once: no socket in its way
            index += 1
            time.sleep(0.01)
        thread.join(1)
        assert len(got) == 30, "the reading viewer stalled behind the one that does not read"
        stuck.close()
        reader.close()
    finally:
        server.close()


def test_connection_cap_answers_503_and_frees_slots(dog: np.ndarray) -> None:
    server = make_preview(preview_max_connections=2)
    server.start()
    try:
        streams = [open_stream(server), open_stream(server)]
        wait_for(lambda: server.viewers == 2)
        status, headers, _ = get(server, "/")
        assert status == 503 and headers["Retry-After"] == "5"
        for sock in streams:
            sock.close()
        wait_for(lambda: server.viewers == 0)
        server.handle(Frame(dog, 0, 0.0, "t"), detection(dog))  # wake the stream loops so they notice
        wait_for(lambda: get(server, "/")[0] == 200)
    finally:
        server.close()


def test_a_client_that_sends_nothing_is_dropped_after_the_timeout() -> None:
    server = make_preview(timeout_s=0.3, preview_max_connections=1)
    server.start()
    try:
        idle = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        assert idle.recv(100) == b""  # closed by the server
        idle.close()
        assert get(server, "/")[0] == 200  # its slot is free again
    finally:
        server.close()


@pytest.mark.parametrize(
    "path, method, status",
    [("/nope", "GET", 404), ("/", "POST", 501), ("/", "DELETE", 501), ("/snapshot.jpg?x=1", "HEAD", 503)],
)
def test_bad_requests(preview: PreviewServer, path: str, method: str, status: int) -> None:
    assert get(preview, path, method)[0] == status


def test_port_in_use_leaves_the_preview_off_and_results_flowing(dog: np.ndarray, caplog) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = make_preview(preview_port=taken.getsockname()[1])
        server.start()
        assert server.port is None and "preview off: cannot listen" in caplog.text
        server.handle(Frame(dog, 0, 0.0, "t"), detection(dog))
        assert server.snapshot() is not None
        server.close()


def test_each_camera_has_its_page_entry_stream_and_snapshot(dog: np.ndarray, media) -> None:
    """Several cameras: the page lists each; /cameras/<name>/... serve that camera's frames; /snapshot.jpg and
    /stream.mjpg stay the first camera's; an unknown camera is a 404."""
    squirrel = media.image("squirrel_cls.jpg")
    values = {"preview_port": 0, "preview_host": "127.0.0.1", "preview_max_fps": 10}
    server = PreviewServer(load_settings(PreviewSettings, **values), cameras=["lobby", "door"])
    server.start()
    try:
        assert get(server, "/cameras/door/snapshot.jpg")[0] == 503  # known, no frame yet
        server.handle(Frame(dog, 0, 0.0, "t", camera="lobby"), detection(dog))
        server.handle(Frame(squirrel, 0, 0.0, "t", camera="door"), detection(squirrel))
        page = get(server, "/")[2].decode()
        for name in ("lobby", "door"):
            assert f'src="/cameras/{name}/stream.mjpg"' in page and f'href="/cameras/{name}/snapshot.jpg"' in page
        shapes = {}
        for path in ("/snapshot.jpg", "/cameras/lobby/snapshot.jpg", "/cameras/door/snapshot.jpg"):
            status, _, body = get(server, path)
            assert status == 200, path
            shapes[path] = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).shape
        assert shapes["/snapshot.jpg"] == shapes["/cameras/lobby/snapshot.jpg"] == dog.shape
        assert shapes["/cameras/door/snapshot.jpg"] == squirrel.shape
        assert get(server, "/cameras/garage/snapshot.jpg")[0] == 404
        assert get(server, "/cameras/door/other.jpg")[0] == 404

        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        try:
            sock.sendall(b"GET /cameras/door/stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
            wait_for(lambda: server.viewers == 1)
            server.handle(Frame(dog, 1, 0.0, "t", camera="lobby"), detection(dog))  # not watched: not encoded
            server.handle(Frame(squirrel, 1, 0.0, "t", camera="door"), detection(squirrel))
            part = read_parts(sock, 1)[0]
            assert cv2.imdecode(np.frombuffer(part, np.uint8), cv2.IMREAD_COLOR).shape == squirrel.shape
            assert server.counters["encoded"] == 1
        finally:
            sock.close()
    finally:
        server.close()
