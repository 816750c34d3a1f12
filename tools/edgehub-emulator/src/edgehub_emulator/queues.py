"""Message queues: routing of module outputs, store-and-forward to module inputs, `$upstream`, and their limits.

Every message for a module input waits in the store until the module acknowledges it or its time to live passes;
a client has at most a window of messages in flight, read from the queue in small batches.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from typing import Callable, Protocol

from edgehub_emulator.config import EmulatorConfig
from edgehub_emulator.messages import Message
from edgehub_emulator.routes import Route, resolve
from edgehub_emulator.store import Identity, QueuedMessage, Store

logger = logging.getLogger(__name__)


class Flushable(Protocol):  # pylint: disable=too-few-public-methods
    """A connected client that can be told new messages wait for it."""

    def flush_queue(self) -> None:
        """Publish queued QoS 1 messages the client is subscribed to."""


class MessageQueues:
    """Routes and queues of one hub; `session(client_id)` is the connected client or None."""

    def __init__(
        self,
        config: EmulatorConfig,
        store: Store,
        routes: list[Route],
        ttl_secs: int,
        session: Callable[[str], Flushable | None],
    ) -> None:
        self.config = config
        self.store = store
        self.routes = routes
        # Each device's routes (from its $edgeHub desired properties); `routes` serves a device without its own.
        self.device_routes: dict[str, list[Route]] = {}
        self.ttl_secs = ttl_secs
        self._session = session
        self.stats = {"routed": 0, "upstream": 0, "dropped": 0}

    def window(self, client_id: str, wanted: Callable[[int, str], bool], limit: int) -> list[QueuedMessage]:
        """The next queued messages for a client (see Store.pending)."""
        return self.store.pending(client_id, wanted, limit)

    def ack(self, seq: int) -> None:
        """The client has the message."""
        self.store.ack(seq)

    def drop(self, why: str, *args: object) -> None:
        """Count a dropped message and say why (an error log)."""
        self.stats["dropped"] += 1
        logger.error(why, *args)

    def handle_message(self, identity: Identity, message: Message) -> None:
        """Route telemetry or an output; each endpoint gets the message once."""
        module_id = identity.module_id or None
        props = message.routing_properties(identity.device_id, module_id)
        routes = self.device_routes.get(identity.device_id, self.routes)
        deliveries = resolve(routes, module_id, message.output, props)
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
                    identity.device_id,
                )

    def deliver_input(
        self,
        module_id: str,
        input_name: str,
        message: Message,
        priority: int = 0,
        ttl_secs: int | None = None,
        device_id: str | None = None,
    ) -> None:
        """Queue a message for a module input (of the default device unless `device_id`) and send it now when the
        module is connected."""
        device_id = device_id or self.config.device_id
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
        session = self._session(client_id)
        if session:
            session.flush_queue()

    def purge(self, now: float | None = None) -> tuple[int, int]:
        """Drop expired queued messages and `$upstream` messages past the retention; (queued, upstream) dropped."""
        now = time.time() if now is None else now
        expired = self.store.purge_expired(now)
        pruned = self.store.prune_upstream(self.config.upstream_max_messages, now - self.config.upstream_max_age_secs)
        if expired or pruned:
            logger.info("purged %d expired queued messages and %d old $upstream messages", expired, pruned)
        return expired, pruned
