"""Device registry, device twins with tags and IoT Edge deployments through the unmodified azure-iot-hub SDK:
selection by target condition and priority, layered deployments, retargeting, system metrics, persistence and the
errors a hub gives."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from azure.iot.hub import IoTHubConfigurationManager, IoTHubRegistryManager
from azure.iot.hub.models import Configuration, ConfigurationContent, QuerySpecification, Twin
from msrest.exceptions import HttpOperationError

from edgehub_emulator.identity import parse_connection_string
from edgehub_emulator.process import EmulatorProcess

from .conftest import emulator_process, service_token

FLEET = {"lobby": "lobby", "garage": "garage", "attic": "attic"}


def base_content(*modules: str, env: str = "one", routes: dict[str, str] | None = None) -> dict[str, Any]:
    """A base deployment's modulesContent running `modules` (all with GREETING=env)."""
    return {
        "$edgeAgent": {
            "properties.desired": {
                "schemaVersion": "1.1",
                "runtime": {"type": "docker", "settings": {}},
                "systemModules": {},
                "modules": {
                    name: {
                        "version": "1.0",
                        "type": "docker",
                        "status": "running",
                        "restartPolicy": "always",
                        "settings": {"image": f"example.azurecr.io/{name}:1.0", "createOptions": "{}"},
                        "env": {"GREETING": {"value": env}},
                    }
                    for name in modules
                },
            }
        },
        "$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": routes or {}}},
    }


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    """An emulator without module processes; the fleet's devices are made through the SDK."""
    with emulator_process(tmp_path_factory.mktemp("deployments")) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def clients(hub: EmulatorProcess) -> tuple[IoTHubRegistryManager, IoTHubConfigurationManager]:
    """Registry and configuration managers with the emulator's CA trusted; three tagged edge devices."""
    env = hub.service_env("receiver")
    os.environ["REQUESTS_CA_BUNDLE"] = env["REQUESTS_CA_BUNDLE"]
    registry = IoTHubRegistryManager.from_connection_string(env["IOTHUB_CONNECTION_STRING"])
    configs = IoTHubConfigurationManager.from_connection_string(env["IOTHUB_CONNECTION_STRING"])
    for device, site in FLEET.items():
        registry.create_device_with_sas(device, None, None, "enabled", iot_edge=True)
        registry.update_twin(device, Twin(tags={"site": site, "ring": "test" if device != "attic" else "prod"}), "*")
    return registry, configs


def agent_desired(registry: IoTHubRegistryManager, device: str) -> dict[str, Any]:
    """The `$edgeAgent` desired properties of a device."""
    return registry.get_module_twin(device, "$edgeAgent").properties.desired


def deploy(configs: IoTHubConfigurationManager, config_id: str, content: dict[str, Any], **fields: Any) -> Any:
    """create_configuration with modulesContent."""
    return configs.create_configuration(
        Configuration(id=config_id, content=ConfigurationContent(modules_content=content), **fields)
    )


def test_registry_creates_edge_devices_with_system_modules(clients: Any) -> None:
    registry, _ = clients
    device = registry.get_device("lobby")
    assert device.capabilities.iot_edge is True
    assert {m.module_id for m in registry.get_modules("lobby")} >= {"$edgeAgent", "$edgeHub"}
    assert {"lobby", "garage", "attic"} <= {d.device_id for d in registry.get_devices()}
    assert registry.get_twin("garage").tags == {"site": "garage", "ring": "test"}
    with pytest.raises(HttpOperationError) as error:
        registry.create_device_with_sas("lobby", None, None, "enabled", iot_edge=True)
    assert error.value.response.status_code == 409


