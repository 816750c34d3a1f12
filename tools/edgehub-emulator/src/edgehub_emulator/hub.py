"""The hub's behaviour: identities, twins, routing, store-and-forward, direct methods.

Every method runs on the emulator's event loop; the MQTT and HTTP servers call into it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import urllib.parse
from typing import TYPE_CHECKING, Any, Protocol

from edgehub_emulator import mqtt
from edgehub_emulator.config import EmulatorConfig
from edgehub_emulator.auth import Authenticator
from edgehub_emulator.errors import BadRequestError, NotFoundError, PreconditionFailedError
from edgehub_emulator.jsonlimits import check_twin_depth, parse_json
from edgehub_emulator.manifest import Manifest
from edgehub_emulator.messages import Message
from edgehub_emulator.methods import MethodCalls
from edgehub_emulator.routes import Route, resolve
from edgehub_emulator.store import Identity, Store, Twin

if TYPE_CHECKING:
    from collections.abc import Iterable

logger = logging.getLogger(__name__)

DESIRED_TOPIC = "$iothub/twin/PATCH/properties/desired/"
METHOD_TOPIC = "$iothub/methods/POST/x/"


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


def section_digest(section: dict[str, Any]) -> str:
    """A fingerprint of a manifest section: it changes exactly when the section's content changes."""
    return hashlib.sha256(json.dumps(section, sort_keys=True).encode("utf-8")).hexdigest()


def _strip_meta(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if not k.startswith("$")}


def require_etag(if_match: str, current: str) -> None:
    """Raise PreconditionFailedError unless an `If-Match` value (quoted or not) is `*` or the current etag."""
    wanted = if_match.strip().strip('"')
    if wanted not in ("*", current):
        raise PreconditionFailedError(f"etag {wanted!r} does not match the current {current!r}")


