"""The hub: connected sessions, composed with auth (auth.py), twins (twins.py), direct methods (methods.py) and
the message queues with routing (queues.py); each rule lives in one of those.

Every method runs on the emulator's event loop; the MQTT and HTTP servers call into it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from edgehub_emulator import mqtt
from edgehub_emulator.auth import Authenticator
from edgehub_emulator.config import EmulatorConfig
from edgehub_emulator.deployments import Deployments
from edgehub_emulator.errors import ManifestError, NotFoundError
from edgehub_emulator.manifest import Manifest, desired_routes
from edgehub_emulator.messages import Message
from edgehub_emulator.methods import MethodCalls
from edgehub_emulator.queues import MessageQueues
from edgehub_emulator.store import Identity, Store, Twin
from edgehub_emulator.twins import Twins

if TYPE_CHECKING:
    from collections.abc import Iterable

logger = logging.getLogger(__name__)

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


class Hub:
    """State and behaviour shared by all servers of one emulator: the composition of auth (identities, SAS),
    twins, direct methods (methods.MethodCalls) and the message queues with routing."""

    def __init__(
        self,
        config: EmulatorConfig,
        store: Store,
        manifest: Manifest | None = None,
        fleet: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.auth = Authenticator(config, store)
        self.sessions: dict[str, Session] = {}
        self.queues = MessageQueues(
            config,
            store,
            list(manifest.routes) if manifest else [],
            manifest.ttl_secs if manifest else config.default_ttl_secs,
            self.sessions.get,
        )
        self.methods = MethodCalls(lambda client_id: self._subscribed(client_id, METHOD_TOPIC))
        self.twins = Twins(config.device_id, store, self._push_desired, lambda client_id: client_id in self.sessions)
        self.deployments = Deployments(
            store, self._write_desired, self.ensure_identity, lambda client_id: client_id in self.sessions
        )
        self.deployments.ensure_edge_device(config.device_id)
        for stored in store.list_identities(config.device_id):  # generation ids stored as "1" by earlier versions
            self.auth.ensure_identity(stored.device_id, stored.module_id)
        for device_id, tags in (fleet or {}).items():
            self.deployments.ensure_edge_device(device_id, tags)
        for device_id in [config.device_id, *(d for d in fleet or {} if d != config.device_id)]:
            if manifest:
                self._apply_manifest(device_id, manifest)
        # Tags a fleet file changed since the last start may retarget devices: choose their deployments again
        # (an unchanged device's twins are not written again).
        self.deployments.reevaluate()
        for device_id in store.list_devices():
            self.refresh_routes(device_id)

    def _apply_manifest(self, device_id: str, manifest: Manifest) -> None:
        """The manifest as the device's own deployment, unless automatic deployments target the device."""
        targeting = self.deployments.automatic_deployments(device_id)
        if targeting:
            logger.info("deployments %s target %s: the manifest is not applied to it", ", ".join(targeting), device_id)
            return
        if self.deployments.replaced_manifest(device_id, manifest.content):
            logger.info(
                "%s keeps its single-device deployment (the manifest is unchanged since it was replaced)", device_id
            )
            return
        new_twins = {
            name for name in [*manifest.modules, *manifest.desired] if self.ensure_identity(device_id, name)[1]
        }
        for name, desired in {**manifest.system, **manifest.desired}.items():
            self.twins.apply_manifest_desired(name, desired, name in new_twins, device_id)
        self.deployments.remember_manifest(device_id, manifest.content)

    def refresh_routes(self, device_id: str) -> None:
        """The device's routes from its `$edgeHub` desired properties: applied to the next message, no module
        restarts (as edgeHub does)."""
        twin = self.store.get_twin(device_id, "$edgeHub")
        if twin is None or "routes" not in twin.desired:
            return
        try:
            routes = desired_routes(twin.desired)
        except ManifestError as e:
            logger.error("device %s: $edgeHub routes not applied: %s", device_id, e)
            return
        if [str(r) for r in routes] != [str(r) for r in self.queues.device_routes.get(device_id, [])]:
            logger.info("device %s: %d routes in force", device_id, len(routes))
        self.queues.device_routes[device_id] = routes

    def _write_desired(self, device_id: str, module_id: str, desired: dict[str, Any]) -> None:
        """Replace a module twin's desired properties (a deployment's), keeping its tags."""
        twin = self.store.get_twin(device_id, module_id) or Twin()
        self.twins.update_twin(
            device_id, module_id, {"tags": twin.tags, "properties": {"desired": desired}}, None, replace=True
        )
        if module_id == "$edgeHub":
            self.refresh_routes(device_id)

    # identities
    def ensure_identity(self, device_id: str, module_id: str) -> tuple[Identity, bool]:
        """The identity (created from the seed when new, with an empty twin for a module); (identity, created)."""
        identity, created = self.auth.ensure_identity(device_id, module_id)
        if module_id and self.store.get_twin(device_id, module_id) is None:
            self.store.put_twin(device_id, module_id, Twin())
            created = True
        return identity, created

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
    @property
    def stats(self) -> dict[str, int]:
        """Counters of routed, upstream and dropped messages."""
        return self.queues.stats

    def handle_message(self, identity: Identity, message: Message) -> None:
        """See MessageQueues.handle_message."""
        self.queues.handle_message(identity, message)

    def deliver_input(
        self, module_id: str, input_name: str, message: Message, priority: int = 0, ttl_secs: int | None = None
    ) -> None:
        """See MessageQueues.deliver_input."""
        self.queues.deliver_input(module_id, input_name, message, priority, ttl_secs)

    def purge(self, now: float | None = None) -> tuple[int, int]:
        """See MessageQueues.purge."""
        return self.queues.purge(now)

    # twins
    def push_desired(self, client_id: str, topic: str, payload: bytes) -> None:
        """Send a desired patch to a client subscribed to it."""
        self._push_desired(client_id, topic, payload)

    def _push_desired(self, client_id: str, topic: str, payload: bytes) -> None:
        session = self._subscribed(client_id, topic)
        if session:
            session.send(topic, payload)

    def twin_sections(self, identity: Identity) -> dict[str, Any]:
        """The MQTT twin GET answer."""
        return self.twins.twin_sections(identity)

    def patch_reported(self, identity: Identity, payload: bytes) -> int:
        """See Twins.patch_reported."""
        return self.twins.patch_reported(identity, payload)

    def service_twin(self, device_id: str, module_id: str) -> dict[str, Any]:
        """See Twins.service_twin."""
        return self.twins.service_twin(device_id, module_id)

    def update_twin(
        self, device_id: str, module_id: str, body: Any, if_match: str | None, replace: bool
    ) -> dict[str, Any]:
        """See Twins.update_twin; a change of `$edgeHub` routes applies at once."""
        result = self.twins.update_twin(device_id, module_id, body, if_match, replace)
        if module_id == "$edgeHub":
            self.refresh_routes(device_id)
        return result

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