def test_at_scale_deployment_targets_by_tag_and_reports_metrics(clients: Any) -> None:
    registry, configs = clients
    created = deploy(
        configs,
        "test-ring",
        base_content("echo"),
        target_condition="tags.ring='test'",
        priority=10,
        labels={"owner": "tests"},
        metrics={"queries": {"lobbyOnly": "SELECT deviceId FROM devices WHERE tags.site = 'lobby'"}},
    )
    assert created.etag and created.created_time_utc
    for device in ("lobby", "garage"):
        assert set(agent_desired(registry, device)["modules"]) == {"echo"}
    assert "echo" not in agent_desired(registry, "attic").get("modules", {})
    got = configs.get_configuration("test-ring")
    assert got.system_metrics.results == {
        "targetedCount": 2,
        "appliedCount": 2,
        "reportedSuccessfulCount": 0,
        "reportedFailedCount": 0,
    }
    assert got.metrics.results == {"lobbyOnly": 1}
    assert got.labels == {"owner": "tests"}
    # The edge agent's report makes a device count as successful (or failed), as on a hub.
    version = agent_desired(registry, "lobby")["$version"]
    hub_patch(clients, "lobby", {"lastDesiredVersion": version, "lastDesiredStatus": {"code": 200}})
    hub_patch(
        clients,
        "garage",
        {"lastDesiredVersion": agent_desired(registry, "garage")["$version"], "lastDesiredStatus": {"code": 500}},
    )
    results = configs.get_configuration("test-ring").system_metrics.results
    assert (results["reportedSuccessfulCount"], results["reportedFailedCount"]) == (1, 1)
    assert "test-ring" in {c.id for c in configs.get_configurations()}


def hub_patch(clients: Any, device: str, reported: dict[str, Any]) -> None:
    """Report `$edgeAgent` properties of a device as its agent would (through the device SDK's MQTT path)."""
    # pylint: disable=import-outside-toplevel
    from azure.iot.device import IoTHubModuleClient

    registry, _ = clients
    module = registry.get_module(device, "$edgeAgent")
    hostname = registry.protocol.config.base_url.split("//")[1].split(":")[0]
    connection = (
        f"HostName={hostname};DeviceId={device};ModuleId=$edgeAgent;"
        f"SharedAccessKey={module.authentication.symmetric_key.primary_key};GatewayHostName={hostname}"
    )
    ca = Path(os.environ["REQUESTS_CA_BUNDLE"]).read_text(encoding="utf-8")
    client = IoTHubModuleClient.create_from_connection_string(connection, server_verification_cert=ca)
    try:
        client.connect()
        client.patch_twin_reported_properties(reported)
    finally:
        client.shutdown()


def test_higher_priority_wins_and_layers_merge_on_top(clients: Any) -> None:
    registry, configs = clients
    deploy(
        configs,
        "lobby-special",
        base_content("echo", "flaky", env="two"),
        target_condition="tags.site='lobby'",
        priority=20,
    )
    layer = {
        "$edgeAgent": {
            "properties.desired.modules.flaky": base_content("flaky", env="layered")["$edgeAgent"][
                "properties.desired"
            ]["modules"]["flaky"]
        },
        "$edgeHub": {"properties.desired.routes.layerRoute": "FROM /messages/modules/echo/* INTO $upstream"},
        "echo": {"properties.desired.layer": {"on": True}},
    }
    deploy(configs, "layer-1", layer, target_condition="tags.site='lobby' OR tags.site='garage'", priority=5)
    lobby = agent_desired(registry, "lobby")
    assert lobby["modules"]["echo"]["env"]["GREETING"]["value"] == "two"  # priority 20 beat 10
    assert lobby["modules"]["flaky"]["env"]["GREETING"]["value"] == "layered"  # the layer on top
    garage = agent_desired(registry, "garage")
    assert set(garage["modules"]) == {"echo", "flaky"}  # base test-ring plus the layer's module
    routes = registry.get_module_twin("garage", "$edgeHub").properties.desired["routes"]
    assert routes == {"layerRoute": "FROM /messages/modules/echo/* INTO $upstream"}
    assert registry.get_module_twin("garage", "echo").properties.desired["layer"] == {"on": True}
    # The lower-priority base is targeted but not applied on lobby.
    assert configs.get_configuration("test-ring").system_metrics.results["appliedCount"] == 1
    assert configs.get_configuration("layer-1").system_metrics.results["appliedCount"] == 2


def test_equal_priority_the_most_recent_wins(clients: Any) -> None:
    registry, configs = clients
    deploy(configs, "attic-a", base_content("done"), target_condition="tags.site='attic'", priority=1)
    deploy(configs, "attic-b", base_content("oneshot"), target_condition="tags.site='attic'", priority=1)
    assert set(agent_desired(registry, "attic")["modules"]) == {"oneshot"}


