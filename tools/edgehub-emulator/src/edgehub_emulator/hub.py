"""The hub's behaviour: identities, twins, routing, store-and-forward, direct methods.

Every method runs on the emulator's event loop; the MQTT and HTTP servers call into it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
import urllib.parse
from typing import TYPE_CHECKING, Any, Protocol

from edgehub_emulator.config import EmulatorConfig
from edgehub_emulator.errors import (
    AuthError,
    BadRequestError,
    GatewayTimeoutError,
    NotFoundError,
    PreconditionFailedError,
)
from edgehub_emulator.identity import derive_key, parse_sas, verify_sas, SERVICE_POLICY
from edgehub_emulator.manifest import Manifest
from edgehub_emulator.messages import Message
from edgehub_emulator.routes import Route, resolve
from edgehub_emulator.store import Identity, Store, Twin

if TYPE_CHECKING:
    from collections.abc import Iterable

logger = logging.getLogger(__name__)

METHODS_FILTER = "$iothub/methods/POST/#"
DESIRED_FILTER = "$iothub/twin/PATCH/properties/desired/#"


class Session(Protocol):
    """What the hub needs from a connected MQTT client (implemented by the broker)."""

    client_id: str
    subscriptions: list[str]

    def send(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 0."""

    def flush_queue(self) -> None:
        """Publish queued QoS 1 messages the client is subscribed to."""

    def close(self) -> None:
        """Drop the connection."""


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """JSON merge patch: null deletes, objects merge, everything else replaces."""
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):  # RFC 7386: a non-object target counts as {} (nested nulls never stay)
            current = result.get(key)
            result[key] = merge_patch(current if isinstance(current, dict) else {}, value)
        else:
            result[key] = value
    return result


