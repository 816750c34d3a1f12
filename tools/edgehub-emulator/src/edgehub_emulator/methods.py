"""Direct methods: requests to connected modules and their answers, matched by (identity, request id).

Request ids are random, and an answer counts only when the identity the request went to sends it: another module
cannot answer (or forge an answer to) someone else's call. A call whose module disconnects ends at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
import urllib.parse
from typing import Any, Callable, Protocol

from edgehub_emulator.errors import BadRequestError, GatewayTimeoutError, NotFoundError
from edgehub_emulator.jsonlimits import parse_json

logger = logging.getLogger(__name__)

METHODS_FILTER = "$iothub/methods/POST/#"
# IoT Hub accepts response timeouts of 5 to 300 s and connect timeouts of 0 to 300 s.
MIN_RESPONSE_TIMEOUT, MAX_TIMEOUT = 5, 300
MAX_METHOD_NAME = 100  # IoT Hub: a method name is a string of up to 100 characters


class MethodTarget(Protocol):
    """What a method call needs from a connected session."""

    client_id: str

    def send(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 0."""


class MethodDisconnectedError(NotFoundError):
    """The module went away before it answered."""


def _seconds(request: dict[str, Any], field: str, default: float, lowest: float) -> float:
    value = request.get(field)
    if value is None:
        return default
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not lowest <= value <= MAX_TIMEOUT
    ):
        raise BadRequestError(f"{field} must be a number from {lowest} to {MAX_TIMEOUT}, got {value!r}")
    return float(value)


def validate_request(request: Any, default_timeout: float) -> tuple[str, float, float]:
    """(method name, response timeout, connect timeout) of a direct method request; BadRequestError if bad."""
    if not isinstance(request, dict) or not isinstance(request.get("methodName"), str) or not request["methodName"]:
        raise BadRequestError("the body must be a JSON object with a non-empty 'methodName'")
    name = request["methodName"]
    if len(name) > MAX_METHOD_NAME:
        raise BadRequestError(f"methodName is {len(name)} characters long; the limit is {MAX_METHOD_NAME}")
    timeout = _seconds(request, "responseTimeoutInSeconds", default_timeout, MIN_RESPONSE_TIMEOUT)
    connect_timeout = _seconds(request, "connectTimeoutInSeconds", 0.0, 0)
    return name, timeout, connect_timeout


class MethodCalls:
    """Calls in flight, keyed by (client id, request id)."""

    def __init__(self, listener: Callable[[str], MethodTarget | None]) -> None:
        self._listener = listener  # the session of a client id that subscribed to methods, or None
        self._pending: dict[tuple[str, str], asyncio.Future[tuple[int, Any]]] = {}
        self._changed: dict[str, asyncio.Event] = {}

    def listeners_changed(self, client_id: str) -> None:
        """A client connected or subscribed: wake calls waiting for it."""
        event = self._changed.pop(client_id, None)
        if event:
            event.set()

    def disconnected(self, client_id: str) -> None:
        """The client went away: every call waiting for its answer ends with an error."""
        for key, future in list(self._pending.items()):
            if key[0] == client_id and not future.done():
                logger.info("%s disconnected before it answered method request %s: the call ends", client_id, key[1])
                future.set_exception(MethodDisconnectedError(f"{client_id} disconnected before it answered"))

    async def _wait_for_listener(self, client_id: str, connect_timeout: float) -> MethodTarget:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + connect_timeout
        while True:
            session = self._listener(client_id)
            left = deadline - loop.time()
            if session is not None or left <= 0:
                break
            event = self._changed.setdefault(client_id, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), left)
            except asyncio.TimeoutError:
                pass
        if session is None:
            raise NotFoundError(f"{client_id} is not connected or not listening for direct methods")
        return session

    async def invoke(self, client_id: str, request: dict[str, Any], default_timeout: float) -> dict[str, Any]:
        """Send the request and wait for the answer: 404 when nobody listens, 504 when the answer is late."""
        name, timeout, connect_timeout = validate_request(request, default_timeout)
        session = await self._wait_for_listener(client_id, connect_timeout)
        rid = secrets.token_hex(8)
        key = (client_id, rid)
        future: asyncio.Future[tuple[int, Any]] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            session.send(
                f"$iothub/methods/POST/{urllib.parse.quote(name, safe='')}/?$rid={rid}",
                json.dumps(request.get("payload")).encode(),
            )
            status, result = await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError as e:
            raise GatewayTimeoutError(f"{client_id} did not answer {name!r} within {timeout:g} s") from e
        finally:
            self._pending.pop(key, None)
        return {"status": status, "payload": result}

    def answer(self, client_id: str, rid: str, status: int, payload: bytes) -> None:
        """A client answered; answers to requests it was not sent are logged and ignored."""
        future = self._pending.get((client_id, rid))
        if future is None or future.done():
            logger.warning("%s answered method request %r, which it has no call for: ignored", client_id, rid[:40])
            return
        try:
            result = parse_json(payload, "the method response") if payload.strip() else None
        except BadRequestError as e:
            logger.warning(
                "%s answered method request %s with a payload that is not usable JSON: %s", client_id, rid, e
            )
            result = payload.decode("utf-8", "replace")
        future.set_result((status, result))
