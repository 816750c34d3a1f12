"""A small asyncio HTTP/1.1 server (keep-alive, Content-Length bodies) for the service and workload APIs."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Awaitable, Callable

logger = logging.getLogger(__name__)

MAX_HEADER_LINES = 100


@dataclass
class Request:
    """One parsed request; header names are lower case."""

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
    content_type: str = "application/json; charset=utf-8"

    @classmethod
    def json(cls, status: int, data: Any) -> Response:
        """A JSON response."""
        return cls(status, json.dumps(data).encode("utf-8"))

    @classmethod
    def error(cls, status: int, message: str) -> Response:
        """An error in the shape IoT Hub uses (`Message`, `ExceptionMessage`)."""
        return cls.json(status, {"Message": message, "ExceptionMessage": message})


Handler = Callable[[Request], Awaitable[Response]]


class _Refused(Exception):
    """A request refused before it reaches the handler; the connection closes after the answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.response = Response.error(status, message)


class HttpServer:
    """Parses requests and hands them to one handler; a bad request closes only its own connection."""

    def __init__(self, handler: Handler, max_body: int, name: str) -> None:
        self.handler = handler
        self.max_body = max_body
        self.name = name
        self._tasks: set[asyncio.Task[None]] = set()

    async def close_all(self) -> None:
        """Cancel the handlers of open connections."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve requests on one connection until it closes."""
        task = asyncio.current_task()
        if task:
            self._tasks.add(task)
        try:
            while True:
                request = await self._read_request(reader, writer)
                if request is None:
                    break
                try:
                    response = await self.handler(request)
                except Exception:  # pylint: disable=broad-exception-caught
                    logger.exception("%s: %s %s failed", self.name, request.method, request.path)
                    response = Response.error(500, "internal error in the emulator")
                keep_alive = request.headers.get("connection", "").lower() != "close"
                self._write(writer, response, keep_alive)
                await writer.drain()
                if not keep_alive:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        except asyncio.CancelledError:
            pass  # the emulator is stopping; finishing normally keeps asyncio from logging the cancellation
        finally:
            writer.close()
            if task:
                self._tasks.discard(task)

    async def _read_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Request | None:
        """The next request; None when the connection ended or the request was refused (answered, closing)."""
        try:
            return await self._parse_request(reader)
        except _Refused as refused:
            self._write(writer, refused.response, False)
            return None

    async def _parse_request(self, reader: asyncio.StreamReader) -> Request | None:
        line = await reader.readline()
        if not line:
            return None
        parts = line.decode("latin-1").strip().split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _Refused(400, "malformed request line")
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADER_LINES):
            header = (await reader.readline()).decode("latin-1")
            if header in ("\r\n", "\n", ""):
                break
            name, _, value = header.partition(":")
            headers[name.strip().lower()] = value.strip()
        else:
            raise _Refused(431, "too many header lines")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raise _Refused(411, "send a Content-Length body")
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError as e:
            raise _Refused(400, "bad Content-Length") from e
        if length > self.max_body or length < 0:
            raise _Refused(413, f"body over the limit of {self.max_body} bytes")
        body = await reader.readexactly(length) if length else b""
        path, _, query = parts[1].partition("?")
        return Request(parts[0].upper(), path, query, headers, body)

    @staticmethod
    def _write(writer: asyncio.StreamWriter, response: Response, keep_alive: bool) -> None:
        try:
            reason = HTTPStatus(response.status).phrase
        except ValueError:
            reason = ""
        head = [
            f"HTTP/1.1 {response.status} {reason}",
            f"Content-Length: {len(response.body)}",
            f"Content-Type: {response.content_type}",
            f"Connection: {'keep-alive' if keep_alive else 'close'}",
        ]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body)
