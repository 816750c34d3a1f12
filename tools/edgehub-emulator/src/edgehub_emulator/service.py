"""HTTP handlers: the IoT Hub service API, module-to-module methods, the workload API and emulator extras."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import urllib.parse
from pathlib import Path
from typing import Any, Awaitable, Callable

from edgehub_emulator.errors import (
    AuthError,
    BadRequestError,
    ConflictError,
    EmulatorError,
    GatewayTimeoutError,
    NotFoundError,
    PreconditionFailedError,
    UnsupportedMediaTypeError,
)
from edgehub_emulator.fleet import served_ports
from edgehub_emulator.hub import Hub
from edgehub_emulator.twins import require_etag
from edgehub_emulator.identity import sign
from edgehub_emulator.jsonlimits import parse_json
from edgehub_emulator.messages import Message
from edgehub_emulator.store import Identity, Twin
from edgehub_emulator.web import Request, Response, Route

logger = logging.getLogger(__name__)

# One table from error class to HTTP status (the most specific class first).
STATUS_BY_ERROR: list[tuple[type[EmulatorError], int]] = [
    (AuthError, 401),
    (NotFoundError, 404),
    (ConflictError, 409),
    (PreconditionFailedError, 412),
    (UnsupportedMediaTypeError, 415),
    (BadRequestError, 400),
    (GatewayTimeoutError, 504),
]

# (HTTP method, path, handler name); handlers take the path's parts in order.
_ROUTES: list[tuple[str, str, str]] = [
    ("POST", "/twins/{device}/modules/{module}/methods", "invoke"),
    ("POST", "/twins/{device}/methods", "invoke"),
    ("GET", "/twins/{device}/modules/{module}", "get_twin"),
    ("PATCH", "/twins/{device}/modules/{module}", "patch_twin"),
    ("PUT", "/twins/{device}/modules/{module}", "put_twin"),
    ("GET", "/devices/{device}/modules", "list_modules"),
    ("GET", "/devices/{device}/modules/{module}", "get_module"),
    ("PUT", "/devices/{device}/modules/{module}", "put_module"),
    ("GET", "/devices", "list_devices"),
    ("POST", "/devices/query", "query"),
    ("GET", "/devices/{device}", "get_device"),
    ("PUT", "/devices/{device}", "put_device"),
    ("DELETE", "/devices/{device}", "delete_device"),
    ("GET", "/twins/{device}", "get_device_twin"),
    ("PATCH", "/twins/{device}", "patch_device_twin"),
    ("PUT", "/twins/{device}", "put_device_twin"),
    ("POST", "/devices/{device}/applyConfigurationContent", "apply_content"),
    ("GET", "/configurations", "list_configurations"),
    ("POST", "/configurations/testQueries", "test_queries"),
    ("GET", "/configurations/{config}", "get_configuration"),
    ("PUT", "/configurations/{config}", "put_configuration"),
    ("DELETE", "/configurations/{config}", "delete_configuration"),
    ("GET", "/emulator/upstream", "upstream"),
    ("POST", "/emulator/modules/{module}/inputs/{input}", "send_input"),
    ("GET", "/emulator/status", "status"),
]
MAX_UPSTREAM_LIMIT = 5000
MAX_SEQ = 2**63 - 1


def _json_body(request: Request, what: str) -> Any:
    """The JSON body; a declared content type other than JSON is a 415 (a body without one is read as JSON)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type and content_type != "application/json" and not content_type.endswith("+json"):
        raise UnsupportedMediaTypeError(f"{what} must be application/json, not {content_type}")
    return parse_json(request.body, what) if request.body.strip() else None


def _query_int(query: dict[str, list[str]], name: str, default: int, lowest: int, highest: int) -> int:
    text = query.get(name, [str(default)])[0]
    try:
        value = int(text)
    except ValueError as e:
        raise BadRequestError(f"{name!r} must be an integer from {lowest} to {highest}, got {text[:40]!r}") from e
    if not lowest <= value <= highest:
        raise BadRequestError(f"{name!r} must be an integer from {lowest} to {highest}, got {value}")
    return value


