"""The MQTT-over-TLS side of the hub: one ClientSession per connection, addressed by identity."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.parse

from edgehub_emulator import mqtt
from edgehub_emulator.errors import AuthError, BadRequestError, NotFoundError
from edgehub_emulator.hub import Hub
from edgehub_emulator.messages import parse_properties
from edgehub_emulator.store import Identity

logger = logging.getLogger(__name__)

MAX_INFLIGHT = 100
CONNECT_TIMEOUT_SECS = 30
TOPIC_OVERHEAD = 64 * 1024  # room for topic names and properties on top of the payload limit


class ProtocolViolationError(Exception):
    """The client did something IoT Hub answers by closing the connection."""


def _rid(topic: str) -> str:
    query = topic.partition("?")[2]
    values = urllib.parse.parse_qs(query, keep_blank_values=True)
    if "$rid" not in values:
        raise ProtocolViolationError(f"topic {topic!r} has no $rid")
    return values["$rid"][0]


class ClientSession:
    """One connected, authenticated MQTT client."""

    def __init__(self, hub: Hub, identity: Identity, writer: asyncio.StreamWriter) -> None:
        self.hub = hub
        self.identity = identity
        self.client_id = identity.client_id
        self.writer = writer
        self.subscriptions: list[str] = hub.store.get_subscriptions(self.client_id)
        self._packet_ids = 0
        self.inflight: dict[int, int] = {}  # packet id -> queue seq
        self.closed = False
        self.keepalive = 0
        self._base = f"devices/{identity.device_id}" + (f"/modules/{identity.module_id}" if identity.module_id else "")

    def close(self) -> None:
        """Close the connection (another connection of the same identity replaced it)."""
        self.closed = True
        self.writer.close()

    def write(self, data: bytes) -> None:
        """Queue bytes on the socket unless closed."""
        if not self.closed:
            self.writer.write(data)

    def send(self, topic: str, payload: bytes) -> None:
        """QoS 0 publish (method requests, twin responses, desired patches)."""
        self.write(mqtt.publish(topic, payload))

    def _next_packet_id(self) -> int:
        while True:
            self._packet_ids = self._packet_ids % 65535 + 1
            if self._packet_ids not in self.inflight:
                return self._packet_ids

    def flush_queue(self) -> None:
        """Send queued messages this client subscribed to, up to MAX_INFLIGHT unacknowledged."""
        room = MAX_INFLIGHT - len(self.inflight)
        if self.closed or room <= 0 or not self.subscriptions:
            return
        sent = set(self.inflight.values())

        def wanted(seq: int, topic: str) -> bool:
            return seq not in sent and any(mqtt.topic_matches(f, topic) for f in self.subscriptions)

        for message in self.hub.queues.window(self.client_id, wanted, room):
            packet_id = self._next_packet_id()
            self.inflight[packet_id] = message.seq
            self.write(mqtt.publish(message.topic, message.payload, qos=1, packet_id=packet_id))

    def on_puback(self, packet_id: int) -> None:
        """The client has the message: forget it and send more."""
        seq = self.inflight.pop(packet_id, None)
        if seq is not None:
            self.hub.queues.ack(seq)
            if len(self.inflight) <= MAX_INFLIGHT // 2:  # refill in batches: one read per half window
                self.flush_queue()

    def subscribe(self, filters: list[tuple[str, int]]) -> list[int]:
        """Keep the filters this identity may use; return the SUBACK codes."""
        codes = []
        for topic_filter, qos in filters:
            if topic_filter.startswith("$iothub/") or topic_filter.startswith(self._base + "/"):
                if topic_filter not in self.subscriptions:
                    self.subscriptions.append(topic_filter)
                codes.append(min(qos, 1))
            else:
                logger.warning("%s may not subscribe to %r (another identity's topic)", self.client_id, topic_filter)
                codes.append(mqtt.SUBACK_FAILURE)
        self.hub.store.put_subscriptions(self.client_id, self.subscriptions)
        self.hub.subscribed(self)
        return codes

    def unsubscribe(self, filters: list[str]) -> None:
        """Drop filters."""
        self.subscriptions = [f for f in self.subscriptions if f not in filters]
        self.hub.store.put_subscriptions(self.client_id, self.subscriptions)

    def on_publish(self, topic: str, payload: bytes) -> None:
        """A publish from the client: telemetry/output, method response, twin request."""
        events = self._base + "/messages/events/"
        if topic.startswith(events) or topic == events[:-1]:
            if len(payload) > self.hub.config.max_message_bytes:
                self.hub.queues.drop(
                    "%s sent a message of %d bytes, over the limit of %d bytes: dropped",
                    self.client_id,
                    len(payload),
                    self.hub.config.max_message_bytes,
                )
                return
            message = parse_properties(topic[len(events) :])
            message.body = payload
            self.hub.handle_message(self.identity, message)
        elif topic.startswith("$iothub/methods/res/"):
            status_text = topic.split("/")[3]
            try:
                status = int(status_text)
            except ValueError as e:
                raise ProtocolViolationError(f"method response status {status_text!r} is not a number") from e
            self.hub.method_response(self.client_id, _rid(topic), status, payload)
        elif topic.startswith("$iothub/twin/GET/"):
            rid = _rid(topic)
            try:
                body = json.dumps(self.hub.twin_sections(self.identity)).encode()
                self.send(f"$iothub/twin/res/200/?$rid={rid}", body)
            except NotFoundError as e:
                self.send(f"$iothub/twin/res/404/?$rid={rid}", json.dumps({"message": str(e)}).encode())
        elif topic.startswith("$iothub/twin/PATCH/properties/reported/"):
            rid = _rid(topic)
            try:
                version = self.hub.patch_reported(self.identity, payload)
            except BadRequestError as e:
                logger.warning("%s sent a bad reported patch: %s", self.client_id, e)
                self.send(f"$iothub/twin/res/400/?$rid={rid}", json.dumps({"message": str(e)}).encode())
                return
            self.send(f"$iothub/twin/res/204/?$rid={rid}&$version={version}", b"")
        else:
            raise ProtocolViolationError(f"{self.client_id} may not publish to {topic!r}")


class MqttServer:
    """Accepts MQTT connections (TLS is set up by the caller's server)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.max_remaining = hub.config.max_message_bytes + TOPIC_OVERHEAD
        self.connect_timeout: float = CONNECT_TIMEOUT_SECS
        self._tasks: set[asyncio.Task[None]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection until it closes; errors end only this connection."""
        peer = writer.get_extra_info("peername")
        session: ClientSession | None = None
        task = asyncio.current_task()
        if task:
            self._tasks.add(task)
        try:
            session = await self._connect(reader, writer)
            if session is None:
                return
            keepalive = session.keepalive
            while not session.closed:
                timeout = keepalive * 1.5 if keepalive else None
                try:
                    kind, flags, body = await asyncio.wait_for(mqtt.read_packet(reader, self.max_remaining), timeout)
                except asyncio.TimeoutError:
                    logger.warning("%s sent nothing for 1.5 x keepalive (%s s): closing", session.client_id, keepalive)
                    break
                if not self._dispatch(session, kind, flags, body):
                    break
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:
            pass  # the emulator is stopping; finishing normally keeps asyncio from logging the cancellation
        except mqtt.MalformedPacketError as e:
            logger.warning(
                "malformed MQTT packet from %s (%s): %s; closing",
                peer,
                session.client_id if session else "not connected",
                e,
            )
        except ProtocolViolationError as e:
            logger.warning("protocol violation: %s; closing the connection", e)
        finally:
            if session:
                session.closed = True
                self.hub.detach(session)
                logger.info("%s disconnected", session.client_id)
            writer.close()
            if task:
                self._tasks.discard(task)

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> ClientSession | None:
        try:
            kind, _, body = await asyncio.wait_for(mqtt.read_packet(reader, 64 * 1024), self.connect_timeout)
        except asyncio.TimeoutError:
            logger.info(
                "%s sent no CONNECT within %g s: closing", writer.get_extra_info("peername"), self.connect_timeout
            )
            return None
        if kind != mqtt.CONNECT:
            raise mqtt.MalformedPacketError("the first packet must be CONNECT")
        packet = mqtt.parse_connect(body)
        if packet.protocol_level != 4:
            writer.write(mqtt.connack(mqtt.CONNACK_BAD_PROTOCOL))
            await writer.drain()
            logger.warning(
                "client %r asked for MQTT level %d; only 3.1.1 (4) is served",
                packet.client_id,
                packet.protocol_level,
            )
            return None
        try:
            identity = self.hub.authenticate_client(packet.client_id, packet.username, packet.password)
        except AuthError as e:
            logger.warning("refused MQTT client %r: %s", packet.client_id, e)
            writer.write(mqtt.connack(mqtt.CONNACK_NOT_AUTHORIZED))
            await writer.drain()
            return None
        if packet.clean_session:
            self.hub.store.delete_session(identity.client_id)
        session = ClientSession(self.hub, identity, writer)
        session.keepalive = packet.keepalive
        previous = self.hub.attach(session)
        if previous is not None:
            logger.info("%s connected again: closing its previous connection", identity.client_id)
            previous.close()
        writer.write(mqtt.connack(mqtt.CONNACK_ACCEPTED, session_present=bool(session.subscriptions)))
        logger.info("%s connected", identity.client_id)
        session.flush_queue()
        return session

    def _dispatch(self, session: ClientSession, kind: int, flags: int, body: bytes) -> bool:
        if kind == mqtt.PUBLISH:
            topic, qos, packet_id, payload = mqtt.parse_publish(flags, body)
            if qos == 2:
                raise ProtocolViolationError(f"{session.client_id} published with QoS 2 (IoT Hub serves 0 and 1)")
            session.on_publish(topic, payload)
            if qos == 1 and packet_id is not None:
                session.write(mqtt.puback(packet_id))
        elif kind == mqtt.PUBACK:
            session.on_puback(mqtt.parse_packet_id(body))
        elif kind == mqtt.SUBSCRIBE:
            if flags != 0x02:
                raise mqtt.MalformedPacketError("SUBSCRIBE flags must be 0010")
            packet_id, filters = mqtt.parse_subscribe(body)
            session.write(mqtt.suback(packet_id, session.subscribe(filters)))
            session.flush_queue()
        elif kind == mqtt.UNSUBSCRIBE:
            packet_id, names = mqtt.parse_unsubscribe(body)
            session.unsubscribe(names)
            session.write(mqtt.unsuback(packet_id))
        elif kind == mqtt.PINGREQ:
            session.write(mqtt.pingresp())
        elif kind == mqtt.DISCONNECT:
            return False
        else:
            raise mqtt.MalformedPacketError(f"unexpected packet type {kind}")
        return True

    async def close_all(self) -> None:
        """Cancel every connection handler."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
