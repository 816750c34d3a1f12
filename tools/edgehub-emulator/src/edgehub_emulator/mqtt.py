"""MQTT 3.1.1 packet codec (the subset IoT Hub speaks: QoS 0 and 1, no will delivery)."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

from edgehub_emulator.errors import EmulatorError

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14

CONNACK_ACCEPTED = 0
CONNACK_BAD_PROTOCOL = 1
CONNACK_ID_REJECTED = 2
CONNACK_BAD_CREDENTIALS = 4
CONNACK_NOT_AUTHORIZED = 5
SUBACK_FAILURE = 0x80


class MalformedPacketError(EmulatorError):
    """The bytes on the wire are not a valid MQTT 3.1.1 packet; the connection must be closed."""


@dataclass
class ConnectPacket:
    """The fields of CONNECT the emulator uses."""

    client_id: str
    username: str | None
    password: str | None
    keepalive: int
    clean_session: bool
    protocol_level: int


async def read_packet(reader: asyncio.StreamReader, max_remaining: int) -> tuple[int, int, bytes]:
    """One packet as (type, flags, body); MalformedPacketError for bad lengths or oversized packets."""
    first = await reader.readexactly(1)
    multiplier, length = 1, 0
    for _ in range(4):
        byte = (await reader.readexactly(1))[0]
        length += (byte & 0x7F) * multiplier
        if not byte & 0x80:
            break
        multiplier *= 128
    else:
        raise MalformedPacketError("remaining length uses more than 4 bytes")
    if length > max_remaining:
        raise MalformedPacketError(f"packet of {length} bytes exceeds the limit of {max_remaining} bytes")
    body = await reader.readexactly(length) if length else b""
    return first[0] >> 4, first[0] & 0x0F, body


def encode_remaining_length(length: int) -> bytes:
    """The variable-length encoding of MQTT."""
    out = bytearray()
    while True:
        byte, length = length % 128, length // 128
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out)


def _packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([(kind << 4) | flags]) + encode_remaining_length(len(body)) + body


def _string(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack("!H", len(data)) + data


class _Cursor:
    def __init__(self, body: bytes) -> None:
        self.body, self.pos = body, 0

    def take(self, count: int) -> bytes:
        """The next `count` bytes."""
        if self.pos + count > len(self.body):
            raise MalformedPacketError("packet ends inside a field")
        chunk = self.body[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def u8(self) -> int:
        """One byte."""
        return self.take(1)[0]

    def u16(self) -> int:
        """A big-endian 16-bit integer."""
        return int(struct.unpack("!H", self.take(2))[0])

    def binary(self) -> bytes:
        """A length-prefixed byte string."""
        return self.take(self.u16())

    def string(self) -> str:
        """A length-prefixed UTF-8 string."""
        try:
            return self.binary().decode("utf-8")
        except UnicodeDecodeError as e:
            raise MalformedPacketError("a string field is not valid UTF-8") from e

    def rest(self) -> bytes:
        """Everything left."""
        chunk = self.body[self.pos :]
        self.pos = len(self.body)
        return chunk


def parse_connect(body: bytes) -> ConnectPacket:
    """CONNECT; raises MalformedPacketError for a structurally bad packet."""
    cur = _Cursor(body)
    protocol = cur.string()
    level = cur.u8()
    if protocol not in ("MQTT", "MQIsdp"):
        raise MalformedPacketError(f"unknown protocol name {protocol!r}")
    flags = cur.u8()
    if flags & 0x01:
        raise MalformedPacketError("reserved CONNECT flag is set")
    keepalive = cur.u16()
    client_id = cur.string()
    if flags & 0x04:  # will flag: topic and message are read and ignored (IoT Hub does not support wills)
        cur.string()
        cur.binary()
    username = cur.string() if flags & 0x80 else None
    password = cur.binary().decode("utf-8", "replace") if flags & 0x40 else None
    return ConnectPacket(client_id, username, password, keepalive, bool(flags & 0x02), level)


def parse_publish(flags: int, body: bytes) -> tuple[str, int, int | None, bytes]:
    """PUBLISH as (topic, qos, packet id or None, payload)."""
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise MalformedPacketError("PUBLISH with QoS 3")
    cur = _Cursor(body)
    topic = cur.string()
    packet_id = cur.u16() if qos else None
    return topic, qos, packet_id, cur.rest()


def parse_subscribe(body: bytes) -> tuple[int, list[tuple[str, int]]]:
    """SUBSCRIBE as (packet id, [(filter, requested qos)])."""
    cur = _Cursor(body)
    packet_id = cur.u16()
    filters = []
    while cur.pos < len(body):
        topic = cur.string()
        filters.append((topic, cur.u8() & 0x03))
    if not filters:
        raise MalformedPacketError("SUBSCRIBE without topic filters")
    return packet_id, filters


def parse_unsubscribe(body: bytes) -> tuple[int, list[str]]:
    """UNSUBSCRIBE as (packet id, filters)."""
    cur = _Cursor(body)
    packet_id = cur.u16()
    filters = []
    while cur.pos < len(body):
        filters.append(cur.string())
    return packet_id, filters


def parse_packet_id(body: bytes) -> int:
    """The packet id of PUBACK and friends."""
    return _Cursor(body).u16()


def connack(code: int, session_present: bool = False) -> bytes:
    """CONNACK."""
    return _packet(CONNACK, 0, bytes([1 if session_present and code == 0 else 0, code]))


def publish(topic: str, payload: bytes, qos: int = 0, packet_id: int | None = None, dup: bool = False) -> bytes:
    """PUBLISH."""
    body = _string(topic) + (struct.pack("!H", packet_id or 0) if qos else b"") + payload
    return _packet(PUBLISH, (0x08 if dup else 0) | (qos << 1), body)


def puback(packet_id: int) -> bytes:
    """PUBACK."""
    return _packet(PUBACK, 0, struct.pack("!H", packet_id))


def suback(packet_id: int, codes: list[int]) -> bytes:
    """SUBACK."""
    return _packet(SUBACK, 0, struct.pack("!H", packet_id) + bytes(codes))


def unsuback(packet_id: int) -> bytes:
    """UNSUBACK."""
    return _packet(UNSUBACK, 0, struct.pack("!H", packet_id))


def pingresp() -> bytes:
    """PINGRESP."""
    return _packet(PINGRESP, 0, b"")


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT wildcard matching of `+` and `#`."""
    filter_parts, topic_parts = topic_filter.split("/"), topic.split("/")
    for index, part in enumerate(filter_parts):
        if part == "#":
            return True
        if index >= len(topic_parts):
            return False
        if part not in ("+", topic_parts[index]):
            return False
    return len(filter_parts) == len(topic_parts)