def _is_key(text: str) -> bool:
    """Whether text is a base64 key of 16 to 64 bytes (what IoT Hub accepts for symmetric keys)."""
    try:
        return 16 <= len(base64.b64decode(text, validate=True)) <= 64
    except (binascii.Error, ValueError):
        return False


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

    def routes(self) -> list[Route]:
        """The routes of the service API for web.WebServer."""
        return [(method, path, self._handler(action)) for method, path, action in _ROUTES]

    def _handler(self, action: str) -> Callable[[Request, list[str]], Awaitable[Response]]:
        async def handle(request: Request, args: list[str]) -> Response:
            try:
                caller = self.hub.authenticate_http(request.headers.get("authorization"))
                if caller is not None and action != "invoke":
                    raise AuthError("a module token may only invoke direct methods")
                return await getattr(self, f"_{action}")(request, *args)
            except EmulatorError as e:
                status = next((code for cls, code in STATUS_BY_ERROR if isinstance(e, cls)), 500)
                if status >= 500 or status == 401:
                    logger.warning("%s %s -> %d: %s", request.method, request.path[:200], status, e)
                return Response.error(status, str(e))

        return handle

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
        keys = (body.get("authentication") or {}).get("symmetricKey") or {}
        if not isinstance(keys, dict):
            raise BadRequestError("authentication.symmetricKey must be an object")
        for field in ("primaryKey", "secondaryKey"):
            key = keys.get(field)
            if key is not None and (not isinstance(key, str) or not _is_key(key)):
                raise BadRequestError(f"{field} must be a base64 key of 16 to 64 bytes")
        existing = self.hub.store.get_identity(device_id, module_id)
        if_match = request.headers.get("if-match")
        if existing is not None:
            # As on IoT Hub: a PUT without If-Match only creates; updating needs If-Match "*" or the current etag.
            if if_match is None:
                raise ConflictError(
                    f'module {device_id}/{module_id} already exists; update it with If-Match (the etag or "*")'
                )
            require_etag(if_match, _module_etag(existing))
        identity = existing or self.hub.ensure_identity(device_id, module_id)[0]
        identity.primary_key = keys.get("primaryKey") or identity.primary_key
        identity.secondary_key = keys.get("secondaryKey") or identity.secondary_key
        identity.managed_by = body.get("managedBy")
        self.hub.store.put_identity(identity)
        return Response.json(200, _module_json(identity, self.hub))

    # device registry and device twins
    async def _list_devices(self, request: Request) -> Response:
        top = _query_int(urllib.parse.parse_qs(request.query), "top", 1000, 1, 1000)
        return Response.json(200, self.hub.deployments.list_devices(top))

    async def _get_device(self, _request: Request, device_id: str) -> Response:
        return Response.json(200, self.hub.deployments.device_json(device_id))

    async def _put_device(self, request: Request, device_id: str) -> Response:
        body = _json_body(request, "the device")
        return Response.json(200, self.hub.deployments.put_device(device_id, body, request.headers.get("if-match")))

    async def _delete_device(self, request: Request, device_id: str) -> Response:
        self.hub.deployments.delete_device(device_id, request.headers.get("if-match"))
        self.hub.queues.device_routes.pop(device_id, None)
        return Response(204)

    async def _get_device_twin(self, _request: Request, device_id: str) -> Response:
        return Response.json(200, self.hub.deployments.device_twin(device_id))

    async def _device_twin_update(self, request: Request, device_id: str, replace: bool) -> Response:
        body = _json_body(request, "the twin")
        twin, patch = self.hub.deployments.update_device_twin(device_id, body, request.headers.get("if-match"), replace)
        if patch is not None:
            version = twin["properties"]["desired"]["$version"]
            topic = f"$iothub/twin/PATCH/properties/desired/?$version={version}"
            self.hub.push_desired(device_id, topic, json.dumps({**patch, "$version": version}).encode())
        return Response.json(200, twin)

    async def _patch_device_twin(self, request: Request, device_id: str) -> Response:
        return await self._device_twin_update(request, device_id, replace=False)

    async def _put_device_twin(self, request: Request, device_id: str) -> Response:
        return await self._device_twin_update(request, device_id, replace=True)

    async def _query(self, request: Request) -> Response:
        return Response.json(200, self.hub.deployments.query(_json_body(request, "the query")))

    # deployments
    async def _apply_content(self, request: Request, device_id: str) -> Response:
        self.hub.deployments.apply_content(device_id, _json_body(request, "the configuration content"))
        return Response(204)

    async def _list_configurations(self, request: Request) -> Response:
        top = _query_int(urllib.parse.parse_qs(request.query), "top", 1000, 1, 1000)
        return Response.json(200, self.hub.deployments.list_configurations(top))

    async def _test_queries(self, request: Request) -> Response:
        return Response.json(200, self.hub.deployments.test_queries(_json_body(request, "the queries")))

    async def _get_configuration(self, _request: Request, config_id: str) -> Response:
        return Response.json(200, self.hub.deployments.get_configuration(config_id))

    async def _put_configuration(self, request: Request, config_id: str) -> Response:
        body = _json_body(request, "the configuration")
        doc, created = self.hub.deployments.put_configuration(config_id, body, request.headers.get("if-match"))
        return Response.json(201 if created else 200, doc)

    async def _delete_configuration(self, request: Request, config_id: str) -> Response:
        self.hub.deployments.delete_configuration(config_id, request.headers.get("if-match"))
        return Response(204)

    async def _upstream(self, request: Request) -> Response:
        query = urllib.parse.parse_qs(request.query)
        after = _query_int(query, "after", 0, 0, MAX_SEQ)
        limit = _query_int(query, "limit", 500, 1, MAX_UPSTREAM_LIMIT)
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

    def _served_ports(self, device_id: str, agent_desired: dict[str, Any]) -> dict[str, dict[str, int]]:
        """The ports the device's modules serve, from its desired modules now (a deployment changes them); none
        for a device whose modules no `up` runs."""
        plan = json.loads(self.hub.store.get_meta(f"port-plan:{device_id}") or "null")
        if not isinstance(plan, dict):
            return {}
        return served_ports(agent_desired, int(plan.get("index", 0)), int(plan.get("step", 0)))

    async def _status(self, _request: Request) -> Response:
        devices = {}
        for device_id in self.hub.store.list_devices():
            agent = self.hub.store.get_twin(device_id, "$edgeAgent")
            reported = agent.reported if agent else {}
            devices[device_id] = {
                "tags": (self.hub.store.get_twin(device_id, "") or Twin()).tags,
                "deployments": self.hub.deployments.applied_deployments(device_id),
                "modules": {
                    name: (state or {}).get("runtimeStatus") for name, state in (reported.get("modules") or {}).items()
                },
                "ports": self._served_ports(device_id, agent.desired if agent else {}),
                "state": self.hub.store.get_meta(f"state:{device_id}") or None,
            }
        return Response.json(
            200,
            {
                "deviceId": self.hub.config.device_id,
                "devices": devices,
                "connected": sorted(self.hub.sessions),
                "queued": self.hub.store.queue_length(),
                "upstreamKept": self.hub.store.upstream_count(),
                **self.hub.stats,
            },
        )


