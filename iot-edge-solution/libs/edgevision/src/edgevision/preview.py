"""The live preview on PREVIEW_PORT (5012): `GET /` a page with the annotated stream of each camera,
`GET /cameras/<name>/stream.mjpg` a camera's MJPEG stream, `GET /cameras/<name>/snapshot.jpg` its newest annotated
frame; `GET /stream.mjpg` and `GET /snapshot.jpg` are the first camera's (the one camera of CAMERA_PATH).

It never slows inference: the consumer only keeps a reference to the newest result; frames are annotated and
encoded only while someone watches, at most PREVIEW_MAX_FPS, on the consumer's own thread; each viewer follows the
newest JPEG with `LatestValue.wait_newer`, so a slow viewer skips frames instead of holding anyone back. The server
is small and hardened: a cap on connections (503 beyond it), socket timeouts, GET and HEAD only."""

from __future__ import annotations

import html
import http.server
import logging
import select
import socket
import threading
import time
from typing import Any, Callable
from urllib.parse import quote, unquote

from pydantic import Field

from edgevision.annotate import annotate, encode_jpeg
from edgevision.config import ModuleSettings
from edgevision.frames import Frame
from edgevision.pipeline.latest import LatestValue
from edgevision.tasks.results import TaskResult

log = logging.getLogger(__name__)

BOUNDARY = "edgevisionframe"


class PreviewSettings(ModuleSettings):
    """Settings of the live preview."""

    preview_port: int = Field(5012, ge=0, le=65535, description="PREVIEW_PORT: the preview's HTTP port; 0: off.")
    preview_host: str = Field("0.0.0.0", min_length=1, description="PREVIEW_HOST: address the preview listens on.")
    preview_max_fps: float = Field(
        10.0, gt=0, le=60, description="PREVIEW_MAX_FPS: most frames a second the preview encodes."
    )
    preview_max_connections: int = Field(
        8, ge=1, le=256, description="PREVIEW_MAX_CONNECTIONS: open preview connections before it answers 503."
    )
    preview_jpeg_quality: int = Field(80, ge=1, le=100, description="PREVIEW_JPEG_QUALITY: JPEG quality, 1..100.")


