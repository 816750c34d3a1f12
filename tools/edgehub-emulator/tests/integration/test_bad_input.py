"""Bad input gets a clear error for its sender or the operator, and everyone else keeps being served."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest
import requests
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


def _nested(levels: int) -> str:
    return '{"a": ' * levels + "1" + "}" * levels


DEEP = _nested(10_000)  # far past Python's recursion limit


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "error"),
    [
        ("PATCH", "/twins/{d}/modules/receiver", '{"properties": {"desired": %s}}' % DEEP, {}, 400, "nests deeper"),
        (
            "PATCH",
            "/twins/{d}/modules/receiver",
            '{"properties": {"desired": %s}}' % _nested(12),
            {},
            400,
            "nests deeper than 10 levels",
        ),
        (
            "PATCH",
            "/twins/{d}/modules/receiver",
            '{"properties": {"desired": {"x": 1}}}',
            {"Content-Type": "text/plain"},
            415,
            "must be application/json, not text/plain",
        ),
        (
            "POST",
            "/twins/{d}/modules/receiver/methods",
            '{"methodName": "m", "payload": %s}' % DEEP,
            {},
            400,
            "nests deeper",
        ),
        (
            "POST",
            "/twins/{d}/modules/receiver/methods",
            json.dumps({"methodName": "m" * 101}),
            {},
            400,
            "the limit is 100",
        ),
        (
            "POST",
            "/twins/{d}/modules/receiver/methods",
            json.dumps({"methodName": "m" * 200_000}),
            {},
            413,
            "Maximum request body size",
        ),
        (
            "POST",
            "/twins/{d}/modules/receiver/methods",
            '{"methodName": "m", "responseTimeoutInSeconds": 1e308}',
            {},
            400,
            "responseTimeoutInSeconds must be a number from 5 to 300",
        ),
        (
            "POST",
            "/twins/{d}/modules/receiver/methods",
            '{"methodName": "m", "responseTimeoutInSeconds": Infinity}',
            {},
            400,
            "not valid JSON",
        ),
        (
            "POST",
            "/twins/{d}/modules/receiver/methods",
            '{"methodName": "m", "responseTimeoutInSeconds": NaN}',
            {},
            400,
            "not valid JSON",
        ),
        (
            "POST",
            "/twins/{d}/modules/receiver/methods",
            '{"methodName": "m", "responseTimeoutInSeconds": 4}',
            {},
            400,
            "from 5 to 300",
        ),
        (
            "POST",
            "/twins/{d}/modules/receiver/methods",
            '{"methodName": "m", "responseTimeoutInSeconds": 301}',
            {},
            400,
            "from 5 to 300",
        ),
        (
            "POST",
            "/twins/{d}/modules/receiver/methods",
            '{"methodName": "m", "responseTimeoutInSeconds": true}',
            {},
            400,
            "from 5 to 300",
        ),
        (
            "POST",
            "/twins/{d}/modules/receiver/methods",
            '{"methodName": "m", "connectTimeoutInSeconds": -1}',
            {},
            400,
            "connectTimeoutInSeconds must be a number from 0 to 300",
        ),
        (
            "PUT",
            "/devices/{d}/modules/badkey",
            '{"authentication": {"symmetricKey": {"primaryKey": "not base64!"}}}',
            {},
            400,
            "primaryKey must be a base64 key",
        ),
        ("GET", "/emulator/upstream?after=1e23", "", {}, 400, "'after' must be an integer"),
        ("GET", "/emulator/upstream?after=100000000000000000000000", "", {}, 400, "'after' must be an integer"),
        ("GET", "/emulator/upstream?after=-1", "", {}, 400, "'after' must be an integer"),
        ("GET", "/emulator/upstream?limit=-1", "", {}, 400, "'limit' must be an integer from 1 to 5000"),
        ("GET", "/emulator/upstream?limit=0", "", {}, 400, "'limit' must be an integer from 1 to 5000"),
        ("GET", "/emulator/upstream?limit=5001", "", {}, 400, "'limit' must be an integer from 1 to 5000"),
        ("GET", "/no/such/api", "", {}, 404, "Not Found"),
        ("DELETE", "/twins/{d}/modules/receiver", "", {}, 405, "Method Not Allowed"),
    ],
)
def test_bad_service_requests_get_a_4xx_and_change_nothing(  # pylint: disable=too-many-arguments,too-many-positional-arguments
    emulator: EmulatorProcess,
    registry: IoTHubRegistryManager,
    healthy: IoTHubModuleClient,
    method: str,
    path: str,
    body: str,
    headers: dict[str, str],
    status: int,
    error: str,
) -> None:
    twin_before = registry.get_module_twin(DEVICE, "receiver").as_dict()
    url_path = path.replace("{d}", DEVICE)
    env = emulator.env("receiver")
    host = env["IOTHUB_CONNECTION_STRING"].split(";")[0].split("=", 1)[1]
    response = requests.request(
        method,
        f"https://{host}{url_path}",
        data=body.encode(),
        headers={"Authorization": service_token(emulator), **headers},
        verify=env["REQUESTS_CA_BUNDLE"],
        timeout=30,
    )
    assert response.status_code == status, response.text[:300]
    assert error in response.json()["Message"]
    assert registry.get_module_twin(DEVICE, "receiver").as_dict() == twin_before
    assert call_service_api(emulator, "GET", f"/devices/{DEVICE}/modules/badkey", b"").status_code == 404
    assert "Traceback" not in emulator.log_text()
    assert _serving(registry, healthy)


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (DEEP.encode(), b"nests deeper"),
        (_nested(12).encode(), b"nests deeper than 10 levels"),
        (b'{"x": NaN}', b"not valid JSON"),
    ],
)
def test_bad_reported_patches_over_mqtt_get_400(
    emulator: EmulatorProcess,
    registry: IoTHubRegistryManager,
    healthy: IoTHubModuleClient,
    payload: bytes,
    error: bytes,
) -> None:
    with tls_socket(emulator) as sock:
        sock.sendall(connect_packet(emulator, "sender"))
        assert sock.recv(4) == b"\x20\x02\x00\x00"
        sock.sendall(mqtt.publish("$iothub/twin/PATCH/properties/reported/?$rid=9", payload, qos=0))
        answer = b""
        while b"$rid=9" not in answer or error not in answer:
            chunk = sock.recv(4096)
            assert chunk, answer
            answer += chunk
        assert b"$iothub/twin/res/400/?$rid=9" in answer
    assert "Traceback" not in emulator.log_text()
    assert _serving(registry, healthy)