class Hub:
    """State and behaviour shared by all servers of one emulator: the composition of auth (identities, SAS),
    twins, direct methods (methods.MethodCalls) and the message queues with routing."""

    def __init__(self, config: EmulatorConfig, store: Store, manifest: Manifest | None = None) -> None:
        self.config = config
        self.store = store
        self.auth = Authenticator(config, store)
        self.routes: list[Route] = list(manifest.routes) if manifest else []
        self.ttl_secs = manifest.ttl_secs if manifest else config.default_ttl_secs
        self.sessions: dict[str, Session] = {}
        self.methods = MethodCalls(lambda client_id: self._subscribed(client_id, METHOD_TOPIC))
        self.stats = {"routed": 0, "upstream": 0, "dropped": 0}
        self.ensure_identity(config.device_id, "")
        if manifest:
            new_twins = {
                name
                for name in [*manifest.modules, *manifest.desired]
                if self.ensure_identity(config.device_id, name)[1]
            }
            for name, desired in manifest.desired.items():
                self._apply_manifest_desired(name, desired, name in new_twins)
        for system_module in ("$edgeAgent", "$edgeHub"):
            self.ensure_identity(config.device_id, system_module)

    # identities
    def ensure_identity(self, device_id: str, module_id: str) -> tuple[Identity, bool]:
        """The identity (created from the seed when new, with an empty twin for a module); (identity, created)."""
        identity, created = self.auth.ensure_identity(device_id, module_id)
        if module_id and self.store.get_twin(device_id, module_id) is None:
            self.store.put_twin(device_id, module_id, Twin())
            created = True
        return identity, created

    def _apply_manifest_desired(self, module_id: str, desired: dict[str, Any], new_twin: bool) -> None:
        """A manifest's desired properties, applied as IoT Hub applies a deployment: to a new twin, or when that
        module's section changed since it was last applied; otherwise the twin (with what the service patched
        since) stays."""
        digest = section_digest(desired)
        applied = self.store.get_meta(f"manifest-desired:{module_id}")
        if not new_twin and applied == digest:
            logger.info("%s: manifest desired properties unchanged since applied; the twin keeps its values", module_id)
            return
        reason = "new twin" if new_twin else "its manifest section changed"
        logger.info("%s: applying the manifest's desired properties (%s)", module_id, reason)
        check_twin_depth(desired, f"modulesContent.{module_id} desired properties")
        twin = self.store.get_twin(self.config.device_id, module_id) or Twin()
        wanted = _strip_meta(desired)
        if twin.desired != wanted:
            twin.desired = wanted
            twin.desired_version += 1
            twin.version += 1
            self.store.put_twin(self.config.device_id, module_id, twin)
        self.store.put_meta(f"manifest-desired:{module_id}", digest)

    def service_key(self) -> str:
        """The key of the `iothubowner` policy."""
        return self.auth.service_key()

    def authenticate_client(self, client_id: str, username: str | None, password: str | None) -> Identity:
        """See Authenticator.authenticate_client."""
        return self.auth.authenticate_client(client_id, username, password)

    def authenticate_http(self, authorization: str | None) -> Identity | None:
        """See Authenticator.authenticate_http."""
        return self.auth.authenticate_http(authorization)

    # sessions
    def attach(self, session: Session) -> Session | None:
        """Register a connected client; returns the session it replaces, if any."""
        previous = self.sessions.get(session.client_id)
        self.sessions[session.client_id] = session
        self.methods.listeners_changed(session.client_id)
        return previous

    def subscribed(self, session: Session) -> None:
        """The session changed its subscriptions (a method call may wait for that)."""
        self.methods.listeners_changed(session.client_id)

    def detach(self, session: Session) -> None:
        """Forget a disconnected client (only if it is still the current one); its method calls end."""
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]
            self.methods.disconnected(session.client_id)

    def _subscribed(self, client_id: str, topic: str) -> Session | None:
        """The client's session when one of its filters (wildcards included) matches `topic`."""
        session = self.sessions.get(client_id)
        if session and any(mqtt.topic_matches(f, topic) for f in session.subscriptions):
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

    def purge(self, now: float | None = None) -> tuple[int, int]:
        """Drop expired queued messages and `$upstream` messages past the retention; (queued, upstream) dropped."""
        now = time.time() if now is None else now
        expired = self.store.purge_expired(now)
        pruned = self.store.prune_upstream(
            self.config.upstream_max_messages, now - self.config.upstream_max_age_secs
        )
        if expired or pruned:
            logger.info("purged %d expired queued messages and %d old $upstream messages", expired, pruned)
        return expired, pruned

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
        patch = parse_json(payload, "reported patch")
        if not isinstance(patch, dict):
            raise BadRequestError("reported patch must be a JSON object")
        check_twin_depth(patch, "reported patch")
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
        check_twin_depth(desired or {}, "the desired properties")
        check_twin_depth(tags or {}, "the tags")
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
            session = self._subscribed(f"{device_id}/{module_id}", DESIRED_TOPIC)
            if session:
                body_out = json.dumps({**patch, "$version": twin.desired_version}).encode()
                session.send(f"{DESIRED_TOPIC}?$version={twin.desired_version}", body_out)
        return self.service_twin(device_id, module_id)

    # methods
    async def invoke_method(self, device_id: str, module_id: str, request: Any) -> dict[str, Any]:
        """A direct method: 400 for a bad request, 404 when the target is not connected (or disconnects before
        it answers), 504 when it does not answer in time."""
        client_id = f"{device_id}/{module_id}" if module_id else device_id
        if self.store.get_identity(device_id, module_id) is None:
            raise NotFoundError(f"{client_id} does not exist")
        return await self.methods.invoke(client_id, request, self.config.method_default_timeout_secs)

    def method_response(self, client_id: str, rid: str, status: int, payload: bytes) -> None:
        """A module answered a method (see MethodCalls.answer)."""
        self.methods.answer(client_id, rid, status, payload)

    def connected_clients(self) -> Iterable[str]:
        """Client ids connected now."""
        return list(self.sessions)