def test_a_tag_change_retargets_the_device(clients: Any) -> None:
    registry, configs = clients
    registry.update_twin("attic", Twin(tags={"ring": "test"}), "*")
    # attic-a/b (priority 1) lose to test-ring (10); the layer needs site lobby or garage.
    assert set(agent_desired(registry, "attic")["modules"]) == {"echo"}
    assert configs.get_configuration("test-ring").system_metrics.results["targetedCount"] == 3
    registry.update_twin("attic", Twin(tags={"ring": "prod"}), "*")
    assert set(agent_desired(registry, "attic")["modules"]) == {"oneshot"}


def test_deleting_a_deployment_falls_back_to_the_next(clients: Any) -> None:
    registry, configs = clients
    configs.delete_configuration("attic-b")
    assert set(agent_desired(registry, "attic")["modules"]) == {"done"}
    with pytest.raises(HttpOperationError) as error:
        configs.get_configuration("attic-b")
    assert error.value.response.status_code == 404


def test_a_device_no_deployment_targets_keeps_what_it_has(clients: Any) -> None:
    registry, configs = clients
    registry.update_twin("attic", Twin(tags={"site": "nowhere", "ring": "none"}), "*")
    assert set(agent_desired(registry, "attic")["modules"]) == {"done"}
    registry.update_twin("attic", Twin(tags={"floor": 3}), "*")  # evaluated again: still nothing matches
    assert set(agent_desired(registry, "attic")["modules"]) == {"done"}
    assert configs.get_configuration("attic-a").system_metrics.results["targetedCount"] == 0
    registry.update_twin("attic", Twin(tags={"site": "attic", "ring": "prod"}), "*")
    assert configs.get_configuration("attic-a").system_metrics.results["appliedCount"] == 1


def test_single_device_deployment(clients: Any) -> None:
    registry, configs = clients
    registry.create_device_with_sas("bench", None, None, "enabled", iot_edge=True)
    configs.apply_configuration_on_edge_device(
        "bench", ConfigurationContent(modules_content=base_content("echo", env="single"))
    )
    assert agent_desired(registry, "bench")["modules"]["echo"]["env"]["GREETING"]["value"] == "single"
    # A device that automatic deployments target takes no single-device deployment.
    with pytest.raises(HttpOperationError) as error:
        configs.apply_configuration_on_edge_device("lobby", ConfigurationContent(modules_content=base_content("x")))
    assert error.value.response.status_code == 409
    assert "lobby-special" in error.value.response.text


def test_update_changes_priority_but_not_content(clients: Any) -> None:
    registry, configs = clients
    current = configs.get_configuration("test-ring")
    current.priority = 30
    updated = configs.update_configuration(current, current.etag)
    assert updated.priority == 30 and updated.etag != current.etag
    assert agent_desired(registry, "lobby")["modules"]["echo"]["env"]["GREETING"]["value"] == "one"
    updated.content = ConfigurationContent(modules_content=base_content("other"))
    with pytest.raises(HttpOperationError) as error:
        configs.update_configuration(updated, updated.etag)
    assert error.value.response.status_code == 400 and "cannot change" in error.value.response.text
    with pytest.raises(HttpOperationError) as error:
        configs.update_configuration(updated, "stale-etag")
    assert error.value.response.status_code == 412


BAD_DEPLOYMENTS = [
    ("no modulesContent", {}, "modulesContent"),
    (
        "layered sets a system section whole",
        {"$edgeHub": {"properties.desired.schemaVersion": "1.1"}},
        "layered deployment may set only",
    ),
    ("base without $edgeHub", {"$edgeAgent": base_content()["$edgeAgent"]}, "$edgeHub"),
]


@pytest.mark.parametrize(("case", "content", "expected"), BAD_DEPLOYMENTS, ids=[c[0] for c in BAD_DEPLOYMENTS])
def test_bad_deployments_are_refused(clients: Any, case: str, content: dict[str, Any], expected: str) -> None:
    _, configs = clients
    with pytest.raises(HttpOperationError) as error:
        deploy(configs, "bad", content, target_condition="tags.site='lobby'")
    assert error.value.response.status_code == 400, case
    assert expected in error.value.response.json()["Message"]


BAD_QUERIES = [
    ("SELECT COUNT() FROM devices", "not supported"),
    ("SELECT * FROM jobs", "FROM jobs is not supported"),
    ("SELECT * FROM devices WHERE IS_DEFINED(tags.x)", "functions"),
    ("SELECT * FROM devices WHERE tags.x = ", "expected"),
]