def replacement_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The desired patch of a replace: `new` with null for every key it drops, at every depth, so that a module
    merging it into `old` (JSON merge patch) gets `new` (a top-level-only diff would keep dropped nested keys)."""
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        old_value = old.get(key)
        if isinstance(value, dict) and isinstance(old_value, dict):
            patch[key] = replacement_patch(old_value, value)
        else:
            patch[key] = value
    return patch


def _strip_meta(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if not k.startswith("$")}


def require_etag(if_match: str, current: str) -> None:
    """Raise PreconditionFailedError unless an `If-Match` value (quoted or not) is `*` or the current etag."""
    wanted = if_match.strip().strip('"')
    if wanted not in ("*", current):
        raise PreconditionFailedError(f"etag {wanted!r} does not match the current {current!r}")


class Hub:
    """State and behaviour shared by all servers of one emulator."""

    def __init__(self, config: EmulatorConfig, store: Store, manifest: Manifest | None = None) -> None:
        self.config = config
        self.store = store
        self.routes: list[Route] = list(manifest.routes) if manifest else []
        self.ttl_secs = manifest.ttl_secs if manifest else config.default_ttl_secs
        self.sessions: dict[str, Session] = {}
        self._pending_methods: dict[str, asyncio.Future[tuple[int, Any]]] = {}
        self._rid = itertools.count(1)
        self._connected_events: dict[str, asyncio.Event] = {}
        self.stats = {"routed": 0, "upstream": 0, "dropped": 0}
        self.ensure_identity(config.device_id, "")
        if manifest:
            for name in manifest.modules:
                self.ensure_identity(config.device_id, name)
            for name, desired in manifest.desired.items():
                self.ensure_identity(config.device_id, name)
                self._seed_desired(name, desired)
        for system_module in ("$edgeAgent", "$edgeHub"):
            self.ensure_identity(config.device_id, system_module)

    # identities
    def ensure_identity(self, device_id: str, module_id: str) -> Identity:
        """The identity, created with keys derived from the seed when new."""
        existing = self.store.get_identity(device_id, module_id)
        if existing:
            return existing
        purpose = f"{device_id}/{module_id}" if module_id else device_id
        identity = Identity(
            device_id,
            module_id,
            derive_key(self.config.seed, f"primary:{purpose}"),
            derive_key(self.config.seed, f"secondary:{purpose}"),
        )
        self.store.put_identity(identity)
        if module_id and self.store.get_twin(device_id, module_id) is None:
            self.store.put_twin(device_id, module_id, Twin())
        return identity

    def _seed_desired(self, module_id: str, desired: dict[str, Any]) -> None:
        """Initial desired properties from the manifest; a later manifest's values win, versions go up."""
        twin = self.store.get_twin(self.config.device_id, module_id) or Twin()
        wanted = _strip_meta(desired)
        if twin.desired != wanted:
            twin.desired = wanted
            twin.desired_version += 1
            twin.version += 1
            self.store.put_twin(self.config.device_id, module_id, twin)

    def service_key(self) -> str:
        """The key of the `iothubowner` policy."""
        return derive_key(self.config.seed, f"service:{SERVICE_POLICY}")

    def authenticate_client(self, client_id: str, username: str | None, password: str | None) -> Identity:
        """Check MQTT credentials: the username names the client, the SAS matches the identity's key."""
        device_id, _, module_id = client_id.partition("/")
        if not device_id or "/" in module_id:
            raise AuthError(f"client id {client_id!r} is not 'device' or 'device/module'")
        if username is None or password is None:
            raise AuthError("username and SAS password are required")
        user_client = username.split("/?", 1)[0]
        host, _, named = user_client.partition("/")
        if named != client_id:
            raise AuthError(f"username names {named!r} but the client id is {client_id!r}")
        identity = self.store.get_identity(device_id, module_id)
        if identity is None:
            raise AuthError(f"no identity {client_id!r} on this hub")
        token = parse_sas(password)
        expected = f"{host}/devices/{device_id}" + (f"/modules/{module_id}" if module_id else "")
        if token.resource.lower() != expected.lower():
            raise AuthError(f"SAS token is for {token.resource!r}, not {expected!r}")
        try:
            verify_sas(token, identity.primary_key)
        except AuthError:
            verify_sas(token, identity.secondary_key)
        return identity

    def authenticate_http(self, authorization: str | None) -> Identity | None:
        """A service-policy SAS returns None (full access); a module SAS returns that module's identity."""
        if not authorization:
            raise AuthError("the Authorization header with a SAS token is missing")
        token = parse_sas(authorization)
        if token.policy is not None:
            if token.policy != SERVICE_POLICY:
                raise AuthError(f"unknown shared access policy {token.policy!r}")
            hosts = {self.config.hostname.lower(), self.config.service_hostname.lower()}
            if token.resource.lower().split("/", maxsplit=1)[0] not in hosts:
                raise AuthError(f"SAS token is for {token.resource!r}, not this hub")
            verify_sas(token, self.service_key())
            return None
        parts = token.resource.split("/")
        if len(parts) != 5 or parts[1] != "devices" or parts[3] != "modules":
            raise AuthError("a module SAS token must be for '<host>/devices/<d>/modules/<m>'")
        identity = self.store.get_identity(parts[2], parts[4])
        if identity is None:
            raise AuthError(f"no identity {parts[2]}/{parts[4]} on this hub")
        verify_sas(token, identity.primary_key)
        return identity

    # sessions
    def attach(self, session: Session) -> Session | None:
        """Register a connected client; returns the session it replaces, if any."""
        previous = self.sessions.get(session.client_id)
        self.sessions[session.client_id] = session
        event = self._connected_events.pop(session.client_id, None)
        if event:
            event.set()
        return previous

    def detach(self, session: Session) -> None:
        """Forget a disconnected client (only if it is still the current one)."""
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]

    def _subscribed(self, client_id: str, topic_filter: str) -> Session | None:
        session = self.sessions.get(client_id)
        if session and topic_filter in session.subscriptions:
            return session
        return None

    # messages
    def handle_message(self, identity: Identity, message: Message) -> None:
        """Route telemetry or an output; each endpoint gets the message once."""
        module_id = identity.module_id or None
        props = message.routing_properties(identity.device_id, module_id)
        deliveries = resolve(self.routes, module_id, message.output, props)
        if not deliveries:
            self.stats["dropped"] += 1
            logger.debug("no route for a message from %s (output %s)", identity.client_id, message.output)
        for delivery in deliveries:
            if delivery.endpoint.is_upstream:
                self.store.add_upstream(
                    identity.device_id,
                    module_id,
                    message.output,
                    {**message.system, **message.custom},
                    message.body,
                )
                self.stats["upstream"] += 1
            else:
                self.deliver_input(
                    delivery.endpoint.module,
                    delivery.endpoint.input,
                    message,
                    delivery.priority,
                    delivery.ttl_secs,
                )

    def deliver_input(
        self,
        module_id: str,
        input_name: str,
        message: Message,
        priority: int = 0,
        ttl_secs: int | None = None,
    ) -> None:
        """Queue a message for a module input and send it now when the module is connected."""
        device_id = self.config.device_id
        if self.store.get_identity(device_id, module_id) is None:
            logger.warning("route target module %r has no identity; message dropped", module_id)
            self.stats["dropped"] += 1
            return
        client_id = f"{device_id}/{module_id}"
        props = message.encode_properties()
        topic = f"devices/{device_id}/modules/{module_id}/inputs/{urllib.parse.quote(input_name, safe='')}/{props}"
        ttl = self.ttl_secs if ttl_secs is None else ttl_secs
        self.store.enqueue(client_id, topic, message.body, priority, time.time() + ttl if ttl else None)
        self.stats["routed"] += 1
        session = self.sessions.get(client_id)
        if session:
            session.flush_queue()

    # twins
    def twin_for(self, device_id: str, module_id: str) -> Twin:
        """The twin or NotFoundError."""
        twin = self.store.get_twin(device_id, module_id)
        if twin is None:
            raise NotFoundError(f"module {device_id}/{module_id} does not exist")
        return twin

    def twin_sections(self, identity: Identity) -> dict[str, Any]:
        """The MQTT twin GET answer."""
        twin = self.twin_for(identity.device_id, identity.module_id)
        return {
            "desired": {**twin.desired, "$version": twin.desired_version},
            "reported": {**twin.reported, "$version": twin.reported_version},
        }

    def patch_reported(self, identity: Identity, payload: bytes) -> int:
        """Apply a reported patch; BadRequestError for anything but a JSON object. Returns the new version."""
        try:
            patch = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise BadRequestError(f"reported patch is not valid JSON: {e}") from e
        if not isinstance(patch, dict):
            raise BadRequestError("reported patch must be a JSON object")
        twin = self.twin_for(identity.device_id, identity.module_id)
        twin.reported = merge_patch(twin.reported, _strip_meta(patch))
        twin.reported_version += 1
        twin.version += 1
        self.store.put_twin(identity.device_id, identity.module_id, twin)
        return twin.reported_version

    def service_twin(self, device_id: str, module_id: str) -> dict[str, Any]:
        """The twin as the service API returns it."""
        twin = self.twin_for(device_id, module_id)
        return {
            "deviceId": device_id,
            "moduleId": module_id,
            "etag": twin.etag,
            "version": twin.version,
            "status": "enabled",
            "authenticationType": "sas",
            "connectionState": "Connected" if f"{device_id}/{module_id}" in self.sessions else "Disconnected",
            "tags": twin.tags,
            "properties": {
                "desired": {**twin.desired, "$version": twin.desired_version},
                "reported": {**twin.reported, "$version": twin.reported_version},
            },
        }

    @staticmethod
    def _twin_update_parts(body: Any) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The desired properties and tags of a service twin update, validated."""
        if not isinstance(body, dict):
            raise BadRequestError("the twin must be a JSON object")
        props = body.get("properties") or {}
        if not isinstance(props, dict):
            raise BadRequestError("'properties' must be an object")
        desired = props.get("desired")
        tags = body.get("tags")
        if desired is not None and not isinstance(desired, dict):
            raise BadRequestError("'properties.desired' must be an object")
        if tags is not None and not isinstance(tags, dict):
            raise BadRequestError("'tags' must be an object")
        return desired, tags

    @staticmethod
    def _apply_twin_update(
        twin: Twin, desired: dict[str, Any] | None, tags: dict[str, Any] | None, replace: bool
    ) -> dict[str, Any] | None:
        """Change the twin; returns the desired patch the module must get (None: desired unchanged)."""
        patch: dict[str, Any] | None = None
        if replace:
            new_desired = _strip_meta(desired or {})
            if new_desired != twin.desired:
                patch = replacement_patch(twin.desired, new_desired)
                twin.desired = new_desired
            twin.tags = tags or {}
        else:
            if desired:
                patch = _strip_meta(desired)
                twin.desired = merge_patch(twin.desired, patch)
            if tags:
                twin.tags = merge_patch(twin.tags, tags)
        if patch is not None:
            twin.desired_version += 1
        twin.version += 1
        return patch

    def update_twin(
        self, device_id: str, module_id: str, body: Any, if_match: str | None, replace: bool
    ) -> dict[str, Any]:
        """PATCH (merge) or PUT (replace) from the service; pushes the desired change to the module."""
        desired, tags = self._twin_update_parts(body)
        twin = self.twin_for(device_id, module_id)
        require_etag(if_match or "*", twin.etag)
        patch = self._apply_twin_update(twin, desired, tags, replace)
        self.store.put_twin(device_id, module_id, twin)
        if patch is not None:
            session = self._subscribed(f"{device_id}/{module_id}", DESIRED_FILTER)
            if session:
                body_out = json.dumps({**patch, "$version": twin.desired_version}).encode()
                session.send(
                    f"$iothub/twin/PATCH/properties/desired/?$version={twin.desired_version}", body_out
                )
        return self.service_twin(device_id, module_id)

    # methods
    def _method_timeouts(self, request: Any) -> tuple[float, float]:
        """(response timeout, connect timeout) of a direct method request, validated."""
        if (
            not isinstance(request, dict)
            or not isinstance(request.get("methodName"), str)
            or not request["methodName"]
        ):
            raise BadRequestError("the body must be a JSON object with a non-empty 'methodName'")
        timeout = request.get("responseTimeoutInSeconds") or self.config.method_default_timeout_secs
        connect_timeout = request.get("connectTimeoutInSeconds") or 0
        if (
            not isinstance(timeout, (int, float))
            or not isinstance(connect_timeout, (int, float))
            or timeout <= 0
            or connect_timeout < 0
        ):
            raise BadRequestError(
                "responseTimeoutInSeconds / connectTimeoutInSeconds must be positive numbers"
            )
        return timeout, connect_timeout

    async def _method_listener(self, client_id: str, connect_timeout: float) -> Session:
        """The session listening for methods, waiting up to connect_timeout for the client to connect."""
        session = self._subscribed(client_id, METHODS_FILTER)
        if session is None and connect_timeout:
            event = self._connected_events.setdefault(client_id, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), connect_timeout)
                await asyncio.sleep(0.5)  # let the client subscribe after connecting
            except asyncio.TimeoutError:
                pass
            session = self._subscribed(client_id, METHODS_FILTER)
        if session is None:
            raise NotFoundError(f"{client_id} is not connected or not listening for direct methods")
        return session

    async def invoke_method(self, device_id: str, module_id: str, request: Any) -> dict[str, Any]:
        """A direct method: 404 when the target is not connected, 504 when it does not answer in time."""
        timeout, connect_timeout = self._method_timeouts(request)
        client_id = f"{device_id}/{module_id}" if module_id else device_id
        if self.store.get_identity(device_id, module_id) is None:
            raise NotFoundError(f"{client_id} does not exist")
        session = await self._method_listener(client_id, connect_timeout)
        rid = format(next(self._rid), "x")
        future: asyncio.Future[tuple[int, Any]] = asyncio.get_running_loop().create_future()
        self._pending_methods[rid] = future
        name = urllib.parse.quote(request["methodName"], safe="")
        session.send(f"$iothub/methods/POST/{name}/?$rid={rid}", json.dumps(request.get("payload")).encode())
        try:
            status, result = await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError as e:
            raise GatewayTimeoutError(
                f"{client_id} did not answer {request['methodName']!r} within {timeout} s"
            ) from e
        finally:
            self._pending_methods.pop(rid, None)
        return {"status": status, "payload": result}

    def method_response(self, client_id: str, rid: str, status: int, payload: bytes) -> None:
        """A module answered a method; unknown or late request ids are logged and ignored."""
        future = self._pending_methods.get(rid)
        if future is None or future.done():
            logger.warning("%s answered an unknown or expired method request %s", client_id, rid)
            return
        try:
            result = json.loads(payload.decode("utf-8")) if payload.strip() else None
        except (UnicodeDecodeError, ValueError):
            logger.warning("%s answered method request %s with a payload that is not JSON", client_id, rid)
            result = payload.decode("utf-8", "replace")
        future.set_result((status, result))

    def connected_clients(self) -> Iterable[str]:
        """Client ids connected now."""
        return list(self.sessions)
