"""HTTP handlers: the IoT Hub service API, module-to-module methods, the workload API and emulator extras."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import urllib.parse
from pathlib import Path
from typing import Any

from edgehub_emulator.errors import (
    AuthError,
    BadRequestError,
    ConflictError,
    EmulatorError,
    GatewayTimeoutError,
    NotFoundError,
    PreconditionFailedError,
)
from edgehub_emulator.httpserver import Request, Response
from edgehub_emulator.hub import Hub, require_etag
from edgehub_emulator.identity import sign
from edgehub_emulator.messages import Message
from edgehub_emulator.store import Identity

logger = logging.getLogger(__name__)

# One table from error class to HTTP status (the most specific class first).
STATUS_BY_ERROR: list[tuple[type[EmulatorError], int]] = [
    (AuthError, 401),
    (NotFoundError, 404),
    (ConflictError, 409),
    (PreconditionFailedError, 412),
    (BadRequestError, 400),
    (GatewayTimeoutError, 504),
]

_SEG = r"([^/]+)"
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(rf"^/twins/{_SEG}/modules/{_SEG}/methods/?$"), "invoke"),
    ("POST", re.compile(rf"^/twins/{_SEG}/methods/?$"), "invoke"),
    ("GET", re.compile(rf"^/twins/{_SEG}/modules/{_SEG}/?$"), "get_twin"),
    ("PATCH", re.compile(rf"^/twins/{_SEG}/modules/{_SEG}/?$"), "patch_twin"),
    ("PUT", re.compile(rf"^/twins/{_SEG}/modules/{_SEG}/?$"), "put_twin"),
    ("GET", re.compile(rf"^/devices/{_SEG}/modules/?$"), "list_modules"),
    ("GET", re.compile(rf"^/devices/{_SEG}/modules/{_SEG}/?$"), "get_module"),
    ("PUT", re.compile(rf"^/devices/{_SEG}/modules/{_SEG}/?$"), "put_module"),
    ("GET", re.compile(r"^/emulator/upstream/?$"), "upstream"),
    ("POST", re.compile(rf"^/emulator/modules/{_SEG}/inputs/{_SEG}/?$"), "send_input"),
    ("GET", re.compile(r"^/emulator/status/?$"), "status"),
]


def _json_body(request: Request, what: str) -> Any:
    try:
        return json.loads(request.body.decode("utf-8")) if request.body.strip() else None
    except (UnicodeDecodeError, ValueError) as e:
        raise BadRequestError(f"{what} is not valid JSON: {e}") from e


def _module_etag(identity: Identity) -> str:
    """An etag that changes whenever the keys or `managedBy` change (IoT Hub's etags are opaque base64 too)."""
    state = f"{identity.primary_key}|{identity.secondary_key}|{identity.managed_by or ''}".encode()
    return base64.b64encode(hashlib.sha256(state).digest()[:8]).decode()


def _module_json(identity: Identity, hub: Hub) -> dict[str, Any]:
    return {
        "deviceId": identity.device_id,
        "moduleId": identity.module_id,
        "managedBy": identity.managed_by,
        "generationId": identity.generation_id,
        "etag": _module_etag(identity),
        "connectionState": "Connected" if identity.client_id in hub.sessions else "Disconnected",
        "cloudToDeviceMessageCount": 0,
        "authentication": {
            "type": "sas",
            "symmetricKey": {"primaryKey": identity.primary_key, "secondaryKey": identity.secondary_key},
        },
    }


class ServiceApi:
    """The HTTPS API of the hub (the azure-iot-hub SDK's calls) plus the emulator's own endpoints."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def __call__(self, request: Request) -> Response:
        for method, pattern, action in _ROUTES:
            match = pattern.match(request.path)
            if match and method == request.method:
                args = [urllib.parse.unquote(group) for group in match.groups()]
                try:
                    caller = self.hub.authenticate_http(request.headers.get("authorization"))
                    if caller is not None and action != "invoke":
                        raise AuthError("a module token may only invoke direct methods")
                    return await getattr(self, f"_{action}")(request, *args)
                except EmulatorError as e:
                    status = next((code for cls, code in STATUS_BY_ERROR if isinstance(e, cls)), 500)
                    if status >= 500 or status == 401:
                        logger.warning("%s %s -> %d: %s", request.method, request.path, status, e)
                    return Response.error(status, str(e))
        return Response.error(404, f"no API at {request.method} {request.path}")

    async def _invoke(self, request: Request, device_id: str, module_id: str = "") -> Response:
        body = _json_body(request, "the method request")
        return Response.json(200, await self.hub.invoke_method(device_id, module_id, body))

    async def _get_twin(self, _request: Request, device_id: str, module_id: str) -> Response:
        return Response.json(200, self.hub.service_twin(device_id, module_id))

    async def _patch_twin(self, request: Request, device_id: str, module_id: str) -> Response:
        body = _json_body(request, "the twin patch")
        return Response.json(
            200,
            self.hub.update_twin(device_id, module_id, body, request.headers.get("if-match"), replace=False),
        )

    async def _put_twin(self, request: Request, device_id: str, module_id: str) -> Response:
        body = _json_body(request, "the twin")
        return Response.json(
            200,
            self.hub.update_twin(device_id, module_id, body, request.headers.get("if-match"), replace=True),
        )

    async def _list_modules(self, _request: Request, device_id: str) -> Response:
        identities = [i for i in self.hub.store.list_identities(device_id) if i.module_id]
        if not identities:
            raise NotFoundError(f"device {device_id} does not exist")
        return Response.json(200, [_module_json(i, self.hub) for i in identities])

    async def _get_module(self, _request: Request, device_id: str, module_id: str) -> Response:
        identity = self.hub.store.get_identity(device_id, module_id)
        if identity is None:
            raise NotFoundError(f"module {device_id}/{module_id} does not exist")
        return Response.json(200, _module_json(identity, self.hub))

    async def _put_module(self, request: Request, device_id: str, module_id: str) -> Response:
        body = _json_body(request, "the module")
        if not isinstance(body, dict):
            raise BadRequestError("the module must be a JSON object")
        if self.hub.store.get_identity(device_id, "") is None:
            raise NotFoundError(f"device {device_id} does not exist")
        existing = self.hub.store.get_identity(device_id, module_id)
        if_match = request.headers.get("if-match")
        if existing is not None:
            # As on IoT Hub: a PUT without If-Match only creates; updating needs If-Match "*" or the current etag.
            if if_match is None:
                raise ConflictError(
                    f"module {device_id}/{module_id} already exists; update it with If-Match (the etag or \"*\")"
                )
            require_etag(if_match, _module_etag(existing))
        identity = existing or self.hub.ensure_identity(device_id, module_id)
        keys = (body.get("authentication") or {}).get("symmetricKey") or {}
        for field in ("primaryKey", "secondaryKey"):
            key = keys.get(field)
            if key:
                try:
                    base64.b64decode(key, validate=True)
                except (binascii.Error, ValueError) as e:
                    raise BadRequestError(f"{field} is not valid base64") from e
        identity.primary_key = keys.get("primaryKey") or identity.primary_key
        identity.secondary_key = keys.get("secondaryKey") or identity.secondary_key
        identity.managed_by = body.get("managedBy")
        self.hub.store.put_identity(identity)
        return Response.json(200, _module_json(identity, self.hub))

    async def _upstream(self, request: Request) -> Response:
        query = urllib.parse.parse_qs(request.query)
        try:
            after = int(query.get("after", ["0"])[0])
            limit = min(int(query.get("limit", ["500"])[0]), 5000)
        except ValueError as e:
            raise BadRequestError("'after' and 'limit' must be integers") from e
        out = []
        for item in self.hub.store.upstream_after(after, limit):
            try:
                body: Any = item.body.decode("utf-8")
                encoding = "utf-8"
            except UnicodeDecodeError:
                body, encoding = base64.b64encode(item.body).decode(), "base64"
            out.append(
                {
                    "seq": item.seq,
                    "enqueuedTime": item.enqueued_at,
                    "deviceId": item.device_id,
                    "moduleId": item.module_id,
                    "output": item.output,
                    "properties": item.properties,
                    "body": body,
                    "bodyEncoding": encoding,
                }
            )
        return Response.json(200, out)

    async def _send_input(self, request: Request, module_id: str, input_name: str) -> Response:
        if len(request.body) > self.hub.config.max_message_bytes:
            raise BadRequestError(f"message of {len(request.body)} bytes is over the limit")
        if self.hub.store.get_identity(self.hub.config.device_id, module_id) is None:
            raise NotFoundError(f"module {module_id} does not exist")
        content_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
        if content_type == "application/json":
            _json_body(request, "the message")
        message = Message(body=request.body, system={"$.ct": content_type, "$.ce": "utf-8"})
        self.hub.deliver_input(module_id, input_name, message)
        return Response.json(202, {"queued": True, "module": module_id, "input": input_name})

    async def _status(self, _request: Request) -> Response:
        return Response.json(
            200,
            {
                "deviceId": self.hub.config.device_id,
                "connected": sorted(self.hub.sessions),
                "queued": self.hub.store.queue_length(),
                **self.hub.stats,
            },
        )


class WorkloadApi:
    """The IoT Edge workload API subset the device SDK uses: the trust bundle and HMAC signing."""

    def __init__(self, hub: Hub, ca_cert: Path) -> None:
        self.hub = hub
        self.ca_cert = ca_cert

    async def __call__(self, request: Request) -> Response:
        if request.method == "GET" and request.path.rstrip("/") == "/trust-bundle":
            return Response.json(200, {"certificate": self.ca_cert.read_text(encoding="utf-8")})
        match = re.match(r"^/modules/([^/]+)/genid/([^/]+)/sign/?$", request.path)
        if request.method == "POST" and match:
            module_id = urllib.parse.unquote(match.group(1))
            identity = self.hub.store.get_identity(self.hub.config.device_id, module_id)
            if identity is None:
                return Response.error(404, f"module {module_id} does not exist")
            try:
                body = json.loads(request.body.decode("utf-8"))
                data = base64.b64decode(body["data"], validate=True).decode("utf-8")
            except (UnicodeDecodeError, ValueError, KeyError, TypeError, binascii.Error):
                return Response.error(400, 'the body must be {"keyId", "algo", "data": base64}')
            if body.get("algo", "HMACSHA256") != "HMACSHA256":
                return Response.error(400, "only algo HMACSHA256 is supported")
            key = identity.secondary_key if body.get("keyId") == "secondary" else identity.primary_key
            return Response.json(200, {"digest": sign(key, data)})
        return Response.error(404, f"no workload API at {request.method} {request.path}")
