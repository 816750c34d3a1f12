"""`make deploy` as a user runs it, against a local fleet (`edgehub-emulator up --fleet`, light test modules): at
scale with --wait until the targeted devices report it, the listing, a single device, a hub that is not there,
custom metrics (METRICS=), --wait on devices that fail or never report (at scale and one device), and an
emulator that never ran.

Port 8883 is fixed by the device SDK: run under `unshare --net` when anything else may use it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
from azure.iot.hub import IoTHubConfigurationManager, IoTHubRegistryManager
from azure.iot.hub.models import Twin

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


def make(
    fleet: FleetProcess | Path, *variables: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`make VARIABLES` in the repository, against the fleet's state folder (or this one)."""
    environment = {**os.environ, **(env or {})}
    environment.pop("MAKEFLAGS", None)
    if env is None:  # the emulator's, as `make deploy` finds it
        environment.pop("IOTHUB_CONNECTION_STRING", None)
    state = fleet.state if isinstance(fleet, FleetProcess) else fleet
    return subprocess.run(
        ["make", "--no-print-directory", *variables, f"EMULATOR_STATE={state}"],
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


@pytest.fixture(scope="module")
def service(fleet: FleetProcess) -> Iterator[tuple[IoTHubRegistryManager, IoTHubConfigurationManager]]:
    """The service SDK clients of the fleet's hub (its CA trusted while the module's tests run)."""
    env = fleet.service_env()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REQUESTS_CA_BUNDLE", env["REQUESTS_CA_BUNDLE"])
        yield (
            IoTHubRegistryManager.from_connection_string(env["IOTHUB_CONNECTION_STRING"]),
            IoTHubConfigurationManager.from_connection_string(env["IOTHUB_CONNECTION_STRING"]),
        )


def with_module(solution: Path, name: str, image: str, greeting: str) -> Path:
    """The expanded manifest plus a module `name` whose image is `image` (a folder of modules/ or not)."""
    manifest = json.loads((solution / "deployment.json").read_text(encoding="utf-8"))
    modules = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]
    modules[name] = {
        "version": "1.0",
        "type": "docker",
        "status": "running",
        "restartPolicy": "on-failure",
        "settings": {"image": f"example.azurecr.io/{image}:1.0-amd64", "createOptions": "{}"},
        "env": {"GREETING": {"value": greeting}},
    }
    path = solution / f"deployment.{name}.{greeting}.json"
    path.write_text(json.dumps(manifest), encoding="utf-8")
    return path


def error_lines(stderr: str) -> list[str]:
    """The error lines the deploy command printed (progress lines and make's own line aside)."""
    return [line for line in stderr.splitlines() if "error" in line.lower() and not line.startswith("make")]


def test_make_deploy_passes_metrics_and_the_condition_as_written(
    fleet: FleetProcess, solution: Path, service: Any
) -> None:
    _, configs = service
    condition = "tags.site = 'lobby' OR tags.site = '$edgeAgent'"  # a `$` make or the shell would expand
    ok = (
        "SELECT deviceId FROM devices.modules WHERE moduleId = '$edgeAgent' "
        "AND properties.reported.lastDesiredStatus.code = 200"
    )
    lobby = "SELECT deviceId FROM devices WHERE tags.site = 'lobby'"
    result = make(
        fleet,
        "deploy",
        f"MANIFEST={solution / 'deployment.json'}",
        f"TARGET_CONDITION={condition}",
        "PRIORITY=1",  # below the at-scale test's 5: lobby keeps running that one
        "DEPLOYMENT_ID=with-metrics",
        f"METRICS=ok={ok};lobby={lobby}",
    )
    assert result.returncode == 0, result.stderr + result.stdout
    config = configs.get_configuration("with-metrics")
    assert config.metrics.queries == {"ok": ok, "lobby": lobby}  # `$edgeAgent` and the quotes intact
    assert config.target_condition == condition
    assert config.metrics.results["lobby"] == 1 and config.metrics.results["ok"] >= 1


def test_make_deploy_wait_at_scale_times_out_naming_the_missing_devices(fleet: FleetProcess, service: Any) -> None:
    registry, _ = service
    # an edge device no agent runs for: it never reports anything
    registry.create_device_with_sas("ghost-site", None, None, "enabled", iot_edge=True)
    registry.update_twin("ghost-site", Twin(tags={"site": "ghost"}), "*")
    result = make(
        fleet, "deploy", "TARGET_CONDITION=tags.site='ghost'", "DEPLOYMENT_ID=to-ghosts", "WAIT=1", "TIMEOUT=3"
    )
    assert result.returncode != 0, result.stderr + result.stdout
    assert error_lines(result.stderr) == [
        (
            "edgevision: error: to-ghosts: after 3 s, 1 of 1 targeted devices have not reported it (offline, or a "
            "higher-priority deployment applies to them)"
        )
    ]


def test_make_deploy_wait_for_one_device_that_never_reports(fleet: FleetProcess, service: Any) -> None:
    registry, _ = service
    registry.create_device_with_sas("ghost-one", None, None, "enabled", iot_edge=True)
    result = make(fleet, "deploy", "DEVICE=ghost-one", "WAIT=1", "TIMEOUT=3")
    assert result.returncode != 0, result.stderr + result.stdout
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and errors[0].startswith("edgevision: error: ghost-one: its edgeAgent did not report")
    assert "within 3 s (offline?)" in errors[0]


def test_make_deploy_wait_for_one_device_that_fails(fleet: FleetProcess, solution: Path) -> None:
    manifest = with_module(solution, "missing", "no-such-module", "single")  # no modules/no-such-module/main.py
    result = make(fleet, "deploy", f"MANIFEST={manifest}", "DEVICE=attic", "WAIT=1", "TIMEOUT=120")
    assert result.returncode != 0, result.stderr + result.stdout
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and errors[0].startswith("edgevision: error: attic could not apply the deployment: 500 ")
    assert "module missing" in errors[0]


def test_make_deploy_wait_at_scale_names_the_devices_that_failed(fleet: FleetProcess, solution: Path) -> None:
    manifest = with_module(solution, "missing", "no-such-module", "at-scale")
    result = make(
        fleet,
        "deploy",
        f"MANIFEST={manifest}",
        "TARGET_CONDITION=tags.site='attic'",
        "DEPLOYMENT_ID=broken-attic",
        "WAIT=1",
        "TIMEOUT=120",
    )
    assert result.returncode != 0, result.stderr + result.stdout
    assert "deploy] Error 1" in result.stderr  # edgevision's exit status: reported, some failed
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["systemMetrics"]["reportedFailedCount"] == 1
    assert list(summary["failedDevices"]) == ["attic"] and summary["failedDevices"]["attic"].startswith("500 ")
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and errors[0].startswith(
        "edgevision: error: broken-attic failed on 1 device(s): attic: 500"
    )


def test_make_deploy_without_an_emulator_that_ever_ran_is_one_error(tmp_path: Path) -> None:
    result = make(tmp_path / "never", "deploy", "DEVICE=edge-device")
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if not line.startswith("make")]
    assert lines == [
        (
            f"edgehub-emulator env: no emulator has run with the state folder {tmp_path / 'never'} (never started, "
            "or reset): start it first with `edgehub-emulator start --manifest <deployment.json>` or `make emulator`"
        )
    ]
