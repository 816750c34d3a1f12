"""Who may answer, sign, connect and read: method replies, the workload API, host names, state file modes."""

from __future__ import annotations

import base64
import json
import stat
import threading
from typing import Any, Callable

import pytest
import requests
from azure.iot.device import IoTHubModuleClient, MethodResponse
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import CloudToDeviceMethod
from msrest.exceptions import HttpOperationError

from edgehub_emulator import mqtt
from edgehub_emulator.identity import generate_sas, parse_connection_string

from .conftest import EmulatorProcess, call_service_api, tls_socket, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DEVICE = "edge-device"
Factory = Callable[..., IoTHubModuleClient]


def _field(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def _raw_connect(emulator: EmulatorProcess, module: str, hub_host: str | None = None) -> tuple[Any, int]:
    """A raw MQTT connection of `module` whose username and SAS name `hub_host` (default: the real hub);
    returns (socket, CONNACK code)."""
    cs = parse_connection_string(emulator.env(module)["EdgeHubConnectionString"])
    host = hub_host or cs["HostName"]
    client_id = f"{cs['DeviceId']}/{module}"
    password = generate_sas(f"{host}/devices/{cs['DeviceId']}/modules/{module}", cs["SharedAccessKey"])
    body = (
        _field("MQTT")
        + bytes([4, 0xC0])
        + (60).to_bytes(2, "big")
        + _field(client_id)
        + _field(f"{host}/{client_id}/?api-version=2019-10-01")
        + _field(password)
    )
    sock = tls_socket(emulator)
    sock.sendall(bytes([0x10]) + mqtt.encode_remaining_length(len(body)) + body)
    connack = sock.recv(4)
    return sock, connack[3]


def _subscribe(sock: Any, topic_filter: str) -> None:
    body = (1).to_bytes(2, "big") + _field(topic_filter) + b"\x00"
    sock.sendall(bytes([0x82]) + mqtt.encode_remaining_length(len(body)) + body)
    assert sock.recv(5)[0] == 0x90  # SUBACK


def _read_publish(sock: Any) -> tuple[str, bytes]:
    """The next PUBLISH (QoS 0) on a raw socket as (topic, payload)."""
    first = sock.recv(1)
    length, multiplier = 0, 1
    while True:
        byte = sock.recv(1)[0]
        length += (byte & 0x7F) * multiplier
        multiplier *= 128
        if not byte & 0x80:
            break
    body = b""
    while len(body) < length:
        body += sock.recv(length - len(body))
    assert first[0] >> 4 == mqtt.PUBLISH, first
    topic, _, _, payload = mqtt.parse_publish(first[0] & 0x0F, body)
    return topic, payload


def _invoke_in_thread(registry: IoTHubRegistryManager, module: str, **options: Any) -> dict[str, Any]:
    """Start a method call; the dict gets 'result' or 'status' (the HTTP error) when it ends."""
    outcome: dict[str, Any] = {}

    def call() -> None:
        try:
            outcome["result"] = registry.invoke_device_module_method(
                DEVICE, module, CloudToDeviceMethod(method_name="work", payload={"n": 1}, **options)
            )
        except HttpOperationError as e:
            outcome["status"] = e.response.status_code

    outcome["thread"] = threading.Thread(target=call, daemon=True)
    outcome["thread"].start()
    return outcome


def test_another_module_cannot_answer_a_method_call(
    emulator: EmulatorProcess, registry: IoTHubRegistryManager, module_client: Factory
) -> None:
    """The forger even learns the request id: its answer is ignored, the real answer arrives."""
    receiver = module_client("receiver")
    seen: list[str] = []
    forged = threading.Event()

    def answer_late(request: Any) -> None:
        seen.append(request.request_id)
        forged.wait(10)
        receiver.send_method_response(MethodResponse.create_from_method_request(request, 200, {"from": "receiver"}))

    receiver.on_method_request_received = answer_late
    receiver.connect()
    call = _invoke_in_thread(registry, "receiver", response_timeout_in_seconds=30)
    rid = wait_for(lambda: seen and seen[0])
    forger, code = _raw_connect(emulator, "sender")
    with forger:
        assert code == mqtt.CONNACK_ACCEPTED
        forger.sendall(mqtt.publish(f"$iothub/methods/res/200/?$rid={rid}", b'{"from": "forger"}'))
        wait_for(lambda: f"sender answered method request '{rid}', which it has no call for" in emulator.log_text())
    forged.set()
    call["thread"].join(30)
    assert call["result"].status == 200 and call["result"].payload == {"from": "receiver"}
    assert len(rid) >= 16 and int(rid, 16) > 0  # random, not a counter from 1


def test_a_call_ends_with_404_when_its_module_disconnects(
    emulator: EmulatorProcess, registry: IoTHubRegistryManager
) -> None:
    sock, code = _raw_connect(emulator, "sender")
    assert code == mqtt.CONNACK_ACCEPTED
    _subscribe(sock, "$iothub/methods/POST/#")
    call = _invoke_in_thread(registry, "sender", response_timeout_in_seconds=60)
    topic, payload = _read_publish(sock)
    assert topic.startswith("$iothub/methods/POST/work/?$rid=") and json.loads(payload) == {"n": 1}
    sock.close()
    call["thread"].join(30)  # far less than the 60 s response timeout
    assert call.get("status") == 404
    wait_for(lambda: "disconnected before it answered" in emulator.log_text())


def test_a_call_waits_for_the_method_subscription_within_the_connect_timeout(
    registry: IoTHubRegistryManager, module_client: Factory
) -> None:
    call = _invoke_in_thread(registry, "sender", response_timeout_in_seconds=10, connect_timeout_in_seconds=30)
    sender = module_client("sender")
    sender.on_method_request_received = lambda request: sender.send_method_response(
        MethodResponse.create_from_method_request(request, 201, {"late": True})
    )
    sender.connect()
    call["thread"].join(40)
    assert call["result"].status == 201 and call["result"].payload == {"late": True}


def test_wildcard_subscriptions_get_desired_patches_and_method_calls(
    emulator: EmulatorProcess, registry: IoTHubRegistryManager
) -> None:
    sock, code = _raw_connect(emulator, "sender")
    with sock:
        assert code == mqtt.CONNACK_ACCEPTED
        _subscribe(sock, "$iothub/#")
        response = call_service_api(
            emulator, "PATCH", f"/twins/{DEVICE}/modules/sender", b'{"properties": {"desired": {"w": 1}}}'
        )
        assert response.status_code == 200
        topic, payload = _read_publish(sock)
        assert topic.startswith("$iothub/twin/PATCH/properties/desired/") and json.loads(payload)["w"] == 1
        call = _invoke_in_thread(registry, "sender", response_timeout_in_seconds=5)
        topic, _ = _read_publish(sock)
        assert topic.startswith("$iothub/methods/POST/work/")
        call["thread"].join(20)
        assert call.get("status") == 504  # nobody answered, but the request did reach the wildcard subscriber


def _workload(emulator: EmulatorProcess, module: str, genid: str) -> requests.Response:
    port = emulator.workload_port
    body = {"keyId": "primary", "algo": "HMACSHA256", "data": base64.b64encode(b"resource\n1").decode()}
    return requests.post(
        f"http://127.0.0.1:{port}/modules/{module}/genid/{genid}/sign?api-version=2019-01-30", json=body, timeout=10
    )


def test_workload_api_signs_only_with_the_modules_generation_id(emulator: EmulatorProcess) -> None:
    receiver = emulator.env("receiver", workload=True)["IOTEDGE_MODULEGENERATIONID"]
    sender = emulator.env("sender", workload=True)["IOTEDGE_MODULEGENERATIONID"]
    assert receiver != sender and receiver not in ("1", "")
    assert _workload(emulator, "receiver", receiver).status_code == 200
    for module, genid in (("receiver", sender), ("receiver", "1"), ("nobody", receiver)):
        response = _workload(emulator, module, genid)
        assert response.status_code == 404, (module, genid)
        assert "digest" not in response.text


def test_tokens_for_another_hub_are_refused(emulator: EmulatorProcess) -> None:
    sock, code = _raw_connect(emulator, "sender", hub_host="other-hub.azure-devices.net")
    sock.close()
    assert code == mqtt.CONNACK_NOT_AUTHORIZED
    wait_for(lambda: "names the hub 'other-hub.azure-devices.net', not this hub" in emulator.log_text())
    key = parse_connection_string(emulator.env("sender")["EdgeHubConnectionString"])["SharedAccessKey"]
    token = generate_sas(f"other-hub.azure-devices.net/devices/{DEVICE}/modules/sender", key)
    response = call_service_api(
        emulator, "POST", f"/twins/{DEVICE}/modules/receiver/methods", b'{"methodName": "m"}', token
    )
    assert response.status_code == 401 and "not this hub" in response.json()["Message"]


def test_module_token_signed_with_the_secondary_key_is_accepted(emulator: EmulatorProcess) -> None:
    module = call_service_api(emulator, "GET", f"/devices/{DEVICE}/modules/sender", b"").json()
    host = parse_connection_string(emulator.env("sender")["EdgeHubConnectionString"])["HostName"]
    for key, expected in (("secondaryKey", 404), ("primaryKey", 404)):
        token = generate_sas(f"{host}/devices/{DEVICE}/modules/sender", module["authentication"]["symmetricKey"][key])
        body = b'{"methodName": "m", "responseTimeoutInSeconds": 5}'
        response = call_service_api(emulator, "POST", f"/twins/{DEVICE}/modules/receiver/methods", body, token)
        assert response.status_code == expected, (key, response.text)  # authenticated: the target is offline


def test_state_folder_and_files_are_private(emulator: EmulatorProcess) -> None:
    assert stat.S_IMODE(emulator.state.stat().st_mode) == 0o700
    for name in ("state.sqlite3", "runtime.json", "certs/ca-key.pem", "certs/server-key.pem"):
        assert stat.S_IMODE((emulator.state / name).stat().st_mode) == 0o600, name


def test_service_patches_survive_a_restart_with_the_same_manifest(
    emulator: EmulatorProcess, module_client: Factory
) -> None:
    response = call_service_api(
        emulator,
        "PATCH",
        f"/twins/{DEVICE}/modules/receiver",
        b'{"properties": {"desired": {"threshold": 0.9, "addedByService": "kept"}}}',
    )
    assert response.status_code == 200
    emulator.stop()
    emulator.start()
    receiver = module_client("receiver")
    receiver.connect()
    desired = receiver.get_twin()["desired"]
    assert desired["threshold"] == 0.9 and desired["addedByService"] == "kept" and desired["labels"] == ["cat", "dog"]
    assert "receiver: manifest desired properties unchanged since applied" in emulator.log_text()


def test_a_changed_manifest_section_is_applied_on_restart(
    emulator: EmulatorProcess, module_client: Factory, tmp_path: Any
) -> None:
    manifest = json.loads(emulator.manifest.read_text(encoding="utf-8"))
    manifest["modulesContent"]["receiver"]["properties.desired"] = {"threshold": 0.25, "labels": ["bird"]}
    changed = tmp_path / "deployment.json"
    changed.write_text(json.dumps(manifest), encoding="utf-8")
    original = emulator.manifest
    emulator.stop()
    emulator.manifest = changed
    try:
        emulator.start()
        receiver = module_client("receiver")
        receiver.connect()
        desired = receiver.get_twin()["desired"]
        # the section replaces the desired properties, keys the service added included (as a new deployment does)
        assert {k: v for k, v in desired.items() if k != "$version"} == {"threshold": 0.25, "labels": ["bird"]}
        assert "receiver: applying the manifest's desired properties (its manifest section changed)" in (
            emulator.log_text()
        )
    finally:
        emulator.stop()
        emulator.manifest = original
        emulator.start()
