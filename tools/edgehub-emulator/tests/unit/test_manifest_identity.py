"""Manifest reading, SAS tokens and the MQTT codec."""

import asyncio
import json
import time
from pathlib import Path

import pytest

from edgehub_emulator import mqtt
from edgehub_emulator.errors import AuthError, ManifestError, RouteSyntaxError
from edgehub_emulator.identity import derive_key, generate_sas, parse_sas, verify_sas
from edgehub_emulator.manifest import load_manifest, parse_manifest

FIXTURE = Path(__file__).parents[1] / "fixtures" / "deployment.json"


def test_fixture_manifest_is_read() -> None:
    manifest = load_manifest(FIXTURE)
    assert set(manifest.modules) == {"sender", "receiver"}
    assert manifest.modules["sender"].env["GREETING"] == "hello"
    assert manifest.modules["sender"].image == "${MODULES.sender}"
    assert manifest.modules["receiver"].restart_policy == "on-failure"
    assert manifest.desired["receiver"]["threshold"] == 0.5
    assert len(manifest.routes) == 4
    assert manifest.solution_dir == FIXTURE.parent


def _manifest(routes: object = None, modules: object = None) -> dict:
    return {
        "modulesContent": {
            "$edgeAgent": {"properties.desired": {"modules": modules or {}}},
            "$edgeHub": {"properties.desired": {"routes": routes or {}}},
        }
    }


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ([], "JSON object"),
        ({}, "modulesContent"),
        ({"modulesContent": {"$edgeAgent": {}}}, r"\$edgeAgent.properties.desired"),
        (_manifest(routes={"r": "FROM nowhere"}), "is not 'FROM"),
        (_manifest(modules={"m": {"restartPolicy": "sometimes"}}), "restartPolicy"),
        (_manifest(modules={"m": {"env": {"A": "no-value-object"}}}), "env 'A'"),
        (_manifest(routes=["FROM /messages/* INTO $upstream"]), "routes must be an object"),
    ],
)
def test_bad_manifests(data: object, error: str) -> None:
    with pytest.raises(ManifestError, match=error):
        parse_manifest(data)


def test_bad_route_in_manifest_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "deployment.json"
    path.write_text(json.dumps(_manifest(routes={"bad": "FROM /messages/* INTO somewhere"})))
    with pytest.raises(RouteSyntaxError, match=f"{path}.*route 'bad'"):
        load_manifest(path)
    path.write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest(path)


def test_sas_round_trip_and_failures() -> None:
    key, other = derive_key("s", "a"), derive_key("s", "b")
    assert key == derive_key("s", "a") and key != other
    token = parse_sas(generate_sas("hub/devices/d/modules/m", key))
    assert token.resource == "hub/devices/d/modules/m"
    verify_sas(token, key)
    with pytest.raises(AuthError, match="does not match"):
        verify_sas(token, other)
    with pytest.raises(AuthError, match="expired"):
        verify_sas(token, key, now=time.time() + 7200)
    for bad, reason in (
        ("Basic abc", "not a SharedAccessSignature"),
        ("SharedAccessSignature sr=x", "lacks"),
        ("SharedAccessSignature sr=x&sig=y&se=z", "not an integer"),
    ):
        with pytest.raises(AuthError, match=reason):
            parse_sas(bad)


def test_mqtt_codec_round_trip_and_malformed() -> None:
    packet = mqtt.publish("a/b", b"payload", qos=1, packet_id=7)

    async def read(data: bytes, limit: int = 1000) -> tuple[int, int, bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await mqtt.read_packet(reader, limit)

    kind, flags, body = asyncio.run(read(packet))
    assert kind == mqtt.PUBLISH and mqtt.parse_publish(flags, body) == ("a/b", 1, 7, b"payload")
    with pytest.raises(mqtt.MalformedPacketError, match="4 bytes"):
        asyncio.run(read(b"\x30\xff\xff\xff\xff\x01"))
    with pytest.raises(mqtt.MalformedPacketError, match="exceeds the limit"):
        asyncio.run(read(mqtt.publish("t", b"x" * 100), limit=50))
    with pytest.raises(mqtt.MalformedPacketError, match="ends inside"):
        mqtt.parse_connect(b"\x00\x04MQ")
    assert mqtt.encode_remaining_length(321) == bytes([0xC1, 0x02])
    assert mqtt.topic_matches("devices/d/modules/m/inputs/#", "devices/d/modules/m/inputs/x/y")
    assert mqtt.topic_matches("$iothub/methods/POST/#", "$iothub/methods/POST/m/?$rid=1")
    assert not mqtt.topic_matches("devices/d/modules/m/inputs/#", "devices/d/modules/n/inputs/x")
    assert mqtt.topic_matches("a/+/c", "a/b/c") and not mqtt.topic_matches("a/+", "a/b/c")
