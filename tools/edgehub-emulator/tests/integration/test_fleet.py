"""A local fleet under `edgehub-emulator up --fleet`: each device's agent reconciles its modules when deployments
change, through the unmodified azure-iot-hub SDK: added start, removed stop, changed restart, the rest keep their
processes; reported `$edgeAgent` properties feed the deployment's metrics; ports are mapped per device."""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator

import pytest
from azure.iot.hub import IoTHubConfigurationManager, IoTHubRegistryManager
from azure.iot.hub.models import CloudToDeviceMethod, Configuration, ConfigurationContent, Twin

from .conftest import UpProcess, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
START = re.compile(r"^start pid (\d+) device (\S+) module (\S+) greeting (\S+) port (\S+)$")
DEVICES = ("lobby", "garage", "attic")


class FleetUp(UpProcess):
    """`edgehub-emulator up fleet.template.json --fleet fleet.json` with a short restart back-off."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.manifest = self.solution / "fleet.template.json"
        self.up_args = ["--fleet", str(self.solution / "fleet.json"), "--backoff-unit", "0.5"]

    def starts(self, device: str, module: str) -> list[tuple[int, str, str]]:
        """(pid, greeting, port) of each start of a module on a device, in order."""
        found = []
        for line in self.lines_of(f"{device}/{module}"):
            match = START.match(line)
            if match:
                found.append((int(match[1]), match[4], match[5]))
        return found

    def lines_of(self, prefix: str) -> list[str]:
        """Output lines of `device/module`."""
        return [
            line.split(" | ", 1)[1]
            for line in self.stdout().splitlines()
            if " | " in line and line.split(" | ", 1)[0].strip() == prefix
        ]


def alive(pid: int) -> bool:
    """The process exists and is no zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetUp]:
    """Three devices running the fleet manifest."""
    proc = FleetUp(tmp_path_factory.mktemp("fleet"))
    proc.start()
    yield proc
    if proc.process and proc.process.poll() is None:
        proc.process.terminate()
        proc.process.wait(60)
    proc.kill_leftovers()


@pytest.fixture(scope="module")
def service(fleet: FleetUp) -> tuple[IoTHubRegistryManager, IoTHubConfigurationManager]:
    """The service SDK clients of the fleet's hub."""
    env = json.loads(fleet.cli("env", "steady", "--format", "json").stdout)
    os.environ["REQUESTS_CA_BUNDLE"] = env["REQUESTS_CA_BUNDLE"]
    return (
        IoTHubRegistryManager.from_connection_string(env["IOTHUB_CONNECTION_STRING"]),
        IoTHubConfigurationManager.from_connection_string(env["IOTHUB_CONNECTION_STRING"]),
    )


def manifest_content(fleet: FleetUp) -> dict[str, Any]:
    """The fleet manifest's modulesContent."""
    return json.loads(fleet.manifest.read_text(encoding="utf-8"))["modulesContent"]


def reported(registry: IoTHubRegistryManager, device: str) -> dict[str, Any]:
    """`$edgeAgent` reported properties of a device."""
    return registry.get_module_twin(device, "$edgeAgent").properties.reported


def test_each_device_runs_its_modules_with_its_identity_and_ports(fleet: FleetUp, service: Any) -> None:
    registry, _ = service
    for index, device in enumerate(DEVICES):
        wait_for(lambda d=device: fleet.starts(d, "steady") and fleet.starts(d, "worker"), 60)
        pid, greeting, port = fleet.starts(device, "steady")[0]
        assert greeting == "steady" and port == str(9080 + 100 * index)
        assert alive(pid)
    assert "DEVICE garage: steady 80/tcp->9180" in fleet.stdout()  # the banner
    status = json.loads(fleet.cli("status").stdout)
    assert status["devices"]["garage"]["ports"]["steady"] == {"80/tcp": 9180}
    assert status["devices"]["attic"]["tags"] == {"site": "attic"}
    # Each device's echo answers as its own identity.
    wait_for(lambda: any(line.startswith("ready pid ") for line in fleet.lines_of("garage/echo")), 60)
    answer = registry.invoke_device_module_method(
        "garage", "echo", CloudToDeviceMethod(method_name="echo", payload={"device": "garage"})
    )
    assert answer.payload == {"device": "garage"}
    # The agents report what runs, as IoT Edge's agent does.
    wait_for(lambda: reported(registry, "lobby").get("modules", {}).get("worker", {}).get("runtimeStatus") == "running")
    lobby = reported(registry, "lobby")
    assert lobby["lastDesiredStatus"]["code"] == 200
    assert lobby["lastDesiredVersion"] == registry.get_module_twin("lobby", "$edgeAgent").properties.desired["$version"]
    assert lobby["modules"]["steady"]["lastStartTimeUtc"] and lobby["modules"]["steady"]["restartCount"] == 0