class WorkloadApi:
    """The IoT Edge workload API subset the device SDK uses: the trust bundle and HMAC signing.

    As on a device, signing needs the module's name and its current generation id (`IOTEDGE_MODULEGENERATIONID`,
    which only that module's environment holds): a module cannot have another module's data signed.
    """

    def __init__(self, hub: Hub, ca_cert: Path) -> None:
        self.hub = hub
        self.ca_cert = ca_cert

    def routes(self) -> list[Route]:
        """The routes of the workload API for web.WebServer."""
        return [
            ("GET", "/trust-bundle", self._trust_bundle),
            ("POST", "/modules/{module}/genid/{genid}/sign", self._sign),
        ]

    async def _trust_bundle(self, _request: Request, _args: list[str]) -> Response:
        return Response.json(200, {"certificate": self.ca_cert.read_text(encoding="utf-8")})

    async def _sign(self, request: Request, args: list[str]) -> Response:
        module_id, genid = args
        # Module names repeat across the devices of a fleet; the generation id tells them apart.
        identity = self.hub.store.find_module_identity(module_id, genid)
        if identity is None:
            identity = self.hub.store.get_identity(self.hub.config.device_id, module_id)
        if identity is None or not identity.module_id:
            return Response.error(404, f"module {module_id} does not exist")
        if not hmac.compare_digest(genid.encode(), identity.generation_id.encode()):
            logger.warning("workload API: signing for %s refused: wrong generation id", module_id)
            return Response.error(404, f"module {module_id} has no generation {genid[:40]!r}")
        try:
            body = parse_json(request.body, "the body")
            data = base64.b64decode(body["data"], validate=True).decode("utf-8")
        except (BadRequestError, UnicodeDecodeError, ValueError, KeyError, TypeError, binascii.Error):
            return Response.error(400, 'the body must be {"keyId", "algo", "data": base64}')
        if body.get("algo", "HMACSHA256") != "HMACSHA256":
            return Response.error(400, "only algo HMACSHA256 is supported")
        key = identity.secondary_key if body.get("keyId") == "secondary" else identity.primary_key
        return Response.json(200, {"digest": sign(key, data)})
