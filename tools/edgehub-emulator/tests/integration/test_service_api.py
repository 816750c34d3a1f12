"""The service side through the unmodified IoTHubRegistryManager: module identities and module twins."""

from __future__ import annotations

import base64
import os
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest
from azure.iot.device import IoTHubModuleClient, MethodResponse
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import CloudToDeviceMethod, Twin, TwinProperties
from msrest.exceptions import HttpOperationError

from edgehub_emulator.identity import parse_connection_string

from .conftest import DesiredPatches, EmulatorProcess, assert_key_refused, call_service_api

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DEVICE = "edge-device"
Factory = Callable[..., IoTHubModuleClient]


def _random_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def _status(error: pytest.ExceptionInfo[HttpOperationError]) -> int:
    return int(error.value.response.status_code)


def test_create_module_with_sas_then_a_client_connects_with_its_key(
    emulator: EmulatorProcess, registry: IoTHubRegistryManager
) -> None:
    module_id = f"added-{uuid.uuid4().hex[:8]}"
    primary, secondary = _random_key(), _random_key()
    created = registry.create_module_with_sas(DEVICE, module_id, "edge-agent", primary, secondary)
    assert (created.device_id, created.module_id, created.managed_by) == (DEVICE, module_id, "edge-agent")
    assert created.authentication.symmetric_key.primary_key == primary
    assert created.authentication.symmetric_key.secondary_key == secondary

    fetched = registry.get_module(DEVICE, module_id)
    assert fetched.module_id == module_id and fetched.connection_state == "Disconnected"
    assert fetched.authentication.symmetric_key.primary_key == primary
    listed = {m.module_id: m for m in registry.get_modules(DEVICE)}
    assert {module_id, "sender", "receiver"} <= set(listed)
    assert listed[module_id].authentication.symmetric_key.secondary_key == secondary
    assert (
        listed["sender"].authentication.symmetric_key.primary_key
        == parse_connection_string(emulator.env("sender")["EdgeHubConnectionString"])["SharedAccessKey"]
    )

    ca = Path(emulator.env("sender")["REQUESTS_CA_BUNDLE"]).read_text(encoding="utf-8")
    for key in (primary, secondary):  # either key of the new identity authenticates
        client = IoTHubModuleClient.create_from_connection_string(
            f"HostName=localhost;DeviceId={DEVICE};ModuleId={module_id};SharedAccessKey={key};"
            "GatewayHostName=localhost",
            server_verification_cert=ca,
            connection_retry=False,
        )
        try:
            client.on_method_request_received = lambda r, c=client: c.send_method_response(
                MethodResponse.create_from_method_request(r, 200, {"module": module_id})
            )
            client.connect()
            desired = client.get_twin()["desired"]
            assert [k for k in desired if k != "$version"] == []  # a new identity has an empty twin
            assert registry.get_module(DEVICE, module_id).connection_state == "Connected"
            result = registry.invoke_device_module_method(
                DEVICE, module_id, CloudToDeviceMethod(method_name="hi", response_timeout_in_seconds=5)
            )
            assert (result.status, result.payload) == (200, {"module": module_id})
        finally:
            client.shutdown()
    # a random key does not open the new identity
    assert_key_refused(
        emulator,
        f"HostName=localhost;DeviceId={DEVICE};ModuleId={module_id};SharedAccessKey={_random_key()};"
        "GatewayHostName=localhost",
    )


def test_get_unknown_module_is_404(registry: IoTHubRegistryManager) -> None:
    with pytest.raises(HttpOperationError) as error:
        registry.get_module(DEVICE, "no-such-module")
    assert _status(error) == 404
    with pytest.raises(HttpOperationError) as error:
        registry.get_modules("no-such-device")
    assert _status(error) == 404


def test_module_create_conflicts_and_updates_need_a_matching_etag(registry: IoTHubRegistryManager) -> None:
    module_id = f"keys-{uuid.uuid4().hex[:8]}"
    first = (_random_key(), _random_key())
    created = registry.create_module_with_sas(DEVICE, module_id, "edge-agent", *first)
    with pytest.raises(HttpOperationError) as error:  # a create never overwrites an existing identity
        registry.create_module_with_sas(DEVICE, module_id, "edge-agent", _random_key(), _random_key())
    assert _status(error) == 409
    assert registry.get_module(DEVICE, module_id).authentication.symmetric_key.primary_key == first[0]

    second = (_random_key(), _random_key())
    updated = registry.update_module_with_sas(DEVICE, module_id, "edge-agent", created.etag, *second)
    assert updated.authentication.symmetric_key.primary_key == second[0] and updated.etag != created.etag
    with pytest.raises(HttpOperationError) as error:  # the old etag is stale now
        registry.update_module_with_sas(DEVICE, module_id, "edge-agent", created.etag, *first)
    assert _status(error) == 412
    forced = registry.update_module_with_sas(DEVICE, module_id, None, None, *first)  # no etag: If-Match "*"
    assert forced.authentication.symmetric_key.primary_key == first[0] and forced.managed_by is None
    with pytest.raises(HttpOperationError) as error:
        registry.create_module_with_sas("no-such-device", module_id, None, *first)
    assert _status(error) == 404


