"""`make deploy` as a user runs it, against a local fleet (`edgehub-emulator up --fleet`, light test modules): at
scale with --wait until the targeted devices report it, the listing, a single device, and a hub that is not there.

Port 8883 is fixed by the device SDK: run under `unshare --net` when anything else may use it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from edgehub_emulator.process import FleetProcess, module_processes

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tools" / "edgehub-emulator" / "tests" / "fixtures" / "solution"


def expanded(template: dict[str, Any]) -> dict[str, Any]:
    """The fixture's fleet template as genconfig would expand it: images named, createOptions as strings."""
    manifest = json.loads(json.dumps(template))
    manifest.pop("$schema-template", None)
    for spec in manifest["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"].values():
        folder = spec["settings"]["image"].removeprefix("${MODULES.").removesuffix("}")
        spec["settings"]["image"] = f"example.azurecr.io/{folder}:1.0-amd64"
        spec["settings"]["createOptions"] = json.dumps(spec["settings"].get("createOptions", {}))
    agent = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]
    agent["systemModules"] = {
        name: {"type": "docker", "settings": {"image": f"mcr.microsoft.com/azureiotedge-{name[4:].lower()}:1.5"}}
        for name in ("edgeAgent", "edgeHub")
    }
    return manifest


@pytest.fixture(scope="module")
def solution(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the test modules with the fleet manifest expanded."""
    root = tmp_path_factory.mktemp("make-deploy") / "solution"
    shutil.copytree(FIXTURE, root)
    manifest = expanded(json.loads((FIXTURE / "fleet.template.json").read_text(encoding="utf-8")))
    (root / "deployment.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def fleet(solution: Path) -> Iterator[FleetProcess]:
    """Three devices (lobby, garage, attic) running the expanded manifest."""
    with FleetProcess(
        solution.parent / "state",
        solution / "deployment.json",
        solution / "fleet.json",
        solution.parent / "up.log",
        extra=("--backoff-unit", "0.5"),
    ) as instance:
        yield instance


def make(fleet: FleetProcess, *variables: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`make VARIABLES` in the repository, against the fleet's state folder."""
    environment = {**os.environ, **(env or {})}
    environment.pop("MAKEFLAGS", None)
    if env is None:  # the emulator's, as `make deploy` finds it
        environment.pop("IOTHUB_CONNECTION_STRING", None)
    return subprocess.run(
        ["make", "--no-print-directory", *variables, f"EMULATOR_STATE={fleet.state}"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_make_deploy_at_scale_waits_until_the_devices_report_it(fleet: FleetProcess, solution: Path) -> None:
    manifest = json.loads((solution / "deployment.json").read_text(encoding="utf-8"))
    modules = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]
    modules["worker"]["env"]["GREETING"]["value"] = "deployed"
    changed = solution / "deployment.changed.json"
    changed.write_text(json.dumps(manifest), encoding="utf-8")
    steady_before = {device: module_processes(device)[(device, "steady")] for device in ("lobby", "garage")}
    result = make(
        fleet,
        "deploy",
        f"MANIFEST={changed}",
        "TARGET_CONDITION=tags.site='lobby' OR tags.site='garage'",
        "PRIORITY=5",
        "LABELS=ring=e2e owner=tests",
        "WAIT=1",
        "TIMEOUT=120",
    )
    assert result.returncode == 0, result.stderr + result.stdout
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["systemMetrics"] == {
        "targetedCount": 2,
        "appliedCount": 2,
        "reportedSuccessfulCount": 2,
        "reportedFailedCount": 0,
    }
    assert "reported successful 2" in result.stderr  # the progress lines
    for device, pids in steady_before.items():
        assert module_processes(device)[(device, "steady")] == pids  # untouched modules kept running
    listing = make(fleet, "deployments")
    assert listing.returncode == 0, listing.stderr
    assert summary["deployment"] in listing.stdout and "tags.site='lobby' OR tags.site='garage'" in listing.stdout


def test_make_deploy_to_one_device(fleet: FleetProcess, solution: Path) -> None:
    result = make(fleet, "deploy", f"MANIFEST={solution / 'deployment.json'}", "DEVICE=attic", "WAIT=1", "TIMEOUT=120")
    assert result.returncode == 0, result.stderr + result.stdout
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["device"] == "attic" and summary["modules"]["steady"] == "running"


def test_make_deploy_names_a_hub_that_is_not_there(fleet: FleetProcess, solution: Path) -> None:
    key = fleet.service_env()["IOTHUB_CONNECTION_STRING"].split("SharedAccessKey=")[1]
    unreachable = f"HostName=localhost:1;SharedAccessKeyName=iothubowner;SharedAccessKey={key}"
    result = make(
        fleet,
        "deploy",
        f"MANIFEST={solution / 'deployment.json'}",
        "DEVICE=attic",
        env={"IOTHUB_CONNECTION_STRING": unreachable},
    )
    assert result.returncode != 0
    assert "cannot reach IoT Hub localhost:1" in result.stderr
