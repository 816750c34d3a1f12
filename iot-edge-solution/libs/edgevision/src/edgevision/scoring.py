"""The scoring API: HTTP on SCORING_PORT, served by uvicorn on its own thread, running the module's model.

`POST /score` takes an image body (image/jpeg, image/png) or a multipart form with a `file` part and answers with
the JSON of `edgevision infer` plus the model's name and version. `GET /healthz` says the server is alive,
`GET /readyz` that a model is loaded, `GET /metrics` is Prometheus text. Every request runs the model the
ModelManager has in service (shared with the pipeline: no session per request)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, AsyncIterator, Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import Field, field_validator
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from edgevision.config import ModuleSettings, parse_bool
from edgevision.errors import EdgeVisionError
from edgevision.manager import ModelManager, ModelNotReadyError, ServedModel
from edgevision.tasks import ImageError, decode_image

log = logging.getLogger(__name__)

IMAGE_TYPES = ("image/jpeg", "image/png")
MULTIPART = "multipart/form-data"


class ScoringSettings(ModuleSettings):
    """The scoring API's settings."""

    scoring_enabled: bool = Field(True, description="SCORING_ENABLED: serve the scoring API (True/False).")
    scoring_host: str = Field("0.0.0.0", min_length=1, description="SCORING_HOST: address to listen on.")
    scoring_port: int = Field(8080, ge=1, le=65535, description="SCORING_PORT: HTTP port (80 in the container).")
    scoring_max_bytes: int = Field(
        10 * 1024 * 1024, gt=0, description="SCORING_MAX_BYTES: largest request body accepted (413 above)."
    )

    @field_validator("scoring_enabled", mode="before")
    @classmethod
    def _strict_scoring_bool(cls, value: Any) -> bool:
        return parse_bool(value)


class BodyError(Exception):
    """A request the API refuses: its HTTP status and a message for the JSON error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ScoringMetrics:
    """Prometheus metrics of one server, in their own registry (several servers may live in one process)."""

    def __init__(self, fps: Callable[[], float] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "scoring_requests", "Scoring API requests by path and status", ["path", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "scoring_request_seconds",
            "Scoring API request latency by path",
            ["path"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.inference = Histogram(
            "scoring_inference_seconds",
            "Model inference time of /score requests",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
        )
        self.pipeline_fps = Gauge(
            "pipeline_fps", "Pipeline results per second (sliding window)", registry=self.registry
        )
        if fps is not None:
            self.pipeline_fps.set_function(fps)
        self.model_info = Gauge(
            "model_active_info",
            "The model in service (1 for the active name/version)",
            ["name", "version"],
            registry=self.registry,
        )
        self.model_swaps = Counter("model_activations", "Models put in service", registry=self.registry)
        self._lock = threading.Lock()

    def model_changed(self, served: ServedModel) -> None:
        """Point model_active_info at `served`."""
        with self._lock:
            self.model_info.clear()
            self.model_info.labels(name=served.name, version=served.version).set(1)
            self.model_swaps.inc()


async def _limited_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BodyError(400, "Content-Length is not a number")
        if int(declared) > limit:
            raise BodyError(413, f"request body of {declared} bytes is over the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyError(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _image_bytes(request: Request, limit: int) -> bytes:
    """The image of a /score request: the body itself, or the `file` part of a multipart form."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in (*IMAGE_TYPES, MULTIPART):
        shown = content_type or "none"
        raise BodyError(415, f"unsupported content type {shown}; send {', '.join(IMAGE_TYPES)} or {MULTIPART}")
    body = await _limited_body(request, limit)
    if content_type != MULTIPART:
        return body
    try:
        form = await MultiPartParser(request.headers, _once(body), max_files=1, max_fields=10).parse()
    except MultiPartException as e:
        raise BodyError(400, f"malformed multipart form: {e.message}") from e
    except ValueError as e:  # python-multipart's own parse errors reach us unwrapped in some releases
        raise BodyError(400, f"malformed multipart form: {e}") from e
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise BodyError(400, "the multipart form needs a file part named 'file'")
    part_type = (upload.content_type or "").split(";")[0].strip().lower()
    if part_type and part_type not in (*IMAGE_TYPES, "application/octet-stream"):
        raise BodyError(415, f"unsupported file type {part_type}; send {', '.join(IMAGE_TYPES)}")
    data = await upload.read()
    await upload.close()
    return data