def _busy_response() -> bytes:
    body = b"too many preview connections; try again later\n"
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: 5\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], preview: PreviewServer, max_connections: int, timeout_s: float
    ) -> None:
        self.preview = preview
        self.timeout_s = timeout_s
        self.slots = threading.BoundedSemaphore(max_connections)
        self.refused = 0
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):  # pylint: disable=consider-using-with
            self.refused += 1
            try:
                request.settimeout(2.0)
                request.sendall(_busy_response())
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        # ThreadingMixIn's loop, with the slot given back *before* the socket closes: a client that sees its
        # connection end may connect again at once and must find the slot free
        try:
            self.finish_request(request, client_address)
        except Exception:  # pylint: disable=broad-exception-caught
            self.handle_error(request, client_address)
        finally:
            self.slots.release()
            self.shutdown_request(request)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    server_version = "edgevision-preview"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = 10.0  # socket timeout: a client that neither sends its request nor reads is dropped

    def setup(self) -> None:
        self.timeout = self.server.timeout_s
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # pylint: disable=redefined-builtin
        log.debug("preview %s: %s", self.address_string(), format % args)

    def _send(self, status: int, content_type: str, body: bytes, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:  # pylint: disable=invalid-name
        """As GET, without the body (the stream answers its headers only)."""
        self.do_GET()

    def do_GET(self) -> None:  # pylint: disable=invalid-name
        """The page, the stream or a snapshot."""
        preview = self.server.preview
        path = self.path.split("?", 1)[0]
        camera: str | None = None
        parts = path.split("/")
        if len(parts) == 4 and parts[1] == "cameras" and parts[3] in ("stream.mjpg", "snapshot.jpg"):
            camera = unquote(parts[2])
            if not preview.has_camera(camera):
                self._send(404, "text/plain; charset=utf-8", b"no such camera\n")
                return
            path = "/" + parts[3]
        if path == "/":
            self._send(
                200,
                "text/html; charset=utf-8",
                preview.page().encode("utf-8"),
                {"Content-Security-Policy": "default-src 'self'; style-src 'unsafe-inline'"},
            )
        elif path == "/snapshot.jpg":
            data = preview.snapshot(camera)
            if data is None:
                self._send(503, "text/plain; charset=utf-8", b"no frame yet\n", {"Retry-After": "1"})
            else:
                self._send(200, "image/jpeg", data)
        elif path == "/stream.mjpg":
            self._stream(camera)
        else:
            self._send(
                404,
                "text/plain; charset=utf-8",
                b"not found: try /, /stream.mjpg, /snapshot.jpg or /cameras/<name>/stream.mjpg\n",
            )

    def _peer_gone(self) -> bool:
        """True when the viewer closed its end (seen while no frame comes, so the viewer count stays right)."""
        try:
            ready, _, _ = select.select([self.connection], [], [], 0)
            return bool(ready) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _stream(self, camera: str | None) -> None:
        preview = self.server.preview
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if self.command == "HEAD":
            return
        with preview.watching(camera):
            seen = 0
            while not preview.stopping:
                seen, data = preview.wait_jpeg(seen, 1.0, camera)
                if data is None:
                    if self._peer_gone():
                        return
                    continue
                try:
                    self.wfile.write(
                        f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                        + data
                        + b"\r\n"
                    )
                    self.wfile.flush()
                except (OSError, socket.timeout):
                    return  # viewer gone, or too slow to read for `timeout` s


class _CameraView:
    """One camera's newest result (with its snapshot JPEG once encoded), its stream and its viewers."""

    def __init__(self) -> None:
        self.latest: list[Any] | None = None
        self.jpeg: LatestValue[bytes] = LatestValue()
        self.viewers = 0
        self.last_encoded_at: float | None = None


class PreviewServer:
    """A pipeline consumer serving the live preview; `start` binds the port (a port in use logs an error and
    leaves the preview off: inference goes on). `cameras` names the cameras in order (the first is the one
    /stream.mjpg shows); a camera not named is added when its first result comes."""

    name = "preview"

    def __init__(
        self,
        settings: PreviewSettings,
        fps: Callable[[], float] | None = None,
        clock: Callable[[], float] = time.monotonic,
        timeout_s: float = 10.0,
        cameras: list[str] | None = None,
    ) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self._fps = fps
        self._clock = clock
        self._views: dict[str, _CameraView] = {name: _CameraView() for name in cameras or []}
        self._views_lock = threading.Lock()
        self._serving: tuple[_Server, threading.Thread] | None = None
        self.stopping = False
        self.counters = {"results": 0, "encoded": 0, "snapshots": 0}

    # -- consumer --------------------------------------------------------------------------------------------
    @property
    def port(self) -> int | None:
        """The port it listens on (None while off)."""
        return None if self._serving is None else int(self._serving[0].server_address[1])

    @property
    def viewers(self) -> int:
        """Streams open now, over every camera."""
        with self._views_lock:
            return sum(view.viewers for view in self._views.values())

    @property
    def cameras(self) -> list[str]:
        """The cameras' names, the first one first."""
        with self._views_lock:
            return list(self._views)

    def has_camera(self, camera: str) -> bool:
        """True for a camera named at start or seen since."""
        with self._views_lock:
            return camera in self._views

    def _view(self, camera: str | None) -> _CameraView:
        """The named camera's view (added when new); None names the first camera."""
        with self._views_lock:
            if camera is None:
                if not self._views:
                    self._views["default"] = _CameraView()
                return next(iter(self._views.values()))
            view = self._views.get(camera)
            if view is None:
                view = self._views[camera] = _CameraView()
            return view

    def start(self) -> None:
        """Bind and serve on a thread of its own."""
        try:
            server = _Server(
                (self.settings.preview_host, self.settings.preview_port),
                self,
                self.settings.preview_max_connections,
                self.timeout_s,
            )
        except OSError as e:
            log.error(
                "preview off: cannot listen on %s:%d: %s", self.settings.preview_host, self.settings.preview_port, e
            )
            return
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.5}, name="preview-http", daemon=True
        )
        self._serving = (server, thread)
        thread.start()
        host = self.settings.preview_host
        reachable = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        log.info(
            "preview listening on %s:%d, http://%s:%d/ from this host (stream /stream.mjpg, snapshot /snapshot.jpg)",
            host,
            self.port,
            reachable,
            self.port,
        )

    def handle(self, frame: Frame, result: TaskResult) -> None:
        """Keep the newest result of the frame's camera; annotate and encode it only while someone watches that
        camera, at most PREVIEW_MAX_FPS per camera."""
        view = self._view(frame.camera)
        view.latest = [frame, result, None]
        self.counters["results"] += 1
        if view.viewers == 0:
            return
        now = self._clock()
        if view.last_encoded_at is not None and now - view.last_encoded_at < 1.0 / self.settings.preview_max_fps - 1e-9:
            return
        view.last_encoded_at = now
        view.jpeg.put(self._encode(frame, result))
        self.counters["encoded"] += 1

    def close(self) -> None:
        """Stop serving; open streams end within a second."""
        self.stopping = True
        if self._serving is not None:
            server, thread = self._serving
            self._serving = None
            server.shutdown()
            server.server_close()
            thread.join(5)

    # -- what the handlers use -------------------------------------------------------------------------------
    @property
    def model(self) -> str:
        """The model of the newest result of the first camera with one (`name:version`)."""
        with self._views_lock:
            latest = next((view.latest for view in self._views.values() if view.latest is not None), None)
        return "(no result yet)" if latest is None else latest[1].model

    def _encode(self, frame: Frame, result: TaskResult) -> bytes:
        extra = f"{self._fps():.1f} fps" if self._fps else None
        if len(self._views) > 1 or frame.camera != "default":
            extra = f"{frame.camera} | {extra}" if extra else frame.camera
        image = annotate(frame.image, result, captured_at=frame.captured_at_iso, extra=extra)
        return encode_jpeg(image, self.settings.preview_jpeg_quality)

    def watching(self, camera: str | None = None) -> _Watch:
        """Context manager counting one open stream of `camera` (None: the first)."""
        return _Watch(self, self._view(camera))

    def _add_viewer(self, view: _CameraView, delta: int) -> None:
        with self._views_lock:
            view.viewers += delta

    def wait_jpeg(self, seen: int, timeout: float, camera: str | None = None) -> tuple[int, bytes | None]:
        """The camera's newest encoded frame after sequence number `seen`, waiting up to `timeout` s."""
        return self._view(camera).jpeg.wait_newer(seen, timeout)

    def snapshot(self, camera: str | None = None) -> bytes | None:
        """The camera's newest result, annotated and encoded (once per result, however many ask); None before
        its first. None names the first camera."""
        latest = self._view(camera).latest
        if latest is None:
            return None
        if latest[2] is None:
            self.counters["snapshots"] += 1
            latest[2] = self._encode(latest[0], latest[1])
        return latest[2]

    def page(self) -> str:
        """The HTML page: the stream of each camera, with the model named."""
        model = html.escape(self.model)
        cameras = self.cameras or ["default"]
        if cameras == ["default"]:
            streams = '<img id="stream" src="/stream.mjpg" alt="live annotated stream">'
            links = '<a href="/snapshot.jpg" style="color:#8cf">snapshot</a>'
        else:
            streams = "".join(
                f'<figure><figcaption>{html.escape(name)} &middot; <a style="color:#8cf" '
                f'href="/cameras/{quote(name)}/snapshot.jpg">snapshot</a></figcaption>'
                f'<img class="stream" src="/cameras/{quote(name)}/stream.mjpg" '
                f'alt="live annotated stream of {html.escape(name)}"></figure>'
                for name in cameras
            )
            links = f"{len(cameras)} cameras"
        return (
            '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Preview - {model}</title>"
            "<style>body{margin:0;background:#111;color:#eee;font:14px sans-serif}"
            "header{padding:8px 12px}img{display:block;max-width:100%;margin:0 auto}"
            "figure{margin:8px}</style></head>"
            f'<body><header>Live preview &middot; model <b id="model">{model}</b> &middot; '
            f"at most {self.settings.preview_max_fps:g} fps &middot; {links}</header>"
            f"{streams}</body></html>\n"
        )


class _Watch:
    def __init__(self, preview: PreviewServer, view: _CameraView) -> None:
        self.preview = preview
        self.view = view

    def __enter__(self) -> None:
        self.preview._add_viewer(self.view, 1)  # pylint: disable=protected-access

    def __exit__(self, *exc: object) -> None:
        self.preview._add_viewer(self.view, -1)  # pylint: disable=protected-access
