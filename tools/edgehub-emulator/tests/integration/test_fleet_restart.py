"""A fleet's tags across a restart of `edgehub-emulator up --fleet`: a tag set through the service SDK survives
it (the fleet file's tags are set when a device is created, and again only when the file changes them), and a
tag the fleet file changed while `up` was stopped retargets the device's automatic deployments on start."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Iterator

import pytest
from azure.iot.hub import IoTHubConfigurationManager, IoTHubRegistryManager
from azure.iot.hub.models import Configuration, ConfigurationContent, Twin

from .conftest import UpProcess, wait_for
from .test_fleet import START

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class SmallFleet(UpProcess):
    """`up` on two devices (north, south) running only the `steady` module."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        template = json.loads((self.solution / "fleet.template.json").read_text(encoding="utf-8"))
        modules = template["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]
        for name in [n for n in modules if n != "steady"]:
            del modules[name]
        self.manifest = self.solution / "small.template.json"
        self.manifest.write_text(json.dumps(template), encoding="utf-8")
        self.fleet_file = self.solution / "small-fleet.json"
        self.write_fleet({"north": {"site": "north"}, "south": {"site": "south"}})
        self.up_args = ["--fleet", str(self.fleet_file), "--backoff-unit", "0.5"]

    def write_fleet(self, tags: dict[str, dict[str, str]]) -> None:
        """The fleet file: each device's tags."""
        devices = {device: {"tags": device_tags} for device, device_tags in tags.items()}
        self.fleet_file.write_text(json.dumps({"devices": devices}), encoding="utf-8")

    def greeting(self, device: str) -> str | None:
        """The GREETING of the device's last started steady process."""
        found = [
            START.match(line.split(" | ", 1)[1])
            for line in self.stdout().splitlines()
            if " | " in line and line.split(" | ", 1)[0].strip() == f"{device}/steady"
        ]
        starts = [match for match in found if match]
        return starts[-1][4] if starts else None

    def stop(self) -> None:
        """SIGTERM: the modules stop, then the hub."""
        assert self.process is not None
        self.process.terminate()
        assert self.process.wait(60) == 0, self.stderr()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[SmallFleet]:
    """The started small fleet; leftovers killed afterwards."""
    proc = SmallFleet(tmp_path)
    proc.start()
    yield proc
    proc.kill_leftovers()


def clients(fleet: SmallFleet) -> tuple[IoTHubRegistryManager, IoTHubConfigurationManager]:  # pylint: disable=redefined-outer-name
    """The service SDK clients of the fleet's hub."""
    env = json.loads(fleet.cli("env", "--format", "json").stdout)
    os.environ["REQUESTS_CA_BUNDLE"] = env["REQUESTS_CA_BUNDLE"]
    return (
        IoTHubRegistryManager.from_connection_string(env["IOTHUB_CONNECTION_STRING"]),
        IoTHubConfigurationManager.from_connection_string(env["IOTHUB_CONNECTION_STRING"]),
    )


def deployment(fleet: SmallFleet, greeting: str) -> dict[str, Any]:  # pylint: disable=redefined-outer-name
    """The manifest's modulesContent with steady's GREETING changed."""
    content = copy.deepcopy(json.loads(fleet.manifest.read_text(encoding="utf-8"))["modulesContent"])
    content["$edgeAgent"]["properties.desired"]["modules"]["steady"]["env"]["GREETING"]["value"] = greeting
    return content


def test_service_tags_survive_a_restart_and_fleet_file_tags_retarget(fleet: SmallFleet) -> None:  # pylint: disable=redefined-outer-name
    registry, configs = clients(fleet)
    wait_for(lambda: fleet.greeting("north") == "steady" and fleet.greeting("south") == "steady", 60)
    # north moves to site=south through the SDK; the south deployment then targets both devices
    registry.update_twin("north", Twin(tags={"site": "south", "ring": "canary"}), "*")
    for config_id, site in (("south-sites", "south"), ("west-sites", "west")):
        configs.create_configuration(
            Configuration(
                id=config_id,
                content=ConfigurationContent(modules_content=deployment(fleet, f"{site}-deployed")),
                target_condition=f"tags.site='{site}'",
                priority=10,
            )
        )
    wait_for(lambda: fleet.greeting("north") == "south-deployed" and fleet.greeting("south") == "south-deployed", 60)
    fleet.stop()
    # while it is stopped, the fleet file moves south to site=west (north's entry is as before)
    fleet.write_fleet({"north": {"site": "north"}, "south": {"site": "west"}})
    fleet.start()
    registry, configs = clients(fleet)
    assert registry.get_twin("north").tags == {"site": "south", "ring": "canary"}  # the SDK's tags stay
    assert registry.get_twin("south").tags == {"site": "west"}  # the file changed it: applied
    status = json.loads(fleet.cli("status").stdout)["devices"]
    assert status["north"]["deployments"] == ["south-sites"]
    assert status["south"]["deployments"] == ["west-sites"]  # chosen again after the tags changed
    wait_for(lambda: fleet.greeting("south") == "west-deployed", 60)
    assert fleet.greeting("north") == "south-deployed"
    wait_for(lambda: configs.get_configuration("west-sites").system_metrics.results["reportedSuccessfulCount"] == 1, 60)
    assert configs.get_configuration("south-sites").system_metrics.results["targetedCount"] == 1