def test_at_scale_deployment_restarts_only_what_changed(fleet: FleetUp, service: Any) -> None:
    registry, configs = service
    before = {device: {m: fleet.starts(device, m)[-1][0] for m in ("steady", "worker", "victim")} for device in DEVICES}
    content = copy.deepcopy(manifest_content(fleet))
    modules = content["$edgeAgent"]["properties.desired"]["modules"]
    modules["worker"]["env"]["GREETING"]["value"] = "second"
    modules["extra"] = copy.deepcopy(modules["worker"])
    modules["extra"]["env"]["GREETING"]["value"] = "extra"
    del modules["victim"]
    configs.create_configuration(
        Configuration(
            id="two-sites",
            content=ConfigurationContent(modules_content=content),
            target_condition="tags.site='lobby' OR tags.site='garage'",
            priority=10,
        )
    )
    wait_for(lambda: configs.get_configuration("two-sites").system_metrics.results["reportedSuccessfulCount"] == 2, 60)
    metrics = configs.get_configuration("two-sites").system_metrics.results
    assert metrics == {"targetedCount": 2, "appliedCount": 2, "reportedSuccessfulCount": 2, "reportedFailedCount": 0}
    for device in ("lobby", "garage"):
        wait_for(lambda d=device: fleet.starts(d, "extra") and fleet.starts(d, "worker")[-1][1] == "second", 60)
        assert fleet.starts(device, "steady")[-1][0] == before[device]["steady"]  # untouched: same process
        assert alive(before[device]["steady"])
        assert not alive(before[device]["worker"]) and not alive(before[device]["victim"])
        assert "victim" not in reported(registry, device)["modules"]
    # attic is not targeted: everything it ran still runs, the same processes.
    assert all(alive(pid) for pid in before["attic"].values())
    assert {m: fleet.starts("attic", m)[-1][0] for m in before["attic"]} == before["attic"]


def test_layered_deployment_adds_env_and_a_route_on_top(fleet: FleetUp, service: Any) -> None:
    registry, configs = service
    wait_for(lambda: fleet.starts("lobby", "extra"), 60)
    steady, extra = fleet.starts("lobby", "steady")[-1][0], fleet.starts("lobby", "extra")[-1][0]
    garage_extra = fleet.starts("garage", "extra")[-1][0]
    extra_module = copy.deepcopy(manifest_content(fleet)["$edgeAgent"]["properties.desired"]["modules"]["worker"])
    extra_module["env"]["GREETING"]["value"] = "layered"
    layer = {
        "$edgeAgent": {"properties.desired.modules.extra": extra_module},
        "$edgeHub": {"properties.desired.routes.fromExtra": "FROM /messages/modules/extra/* INTO $upstream"},
    }
    configs.create_configuration(
        Configuration(
            id="lobby-layer",
            content=ConfigurationContent(modules_content=layer),
            target_condition="tags.site='lobby'",
            priority=1,
        )
    )
    wait_for(lambda: fleet.starts("lobby", "extra")[-1][1] == "layered", 60)
    routes = registry.get_module_twin("lobby", "$edgeHub").properties.desired["routes"]
    assert set(routes) == {"toCloud", "fromExtra"}
    assert fleet.starts("lobby", "steady")[-1][0] == steady and alive(steady)  # a route change restarts nothing
    assert not alive(extra)
    assert fleet.starts("garage", "extra")[-1][0] == garage_extra  # the layer targets lobby only
    wait_for(
        lambda: configs.get_configuration("lobby-layer").system_metrics.results["reportedSuccessfulCount"] == 1, 60
    )


