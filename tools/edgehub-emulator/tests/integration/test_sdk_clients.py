"""The emulator driven only through the unmodified azure-iot-device / azure-iot-hub clients and the CLI."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, Callable

import pytest
from azure.iot.device import IoTHubModuleClient, Message, MethodResponse
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import CloudToDeviceMethod, Twin, TwinProperties
from msrest.exceptions import HttpOperationError

from .conftest import DesiredPatches, EmulatorProcess, assert_key_refused, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DEVICE = "edge-device"
Factory = Callable[..., IoTHubModuleClient]


def _listen(client: IoTHubModuleClient) -> list[Any]:
    received: list[Any] = []
    client.on_message_received = received.append
    return received


def _echo_methods(client: IoTHubModuleClient) -> None:
    def handler(request: Any) -> None:
        client.send_method_response(
            MethodResponse.create_from_method_request(request, 200, {"method": request.name, "echo": request.payload})
        )

    client.on_method_request_received = handler


def _by_id(received: list[Any], message_id: str) -> list[Any]:
    return [m for m in received if m.message_id == message_id]


def test_output_is_routed_to_inputs_and_upstream_with_properties_intact(
    emulator: EmulatorProcess, module_client: Factory
) -> None:
    receiver = module_client("receiver", how="simulator")
    received = _listen(receiver)
    receiver.connect()
    sender = module_client("sender", how="connection_string")
    sender.connect()
    message_id = str(uuid.uuid4())
    message = Message(
        json.dumps({"label": "cat"}),
        message_id=message_id,
        content_encoding="utf-8",
        content_type="application/json",
    )
    message.correlation_id = "corr-1"
    message.custom_properties.update({"severity": "high", "odd value": "a=b&c"})
    sender.send_message_to_output(message, "out1")

    mine = wait_for(lambda: len(_by_id(received, message_id)) == 2 and _by_id(received, message_id))
    assert sorted(m.input_name for m in mine) == ["alerts", "in1"]  # two routes, two endpoints, once each
    for got in mine:
        assert got.correlation_id == "corr-1"
        assert (got.content_type, got.content_encoding) == ("application/json", "utf-8")
        assert got.custom_properties == {"severity": "high", "odd value": "a=b&c"}
        assert json.loads(got.data) == {"label": "cat"}

    # two routes lead to $upstream (out1 and /messages/*): it is stored once
    lines = emulator.cli("monitor", "--from-start", "--once").stdout.splitlines()
    upstream = [json.loads(line) for line in lines if message_id in line]
    assert len(upstream) == 1
    assert upstream[0]["moduleId"] == "sender" and upstream[0]["output"] == "out1"
    assert upstream[0]["properties"]["severity"] == "high"
    # a JSON body is printed as JSON, the time as ISO 8601 UTC; --raw keeps the stored string and the epoch
    assert upstream[0]["body"] == {"label": "cat"} and upstream[0]["encoding"] == "json"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", upstream[0]["enqueuedTime"])
    raw = [json.loads(line) for line in emulator.cli("monitor", "--from-start", "--once", "--raw").stdout.splitlines()]
    raw = [item for item in raw if message_id in json.dumps(item)]
    assert json.loads(raw[0]["body"]) == {"label": "cat"}
    assert raw[0]["enqueuedTime"] == upstream[0]["enqueuedTimeEpoch"]


def test_workload_api_path_connects_and_receives(emulator: EmulatorProcess, module_client: Factory) -> None:
    receiver = module_client("receiver", how="workload")
    received = _listen(receiver)
    receiver.connect()
    emulator.cli("send-input", "receiver", "in1", '{"hello": "workload"}')
    got = wait_for(lambda: [m for m in received if m.data == b'{"hello": "workload"}'])
    assert got[0].input_name == "in1" and got[0].content_type == "application/json"


def test_service_invokes_module_method(registry: IoTHubRegistryManager, module_client: Factory) -> None:
    receiver = module_client("receiver")
    _echo_methods(receiver)
    receiver.connect()
    result = registry.invoke_device_module_method(
        DEVICE,
        "receiver",
        CloudToDeviceMethod(method_name="ping", payload={"n": 1}, response_timeout_in_seconds=5),
    )
    assert (result.status, result.payload) == (200, {"method": "ping", "echo": {"n": 1}})


def test_method_to_offline_module_is_404_and_to_silent_module_is_504(
    registry: IoTHubRegistryManager, module_client: Factory
) -> None:
    with pytest.raises(HttpOperationError) as offline:
        registry.invoke_device_module_method(
            DEVICE,
            "sender",
            CloudToDeviceMethod(method_name="ping", payload={}, response_timeout_in_seconds=5),
        )
    assert offline.value.response.status_code == 404
    silent = module_client("sender")
    silent.on_method_request_received = lambda request: None
    silent.connect()
    with pytest.raises(HttpOperationError) as timeout:
        registry.invoke_device_module_method(
            DEVICE,
            "sender",
            CloudToDeviceMethod(method_name="ping", payload={}, response_timeout_in_seconds=5),
        )
    assert timeout.value.response.status_code == 504


def test_module_calls_another_modules_method(module_client: Factory) -> None:
    receiver = module_client("receiver")
    _echo_methods(receiver)
    receiver.connect()
    sender = module_client("sender", how="workload")
    sender.connect()
    result = sender.invoke_method(
        {"methodName": "status", "payload": [1, 2], "responseTimeoutInSeconds": 5},
        device_id=DEVICE,
        module_id="receiver",
    )
    assert result == {"status": 200, "payload": {"method": "status", "echo": [1, 2]}}


def test_twin_get_desired_patch_and_reported_patch(registry: IoTHubRegistryManager, module_client: Factory) -> None:
    receiver = module_client("receiver")
    patches = DesiredPatches(receiver)
    receiver.connect()
    twin = receiver.get_twin()
    assert twin["desired"]["labels"] == ["cat", "dog"]  # from modulesContent.receiver.properties.desired
    marker = str(uuid.uuid4())
    service_twin = registry.get_module_twin(DEVICE, "receiver")
    registry.update_module_twin(
        DEVICE, "receiver", Twin(properties=TwinProperties(desired={"marker": marker})), service_twin.etag
    )
    patch = patches.wait("marker", marker)
    assert patch["$version"] == service_twin.properties.desired["$version"] + 1
    with pytest.raises(HttpOperationError) as stale:  # the etag changed with the update
        registry.update_module_twin(
            DEVICE, "receiver", Twin(properties=TwinProperties(desired={"x": 1})), service_twin.etag
        )
    assert stale.value.response.status_code == 412
    receiver.patch_twin_reported_properties({"state": {"marker": marker}})
    reported = registry.get_module_twin(DEVICE, "receiver").properties.reported
    assert reported["state"] == {"marker": marker}


def test_wrong_key_is_refused(emulator: EmulatorProcess) -> None:
    env = emulator.env("sender")
    wrong = (
        env["EdgeHubConnectionString"].split("SharedAccessKey=")[0]
        + "SharedAccessKey="
        + "QUJD" * 11
        + ";GatewayHostName=localhost"
    )
    assert_key_refused(emulator, wrong)


def test_message_for_an_offline_module_waits_until_it_connects(
    emulator: EmulatorProcess, module_client: Factory
) -> None:
    sender = module_client("sender")
    sender.connect()
    message_id = str(uuid.uuid4())
    sender.send_message_to_output(Message("queued", message_id=message_id), "out1")
    sender.shutdown()
    status = json.loads(emulator.cli("invoke", DEVICE, "receiver", "ping", check=False).stdout or "null")
    assert status is None  # receiver is offline: the CLI reports the 404 as an error
    receiver = module_client("receiver")
    received = _listen(receiver)
    receiver.connect()
    got = wait_for(lambda: _by_id(received, message_id))
    assert got[0].data == b"queued" and got[0].input_name == "in1"


def test_client_survives_an_emulator_restart(
    emulator: EmulatorProcess, registry: IoTHubRegistryManager, module_client: Factory
) -> None:
    receiver = module_client("receiver")
    _echo_methods(receiver)
    patches = DesiredPatches(receiver)
    receiver.connect()
    emulator.stop()
    emulator.start()

    def method_works() -> Any:
        try:
            return registry.invoke_device_module_method(
                DEVICE,
                "receiver",
                CloudToDeviceMethod(method_name="after-restart", payload=None, response_timeout_in_seconds=5),
            )
        except HttpOperationError:
            return None

    result = wait_for(method_works, timeout=30, interval=0.5)
    assert result.payload["method"] == "after-restart"
    registry.update_module_twin(DEVICE, "receiver", Twin(properties=TwinProperties(desired={"after": "restart"})))
    patches.wait("after", "restart")
