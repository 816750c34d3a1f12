"""IoT Hub message properties as they travel in MQTT topic names."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field

# topic key -> routing-condition name of the system property
SYSTEM_KEYS = {
    "$.mid": "$messageId",
    "$.cid": "$correlationId",
    "$.uid": "$userId",
    "$.ct": "$contentType",
    "$.ce": "$contentEncoding",
    "$.exp": "$expiryTimeUtc",
    "$.ifid": "$interfaceId",
}


@dataclass
class Message:
    """A telemetry or output message: system properties by topic key, custom properties by name."""

    body: bytes
    system: dict[str, str] = field(default_factory=dict)
    custom: dict[str, str] = field(default_factory=dict)
    output: str | None = None

    def routing_properties(self, device_id: str, module_id: str | None) -> dict[str, str]:
        """What WHERE conditions see: custom properties by name, system ones as `$messageId` etc."""
        props = dict(self.custom)
        for key, value in self.system.items():
            props[SYSTEM_KEYS[key]] = value
        props["$connectionDeviceId"] = device_id
        if module_id:
            props["$connectionModuleId"] = module_id
        if self.output:
            props["$outputName"] = self.output
        return props

    def encode_properties(self) -> str:
        """System then custom properties, url-encoded for a topic (values may hold '=' or '&')."""
        pairs = list(self.system.items()) + sorted(self.custom.items())
        return "&".join(f"{urllib.parse.quote(k, safe='$.')}={urllib.parse.quote(v, safe='')}" for k, v in pairs)

    def as_json(self) -> dict[str, object]:
        """A JSON-friendly view (body as text when UTF-8, else base64) for monitor output."""
        return {"output": self.output, "system": dict(self.system), "properties": dict(self.custom)}


def parse_properties(text: str) -> Message:
    """The property segment of an events topic into a Message without body. As on IoT Hub, a trailing `/` ends the
    bag (the Node.js SDK sends `...&name=value/`) and is no part of the last value."""
    message = Message(body=b"")
    text = text.rstrip("/")
    if not text:
        return message
    for pair in text.split("&"):
        if not pair:
            continue
        raw_key, _, raw_value = pair.partition("=")
        key, value = urllib.parse.unquote(raw_key), urllib.parse.unquote(raw_value)
        if key == "$.on":
            message.output = value
        elif key in SYSTEM_KEYS:
            message.system[key] = value
        elif key.startswith("$."):
            continue  # other system keys (e.g. $.to) carry nothing a route or a module uses
        else:
            message.custom[key] = value
    return message