@pytest.mark.parametrize(("query", "expected"), BAD_QUERIES)
def test_unsupported_queries_are_a_clear_400(clients: Any, query: str, expected: str) -> None:
    registry, _ = clients
    with pytest.raises(HttpOperationError) as error:
        registry.query_iot_hub(QuerySpecification(query=query))
    assert error.value.response.status_code == 400
    assert expected in error.value.response.json()["Message"]


def test_query_with_and_or_not(clients: Any) -> None:
    registry, _ = clients
    result = registry.query_iot_hub(
        QuerySpecification(
            query="SELECT * FROM devices WHERE (tags.site = 'lobby' OR tags.site = 'garage') "
            "AND NOT deviceId = 'garage'"
        )
    )
    assert [twin.device_id for twin in result.items] == ["lobby"]


def test_unknown_device_is_404(clients: Any) -> None:
    registry, configs = clients
    with pytest.raises(HttpOperationError) as error:
        configs.apply_configuration_on_edge_device("nowhere", ConfigurationContent(modules_content=base_content()))
    assert error.value.response.status_code == 404
    with pytest.raises(HttpOperationError):
        registry.get_twin("nowhere")


def test_everything_survives_a_restart(hub: EmulatorProcess, clients: Any) -> None:
    registry, configs = clients
    before = {device: agent_desired(registry, device) for device in ("lobby", "garage", "attic", "bench")}
    hub.restart()
    assert {device: agent_desired(registry, device) for device in before} == before
    assert {c.id for c in configs.get_configurations()} >= {"test-ring", "lobby-special", "layer-1", "attic-a"}
    assert registry.get_twin("lobby").tags["site"] == "lobby"
    assert configs.get_configuration("layer-1").priority == 5
    assert configs.get_configuration("test-ring").priority == 30


def test_deleting_a_device_removes_its_twins(clients: Any) -> None:
    registry, _ = clients
    registry.delete_device("bench")
    with pytest.raises(HttpOperationError) as error:
        registry.get_device("bench")
    assert error.value.response.status_code == 404
    with pytest.raises(HttpOperationError):
        registry.get_module_twin("bench", "$edgeAgent")
    assert "bench" not in {d.device_id for d in registry.get_devices()}


@pytest.mark.parametrize("api_version", ["2020-03-13", "2020-09-30", "2021-04-12", "2024-03-31"])
def test_other_api_versions_are_served_alike(hub: EmulatorProcess, clients: Any, api_version: str) -> None:
    """The SDKs send api-versions from 2020-03-01 to 2024-03-31 (the Python SDK 2021-04-12): raw requests with
    others get the same answers."""
    registry, _ = clients
    env = hub.service_env("receiver")
    host = parse_connection_string(env["IOTHUB_CONNECTION_STRING"])["HostName"]
    config_id = f"api-{api_version}"
    device = f"api-device-{api_version}"
    registry.create_device_with_sas(device, None, None, "enabled", iot_edge=True)
    token = service_token(hub)

    def call(method: str, path: str, body: Any = None, **headers: str) -> requests.Response:
        return requests.request(
            method,
            f"https://{host}{path}?api-version={api_version}",
            data=None if body is None else json.dumps(body),
            headers={"Authorization": token, "Content-Type": "application/json", **headers},
            verify=env["REQUESTS_CA_BUNDLE"],
            timeout=10,
        )

    created = call(
        "PUT",
        f"/configurations/{config_id}",
        {"id": config_id, "content": {"modulesContent": base_content("echo")}, "targetCondition": "tags.site='none'"},
    )
    assert created.status_code in (200, 201), created.text
    fetched = call("GET", f"/configurations/{config_id}")
    assert fetched.status_code == 200 and fetched.json()["id"] == config_id
    assert fetched.json()["systemMetrics"]["results"]["targetedCount"] == 0
    applied = call(
        "POST",
        f"/devices/{device}/applyConfigurationContent",
        {"modulesContent": base_content("echo", env=api_version)},
    )
    assert applied.status_code == 204, applied.text
    twin = call("GET", f"/twins/{device}/modules/$edgeAgent")
    assert twin.status_code == 200, twin.text
    assert twin.json()["properties"]["desired"]["modules"]["echo"]["env"]["GREETING"]["value"] == api_version
    deleted = call("DELETE", f"/configurations/{config_id}", **{"If-Match": "*"})
    assert deleted.status_code == 204, deleted.text
