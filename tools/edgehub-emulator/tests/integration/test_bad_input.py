"""Bad input gets a clear error for its sender or the operator, and everyone else keeps being served."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest
from azure.iot.device import IoTHubModuleClient, Message, MethodResponse
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import CloudToDeviceMethod

from edgehub_emulator import mqtt

from .conftest import (
    MAX_MESSAGE_BYTES,
    EmulatorProcess,
    call_service_api,
    connect_packet,
    read_all,
    service_token,
    tls_socket,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DEVICE = "edge-device"


def _serving(registry: IoTHubRegistryManager, client: IoTHubModuleClient) -> bool:
    """A method call through the healthy client still works."""
    result = registry.invoke_device_module_method(
        DEVICE,
        "receiver",
        CloudToDeviceMethod(method_name="alive", payload=None, response_timeout_in_seconds=5),
    )
    return bool(result.status == 200 and client.connected)


@pytest.fixture
def healthy(module_client: Callable[..., IoTHubModuleClient]) -> IoTHubModuleClient:
    """A connected receiver answering methods: the 'everyone else' of these tests."""
    client = module_client("receiver")
    client.on_method_request_received = lambda r: client.send_method_response(
        MethodResponse.create_from_method_request(r, 200, None)
    )
    client.connect()
    return client


@pytest.mark.parametrize(
    ("packet", "log"),
    [
        (b"\x10\xff\xff\xff\xff\x7f", "remaining length uses more than 4 bytes"),
        (b"\x30\x03\x00\x01a", "the first packet must be CONNECT"),
        (b"\x10\x04\x00\x04MQ", "packet ends inside a field"),
    ],
)
def test_malformed_mqtt_closes_only_that_connection(
    emulator: EmulatorProcess,
    registry: IoTHubRegistryManager,
    healthy: IoTHubModuleClient,
    packet: bytes,
    log: str,
) -> None:
    with tls_socket(emulator) as sock:
        sock.sendall(packet)
        assert read_all(sock) == b""  # closed without an answer
    wait_for(lambda: log in emulator.log_text())
    assert _serving(registry, healthy)


def test_unknown_topic_and_bad_reported_json(
    emulator: EmulatorProcess, registry: IoTHubRegistryManager, healthy: IoTHubModuleClient
) -> None:
    with tls_socket(emulator) as sock:
        sock.sendall(connect_packet(emulator, "sender"))
        assert sock.recv(4) == b"\x20\x02\x00\x00"  # CONNACK accepted
        sock.sendall(mqtt.publish("$iothub/twin/PATCH/properties/reported/?$rid=7", b"{not json", qos=0))
        answer = sock.recv(4096)
        assert b"$iothub/twin/res/400/?$rid=7" in answer and b"not valid JSON" in answer
        sock.sendall(mqtt.publish("devices/other/messages/events/", b"x", qos=1, packet_id=3))
        assert read_all(sock) == b""
    wait_for(lambda: "may not publish to 'devices/other/messages/events/'" in emulator.log_text())
    assert _serving(registry, healthy)


def test_oversized_message_is_dropped_with_an_error(
    emulator: EmulatorProcess,
    registry: IoTHubRegistryManager,
    healthy: IoTHubModuleClient,
    module_client: Callable[..., IoTHubModuleClient],
) -> None:
    received: list[Any] = []
    healthy.on_message_received = received.append
    sender = module_client("sender")
    sender.connect()
    big, small = str(uuid.uuid4()), str(uuid.uuid4())
    sender.send_message_to_output(Message("x" * (MAX_MESSAGE_BYTES + 1), message_id=big), "out1")
    sender.send_message_to_output(Message("fits", message_id=small), "out1")
    wait_for(lambda: [m for m in received if m.message_id == small])
    assert not [m for m in received if m.message_id == big]
    assert f"over the limit of {MAX_MESSAGE_BYTES} bytes: dropped" in emulator.log_text()
    assert _serving(registry, healthy)


def test_malformed_json_to_the_service_api_is_400(
    emulator: EmulatorProcess, registry: IoTHubRegistryManager, healthy: IoTHubModuleClient
) -> None:
    for path, method in (
        (f"/twins/{DEVICE}/modules/receiver/methods", "POST"),
        (f"/twins/{DEVICE}/modules/receiver", "PATCH"),
    ):
        response = call_service_api(emulator, method, path, b"{bad")
        assert response.status_code == 400 and "not valid JSON" in response.json()["Message"]
    forged = service_token(emulator).replace("sig=", "sig=A")
    response = call_service_api(emulator, "POST", f"/twins/{DEVICE}/modules/receiver/methods", b"{}", forged)
    assert response.status_code == 401
    bad = emulator.cli("invoke", DEVICE, "receiver", "m", "--payload", "{oops", check=False)
    assert bad.returncode == 2 and "--payload is not valid JSON" in bad.stderr
    bad = emulator.cli("twin", "patch", DEVICE, "receiver", "[1]", check=False)
    assert bad.returncode == 2 and "must be a JSON object" in bad.stderr
    assert _serving(registry, healthy)


def test_bad_route_in_manifest_stops_start_with_a_clear_error(tmp_path: Path) -> None:
    manifest = json.loads((Path(__file__).parents[1] / "fixtures" / "deployment.json").read_text())
    manifest["modulesContent"]["$edgeHub"]["properties.desired"]["routes"]["broken"] = "FROM /messages/* TO x"
    path = tmp_path / "deployment.json"
    path.write_text(json.dumps(manifest))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgehub_emulator.cli",
            "start",
            "--manifest",
            str(path),
            "--state",
            str(tmp_path / "state"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "route 'broken' is not 'FROM <source> [WHERE <condition>] INTO <sink>'" in result.stderr
