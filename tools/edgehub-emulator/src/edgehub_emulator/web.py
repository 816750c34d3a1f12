"""The HTTP side (service API, module-to-module methods, workload API) on aiohttp's web server.

aiohttp parses requests and enforces the limits (header sizes, body size, idle and unfinished-request timeouts);
this module only adapts its requests to the handlers' `Request` / `Response` and caps connections per server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from aiohttp import web

try:
    import resource
except ImportError:  # Windows: no open-files limit to raise
    resource = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

# A connection that has not sent a whole request head within this many seconds is closed (aiohttp's keep-alive
# timer runs from the start of a connection), and so is one whose body does not arrive in time.
READ_TIMEOUT_SECS = 10.0
MAX_CONNECTIONS = 512  # per server; over it, new connections are closed at once
TLS_HANDSHAKE_TIMEOUT_SECS = 10.0


@dataclass
class Request:
    """One request as the handlers see it; header names are lower case."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Response:
    """What a handler returns."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"

    @classmethod
    def json(cls, status: int, data: Any) -> Response:
        """A JSON response."""
        return cls(status, json.dumps(data).encode("utf-8"))

    @classmethod
    def error(cls, status: int, message: str) -> Response:
        """An error in the shape IoT Hub uses (`Message`, `ExceptionMessage`)."""
        return cls.json(status, {"Message": message, "ExceptionMessage": message})


Handler = Callable[[Request, list[str]], Awaitable[Response]]
# (HTTP method, aiohttp path template, handler); a trailing slash is accepted too.
Route = tuple[str, str, Handler]


def _to_aiohttp(response: Response) -> web.Response:
    return web.Response(status=response.status, body=response.body, content_type=response.content_type, charset="utf-8")


def raise_open_files_limit() -> None:
    """Raise the soft limit of open files to the hard limit, so connection caps rather than the OS decide."""
    if resource is None:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
        except (ValueError, OSError) as e:
            logger.debug("cannot raise the open-files limit (%s)", e)


class WebServer:
    """One aiohttp application serving `routes`, listening wherever `listen` is called."""

    def __init__(
        self,
        routes: list[Route],
        max_body: int,
        name: str,
        read_timeout: float = READ_TIMEOUT_SECS,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.name = name
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self._refused = 0
        app = web.Application(client_max_size=max_body, middlewares=[self._errors])
        for method, path, handler in routes:
            wrapped = self._adapt(handler)
            app.router.add_route(method, path, wrapped)
            app.router.add_route(method, path + "/", wrapped)
        self._runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            keepalive_timeout=read_timeout,
            max_line_size=16 * 1024,
            max_field_size=16 * 1024,
        )
        self._servers: list[asyncio.base_events.Server] = []

    def _adapt(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def run(request: web.Request) -> web.Response:
            try:
                body = await asyncio.wait_for(request.read(), self.read_timeout)
            except asyncio.TimeoutError:
                return _to_aiohttp(Response.error(408, f"the body did not arrive within {self.read_timeout:g} s"))
            ours = Request(
                request.method,
                request.path,
                request.query_string,
                {k.lower(): v for k, v in request.headers.items()},
                body,
            )
            args = list(request.match_info.values())
            return _to_aiohttp(await handler(ours, args))

        return run

    @web.middleware
    async def _errors(self, request: web.Request, handler: Callable[[web.Request], Awaitable[Any]]) -> Any:
        """Library errors (404, 405, 413, ...) in IoT Hub's error shape; a handler's crash is a logged 500."""
        try:
            return await handler(request)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            text = e.text if e.status == 413 and e.text else e.reason
            return _to_aiohttp(Response.error(e.status, f"{text}: {request.method} {request.path}"))
        except Exception:  # pylint: disable=broad-exception-caught
            logger.exception("%s: %s %s failed", self.name, request.method, request.path)
            return _to_aiohttp(Response.error(500, "internal error in the emulator"))

    async def setup(self) -> None:
        """Prepare the application (once, before listen)."""
        await self._runner.setup()

    def _factory(self) -> Any:
        server = self._runner.server
        assert server is not None

        def protocol() -> asyncio.Protocol:
            if len(server.connections) >= self.max_connections:
                self._refused += 1
                if self._refused == 1 or self._refused % 1000 == 0:
                    logger.warning(
                        "%s: %d connections open, the limit; refusing new ones (%d so far)",
                        self.name,
                        self.max_connections,
                        self._refused,
                    )
                return _Refuse()
            return server()

        return protocol

    async def listen(self, host: str, port: int, tls: ssl.SSLContext | None) -> asyncio.base_events.Server:
        """Listen on host:port (TLS when given a context)."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            self._factory(),
            host,
            port,
            ssl=tls,
            reuse_address=True,
            backlog=128,
            ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_SECS if tls else None,
        )
        self._servers.append(server)
        return server

    async def close(self) -> None:
        """Stop listening and close open connections."""
        for server in self._servers:
            server.close()
        await self._runner.cleanup()


class _Refuse(asyncio.Protocol):
    """Closes a connection over the cap as soon as it is made."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()