class ScoringServer:
    """The scoring API over `manager`'s model; `start()` returns once it listens, `stop()` shuts it down."""

    def __init__(
        self,
        manager: ModelManager,
        host: str = "127.0.0.1",
        port: int = 8080,
        max_bytes: int = 10 * 1024 * 1024,
        fps: Callable[[], float] | None = None,
    ) -> None:
        self.manager = manager
        self.host = host
        self.port = port
        self.max_bytes = max_bytes
        self.metrics = ScoringMetrics(fps)
        if manager.current is not None:
            self.metrics.model_changed(manager.current)
        manager.on_change(self.metrics.model_changed)
        self.app = Starlette(
            routes=[
                Route("/score", self._score, methods=["POST"]),
                Route("/healthz", self._healthz, methods=["GET"]),
                Route("/readyz", self._readyz, methods=["GET"]),
                Route("/metrics", self._metrics, methods=["GET"]),
            ],
            # every answer of this API is JSON, Starlette's own 404 and 405 included
            exception_handlers={HTTPException: self._http_error},
        )
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(
        cls, settings: ScoringSettings, manager: ModelManager, fps: Callable[[], float] | None = None
    ) -> ScoringServer:
        """A server as SCORING_HOST, SCORING_PORT and SCORING_MAX_BYTES say."""
        return cls(manager, settings.scoring_host, settings.scoring_port, settings.scoring_max_bytes, fps)

    # -- handlers --------------------------------------------------------------------------------------------
    async def _http_error(self, request: Request, error: Exception) -> JSONResponse:
        status = getattr(error, "status_code", 500)
        detail = getattr(error, "detail", "") or "error"
        headers = getattr(error, "headers", None)
        known = request.url.path in ("/score", "/healthz", "/readyz", "/metrics")
        self.metrics.requests.labels(path=request.url.path if known else "other", status=str(status)).inc()
        if status == 405:
            detail = f"method {request.method} not allowed on {request.url.path}"
        return JSONResponse({"error": detail}, status_code=status, headers=headers)

    def _answer(self, path: str, started: float, status: int, body: dict[str, Any]) -> JSONResponse:
        self.metrics.requests.labels(path=path, status=str(status)).inc()
        self.metrics.latency.labels(path=path).observe(time.perf_counter() - started)
        return JSONResponse(body, status_code=status)

    def _run(self, data: bytes) -> dict[str, Any]:
        image = decode_image(data)
        with self.manager.acquire() as served:
            result = served.run(image)
            answer = result.to_dict()
            answer["model_name"] = served.name
            answer["model_version"] = served.version
        self.metrics.inference.observe(result.inference_ms / 1000)
        return answer

    async def _score(self, request: Request) -> Response:
        started = time.perf_counter()
        try:
            data = await _image_bytes(request, self.max_bytes)
            answer = await run_in_threadpool(self._run, data)
        except BodyError as e:
            return self._answer("/score", started, e.status, {"error": e.message})
        except ImageError as e:
            return self._answer("/score", started, 400, {"error": f"not a usable image: {e}"})
        except ModelNotReadyError as e:
            return self._answer("/score", started, 503, {"error": str(e)})
        except EdgeVisionError as e:
            log.error("scoring failed: %s", e)
            return self._answer("/score", started, 500, {"error": f"inference failed: {e}"})
        return self._answer("/score", started, 200, answer)

    async def _healthz(self, _request: Request) -> Response:
        return self._answer("/healthz", time.perf_counter(), 200, {"status": "alive"})

    async def _readyz(self, _request: Request) -> Response:
        started = time.perf_counter()
        current = self.manager.current
        if current is None or not self.manager.ready:
            return self._answer("/readyz", started, 503, {"status": "no model loaded"})
        return self._answer(
            "/readyz", started, 200, {"status": "ready", "model_name": current.name, "model_version": current.version}
        )

    async def _metrics(self, _request: Request) -> Response:
        return PlainTextResponse(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> None:
        """Listen on host:port on a background thread; raises EdgeVisionError when the port cannot be bound."""
        import uvicorn  # pylint: disable=import-outside-toplevel

        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # the module owns signals
        failure: list[BaseException] = []

        def serve() -> None:
            try:
                asyncio.run(server.serve())
            except BaseException as e:  # pylint: disable=broad-exception-caught  # SystemExit on a busy port
                failure.append(e)

        self._server = server
        self._thread = threading.Thread(target=serve, name="scoring-api", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                reason = f": {failure[0]!r}" if failure else ""
                raise EdgeVisionError(f"the scoring API cannot listen on {self.host}:{self.port}{reason}")
            time.sleep(0.02)
        log.info(
            "scoring API on http://%s:%d (POST /score, GET /healthz /readyz /metrics; HTTP parser: %s)",
            self.host,
            self.port,
            self.http_parser,
        )

    @property
    def http_parser(self) -> str:
        """The HTTP/1.1 implementation uvicorn serves with: `httptools` (C, a dependency) or `h11` (pure Python,
        uvicorn's fallback when httptools cannot be imported)."""
        if self._server is None:
            return "not started"
        return "httptools" if "HttpTools" in self._server.config.http_protocol_class.__name__ else "h11"

    @property
    def url(self) -> str:
        """Base URL to reach the server from this machine."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        """Stop serving; waits for requests in flight (a few seconds at most)."""
        if self._server is None:
            return
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self._server = None