def test_replace_and_update_twin_with_etags_reach_the_module(
    registry: IoTHubRegistryManager, module_client: Factory
) -> None:
    sender = module_client("sender")
    patches = DesiredPatches(sender)
    sender.connect()
    start = registry.get_module_twin(DEVICE, "sender")

    marker = str(uuid.uuid4())
    replaced = registry.replace_module_twin(
        DEVICE,
        "sender",
        Twin(properties=TwinProperties(desired={"mode": "replaced", "marker": marker, "keep": 1})),
        start.etag,
    )
    assert replaced.etag != start.etag
    assert replaced.properties.desired["marker"] == marker
    first = patches.wait("marker", marker)
    assert first["mode"] == "replaced" and first["$version"] > start.properties.desired["$version"]

    with pytest.raises(HttpOperationError) as stale:
        registry.replace_module_twin(
            DEVICE, "sender", Twin(properties=TwinProperties(desired={"stale": True})), start.etag
        )
    assert _status(stale) == 412
    with pytest.raises(HttpOperationError) as stale:
        registry.update_module_twin(
            DEVICE, "sender", Twin(properties=TwinProperties(desired={"stale": True})), start.etag
        )
    assert _status(stale) == 412

    updated = registry.update_module_twin(
        DEVICE, "sender", Twin(properties=TwinProperties(desired={"mode": "updated"})), replaced.etag
    )
    assert updated.etag not in (start.etag, replaced.etag)
    second = patches.wait("mode", "updated")
    assert second["$version"] > first["$version"]

    # a replace drops what the new document leaves out; the module sees the same twin as the service
    marker2 = str(uuid.uuid4())
    registry.replace_module_twin(
        DEVICE, "sender", Twin(properties=TwinProperties(desired={"marker": marker2})), updated.etag
    )
    third = patches.wait("marker", marker2)
    assert third["$version"] > second["$version"]
    desired = sender.get_twin()["desired"]
    assert {k: v for k, v in desired.items() if k != "$version"} == {"marker": marker2}
    assert desired["$version"] == third["$version"]
    assert not [p for p in patches.received if p.get("stale")]  # the refused changes never reached the module
    assert registry.get_module_twin(DEVICE, "sender").properties.desired == desired


def test_method_request_that_is_not_json_or_not_an_object_is_400(
    emulator: EmulatorProcess, registry: IoTHubRegistryManager, module_client: Factory
) -> None:
    receiver = module_client("receiver")
    receiver.on_method_request_received = lambda r: receiver.send_method_response(
        MethodResponse.create_from_method_request(r, 200, r.payload)
    )
    receiver.connect()
    for body, message in (
        (b'{"methodName": "m", "payload": nope}', "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b'["m"]', "non-empty 'methodName'"),
        (b'{"payload": 1}', "non-empty 'methodName'"),
    ):
        response = call_service_api(emulator, "POST", f"/twins/{DEVICE}/modules/receiver/methods", body)
        assert response.status_code == 400, body
        assert message in response.json()["Message"], response.text
    result = registry.invoke_device_module_method(
        DEVICE, "receiver", CloudToDeviceMethod(method_name="m", payload={"ok": 1}, response_timeout_in_seconds=5)
    )
    assert (result.status, result.payload) == (200, {"ok": 1})


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as a module applies desired patches to its copy of the twin."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


def test_desired_patches_turn_the_modules_copy_into_the_service_twin(
    registry: IoTHubRegistryManager, module_client: Factory
) -> None:
    """Whatever the service does (merge or replace, nested objects included), a module that applies each
    desired patch to the twin it read ends with the desired properties the service sees."""
    sender = module_client("sender")
    patches = DesiredPatches(sender)
    sender.connect()
    local = sender.get_twin()["desired"]
    etag = registry.get_module_twin(DEVICE, "sender").etag
    steps: list[tuple[str, dict[str, Any]]] = [
        ("update", {"cfg": {"x": 1, "y": {"deep": 2, "keep": 3}}, "top": "a"}),
        ("replace", {"cfg": {"x": 1, "y": {"keep": 3}}, "new": True}),  # drops cfg.y.deep and top
        ("update", {"cfg": {"y": None, "z": [1]}}),
        ("replace", {"cfg": {}}),
    ]
    for action, desired in steps:
        call = registry.update_module_twin if action == "update" else registry.replace_module_twin
        twin = call(DEVICE, "sender", Twin(properties=TwinProperties(desired=desired)), etag)
        etag = twin.etag
        version = twin.properties.desired["$version"]
        patches.wait("$version", version)
    for patch in sorted(patches.received, key=lambda p: p["$version"]):
        local = _merge(local, patch)
    service = registry.get_module_twin(DEVICE, "sender").properties.desired
    assert local == service == sender.get_twin()["desired"]
    assert service == {"cfg": {}, "$version": service["$version"]}