def test_retargeting_and_single_device_changes_with_restart_policy(fleet: FleetUp, service: Any) -> None:
    registry, configs = service
    attic_steady = fleet.starts("attic", "steady")[-1][0]
    content = copy.deepcopy(manifest_content(fleet))
    modules = content["$edgeAgent"]["properties.desired"]["modules"]
    modules["worker"]["status"] = "stopped"
    modules["crashy"] = {
        "version": "1.0",
        "type": "docker",
        "status": "running",
        "restartPolicy": "on-failure",
        "settings": {"image": "${MODULES.crashy}"},
        "env": {"EXIT_CODE": {"value": "3"}},
    }
    configs.apply_configuration_on_edge_device("attic", ConfigurationContent(modules_content=content))
    wait_for(lambda: reported(registry, "attic")["modules"].get("crashy", {}).get("restartCount", 0) >= 2, 60)
    crashy = reported(registry, "attic")["modules"]["crashy"]
    assert crashy["exitCode"] == 3 and crashy["lastExitTimeUtc"]
    assert crashy["runtimeStatus"] in ("backoff", "running")
    wait_for(lambda: reported(registry, "attic")["modules"]["worker"]["runtimeStatus"] == "stopped", 30)
    assert fleet.starts("attic", "steady")[-1][0] == attic_steady and alive(attic_steady)
    # Retarget: attic takes the site tag of the two-site deployment and gets its modules.
    registry.update_twin("attic", Twin(tags={"site": "garage"}), "*")
    wait_for(lambda: fleet.starts("attic", "extra"), 60)
    wait_for(lambda: configs.get_configuration("two-sites").system_metrics.results["reportedSuccessfulCount"] == 3, 60)
    wait_for(lambda: "crashy" not in reported(registry, "attic")["modules"], 30)


def test_a_priority_conflict_runs_the_winners_modules_and_deleting_it_falls_back(fleet: FleetUp, service: Any) -> None:
    registry, configs = service
    # two-sites (priority 10) targets all three now (attic carries site=garage); garage-first (20) targets garage
    # and attic with the manifest's modules and another greeting for worker.
    wait_for(lambda: fleet.starts("attic", "extra") and fleet.starts("garage", "extra"), 60)
    steady = {device: fleet.starts(device, "steady")[-1][0] for device in DEVICES}
    extra = {device: fleet.starts(device, "extra")[-1][0] for device in DEVICES}
    content = copy.deepcopy(manifest_content(fleet))
    content["$edgeAgent"]["properties.desired"]["modules"]["worker"]["env"]["GREETING"]["value"] = "priority"
    configs.create_configuration(
        Configuration(
            id="garage-first",
            content=ConfigurationContent(modules_content=content),
            target_condition="tags.site='garage'",
            priority=20,
        )
    )
    for device in ("garage", "attic"):
        wait_for(lambda d=device: fleet.starts(d, "worker")[-1][1] == "priority", 60)
        wait_for(lambda d=device: not alive(extra[d]), 30)  # the loser's module stops
        assert fleet.starts(device, "steady")[-1][0] == steady[device] and alive(steady[device])
    wait_for(lambda: configs.get_configuration("garage-first").system_metrics.results["reportedSuccessfulCount"] == 2)
    two_sites = configs.get_configuration("two-sites").system_metrics.results
    assert two_sites["targetedCount"] == 3 and two_sites["appliedCount"] == 1  # targeted, but lost on two devices
    assert fleet.starts("lobby", "extra")[-1][0] == extra["lobby"] and alive(extra["lobby"])  # lobby: not targeted
    assert reported(registry, "garage")["lastDesiredStatus"]["code"] == 200
    # Deleting the winner falls back to the next deployment: extra runs again on garage.
    configs.delete_configuration("garage-first")
    wait_for(lambda: fleet.starts("garage", "extra")[-1][0] != extra["garage"], 60)
    wait_for(lambda: configs.get_configuration("two-sites").system_metrics.results["appliedCount"] == 3, 60)


def test_status_shows_the_ports_a_deployment_added(fleet: FleetUp, service: Any) -> None:
    """`status` maps the modules each device's `$edgeAgent` desires now, not the ones `up` started with."""
    registry, configs = service
    web = copy.deepcopy(manifest_content(fleet)["$edgeAgent"]["properties.desired"]["modules"]["steady"])
    web["settings"]["createOptions"] = {"HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": "9500"}]}}}
    web["env"]["GREETING"]["value"] = "web"
    configs.create_configuration(
        Configuration(
            id="web-layer",
            content=ConfigurationContent(modules_content={"$edgeAgent": {"properties.desired.modules.web": web}}),
            target_condition="tags.site='garage'",  # garage and attic (which carries site=garage now)
            priority=30,
        )
    )
    wait_for(lambda: fleet.starts("garage", "web") and fleet.starts("attic", "web"), 60)
    assert fleet.starts("garage", "web")[-1][2] == "9600"  # the process serves where status says
    assert fleet.starts("attic", "web")[-1][2] == "9700"
    status = json.loads(fleet.cli("status").stdout)["devices"]
    assert status["garage"]["ports"]["web"] == {"80/tcp": 9600}
    assert status["attic"]["ports"]["web"] == {"80/tcp": 9700}
    assert status["garage"]["ports"]["steady"] == {"80/tcp": 9180}  # the others as before
    assert "web" not in status["lobby"]["ports"]
    wait_for(lambda: "web" in reported(registry, "garage").get("modules", {}), 30)
