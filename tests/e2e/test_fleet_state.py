"""A local fleet running the solution's real alert module on two devices (`edgehub-emulator up --fleet` with
`--device-state`, as `make emulator-up DEVICES=...` runs it):

- each device keeps its own module state: an alert raised on one device is queued in that device's folder and the
  other device's folder stays empty (and the model store / engine cache paths a module gets are the device's own);
- the fleet comes back after the emulator stops (its modules stop with it) and starts again from the same state:
  the deployments still applied, the metrics the same, the deployed env still in effect, without a redeploy.

The detections reach the alert module through the device SDK (a `camera` module's output, routed by the hub);
the deployments go through the azure-iot-hub SDK. Port 8883 is fixed by the device SDK: run under `unshare --net`
when anything else may use it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from azure.iot.device import IoTHubModuleClient, Message
from azure.iot.hub import IoTHubConfigurationManager, IoTHubRegistryManager
from azure.iot.hub.models import Configuration, ConfigurationContent

from edgehub_emulator.process import FleetProcess, module_processes
from solution_testkit import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ALERT = ROOT / "iot-edge-solution" / "modules" / "alert"
DEVICES = ("dock-east", "dock-west")  # names no other test uses: module processes are found by device
# what tools/solution_up.py passes for a fleet (DEVICE_STATE_PATHS)
DEVICE_PATHS = {
    "MODEL_STORE": "classifier/model-store",
    "ENGINE_CACHE_DIR": "classifier/engine-cache",
    "ALERT_QUEUE_DIR": "alert/alert-queue",
    "AUTHREQUEST_STATE_DIR": "authrequest/state",
}


def closed_port() -> int:
    """A local port nothing listens on (the webhook that is down)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def manifest(webhook_port: int) -> dict[str, Any]:
    """The alert module (its queue in the manifest points at one shared folder, as .env would) and a camera
    identity (stopped: the test sends its detections through the device SDK), routed as the solution routes."""
    env = {
        "ALERT_CLASSES": "dog",
        "ALERT_MIN_CONFIDENCE": "0.5",
        "ALERT_COOLDOWN_SECONDS": "0",
        "ALERT_MIN_CONSECUTIVE_FRAMES": "1",
        "ALERT_WEBHOOK_URL": f"http://127.0.0.1:{webhook_port}/alerts",
        "ALERT_WEBHOOK_TIMEOUT_SECONDS": "1",
        "ALERT_QUEUE_DIR": "../../shared-alert-queue",
        "MODEL_STORE": "../../shared-model-store",
        "ENGINE_CACHE_DIR": "../../shared-engine-cache",
        "AUTHREQUEST_STATE_DIR": "../../shared-authrequest-state",
    }
    image = "example.azurecr.io/{}:1.0-amd64"
    mounts = {"HostConfig": {"Mounts": [{"Type": "volume", "Source": "alert-queue", "Target": "/app/alert-queue"}]}}
    return {
        "modulesContent": {
            "$edgeAgent": {
                "properties.desired": {
                    "schemaVersion": "1.1",
                    "runtime": {"type": "docker", "settings": {}},
                    "systemModules": {
                        "edgeAgent": {
                            "type": "docker",
                            "settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.5"},
                        },
                        "edgeHub": {
                            "type": "docker",
                            "status": "running",
                            "restartPolicy": "always",
                            "settings": {"image": "mcr.microsoft.com/azureiotedge-hub:1.5"},
                        },
                    },
                    "modules": {
                        "alert": {
                            "version": "1.0",
                            "type": "docker",
                            "status": "running",
                            "restartPolicy": "always",
                            "settings": {"image": image.format("alert"), "createOptions": json.dumps(mounts)},
                            "env": {name: {"value": value} for name, value in env.items()},
                        },
                        "camera": {
                            "version": "1.0",
                            "type": "docker",
                            "status": "stopped",
                            "restartPolicy": "never",
                            "settings": {"image": image.format("camera"), "createOptions": "{}"},
                        },
                    },
                }
            },
            "$edgeHub": {
                "properties.desired": {
                    "schemaVersion": "1.1",
                    "routes": {
                        "detections": "FROM /messages/modules/camera/outputs/detections "
                        'INTO BrokeredEndpoint("/modules/alert/inputs/detections")',
                        "alerts": "FROM /messages/modules/alert/outputs/alerts INTO $upstream",
                    },
                    "storeAndForwardConfiguration": {"timeToLiveSecs": 7200},
                }
            },
        }
    }


class Fleet:
    """The two-device fleet of one state folder; `start()` may be called again after `stop()`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.solution = root / "solution"
        self.devices_state = root / "devices"
        (self.solution / "modules").mkdir(parents=True)
        shutil.copytree(ALERT, self.solution / "modules" / "alert", ignore=shutil.ignore_patterns("tests"))
        (self.solution / "deployment.json").write_text(json.dumps(manifest(closed_port())), encoding="utf-8")
        (self.solution / ".env").write_text("", encoding="utf-8")
        (self.solution / "fleet.json").write_text(
            json.dumps({"devices": {d: {"tags": {"site": d}} for d in DEVICES}}), encoding="utf-8"
        )
        self.starts = 0
        self.process: FleetProcess | None = None

    def start(self) -> FleetProcess:
        """`edgehub-emulator up` with each device's own state folder."""
        self.starts += 1
        extra = ["--device-state", str(self.devices_state), "--env-file", str(self.solution / ".env")]
        for name, relative in DEVICE_PATHS.items():
            extra += ["--device-path", f"{name}={relative}"]
        self.process = FleetProcess(
            self.root / "state",
            self.solution / "deployment.json",
            self.solution / "fleet.json",
            self.root / f"up-{self.starts}.log",
            extra=extra,
        )
        return self.process.start()

    def stop(self) -> None:
        """SIGTERM to `up`: it stops every module, then the hub."""
        if self.process:
            self.process.stop()

    def queue(self, device: str) -> Path:
        """The device's alert queue folder."""
        return self.devices_state / device / DEVICE_PATHS["ALERT_QUEUE_DIR"]

    def alert_env(self, device: str) -> dict[str, str]:
        """The environment of the device's running alert process (Linux /proc)."""
        pids = wait_for(lambda: module_processes(device).get((device, "alert")), 120, f"{device}'s alert process")
        raw = Path(f"/proc/{min(pids)}/environ").read_bytes().decode(errors="replace")
        return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)

    def clients(self) -> tuple[IoTHubRegistryManager, IoTHubConfigurationManager]:
        """The service SDK clients of the running hub."""
        assert self.process is not None
        env = self.process.service_env()
        os.environ["REQUESTS_CA_BUNDLE"] = env["REQUESTS_CA_BUNDLE"]
        return (
            IoTHubRegistryManager.from_connection_string(env["IOTHUB_CONNECTION_STRING"]),
            IoTHubConfigurationManager.from_connection_string(env["IOTHUB_CONNECTION_STRING"]),
        )

    def cli(self, *argv: str) -> str:
        """`edgehub-emulator ARGV` against the running hub; its output."""
        assert self.process is not None
        return subprocess.run(
            [sys.executable, "-m", "edgehub_emulator.cli", *argv, *self.process.args],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout

    def camera(self, device: str) -> IoTHubModuleClient:
        """The device SDK as the device's camera module (through the hub's MQTT on 8883)."""
        assert self.process is not None
        env = json.loads(self.cli("env", "camera", "--device-id", device, "--format", "json"))
        cert = Path(env["EdgeModuleCACertificateFile"]).read_text(encoding="utf-8")
        client = IoTHubModuleClient.create_from_connection_string(
            env["EdgeHubConnectionString"], server_verification_cert=cert
        )
        client.connect()
        return client


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """dock-east and dock-west running the alert module, each with its own state folder."""
    instance = Fleet(tmp_path_factory.mktemp("fleet-state"))
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


def reported(registry: IoTHubRegistryManager, device: str) -> dict[str, Any]:
    """`$edgeAgent` reported properties of a device."""
    return registry.get_module_twin(device, "$edgeAgent").properties.reported


def test_each_device_keeps_its_own_model_store_engine_cache_and_alert_queue(fleet: Fleet) -> None:
    envs = {device: fleet.alert_env(device) for device in DEVICES}
    for device, env in envs.items():
        for name, relative in DEVICE_PATHS.items():
            assert env[name] == str((fleet.devices_state / device / relative).resolve())  # not the manifest's
    assert len({env["ALERT_QUEUE_DIR"] for env in envs.values()}) == 2
    status = json.loads(fleet.cli("status"))
    assert status["devices"]["dock-west"]["state"] == str((fleet.devices_state / "dock-west").resolve())
    # an alert on dock-west (its webhook down) is queued in dock-west's folder only
    camera = fleet.camera("dock-west")
    try:
        camera.send_message_to_output(
            Message(
                json.dumps({"detections": [{"label": "dog", "confidence": 0.9}]}),
                content_encoding="utf-8",
                content_type="application/json",
            ),
            "detections",
        )
    finally:
        camera.shutdown()
    queued = wait_for(lambda: sorted(fleet.queue("dock-west").glob("*.json")), 60, "the alert queued on dock-west")
    assert json.loads(queued[0].read_text(encoding="utf-8"))["data"]["device"] == "dock-west"
    assert not list(fleet.queue("dock-east").glob("*.json"))
    assert not (fleet.solution / "shared-alert-queue").exists()


def test_the_fleet_comes_back_from_its_state_with_the_deployments_applied(fleet: Fleet) -> None:
    registry, configs = fleet.clients()
    east, west = DEVICES
    # dock-east: its own content (a single-device deployment); dock-west: an automatic deployment by its tag
    single = manifest(closed_port())["modulesContent"]
    single["$edgeAgent"]["properties.desired"]["modules"]["alert"]["env"]["ALERT_MIN_CONFIDENCE"] = {"value": "0.8"}
    configs.apply_configuration_on_edge_device(east, ConfigurationContent(modules_content=single))
    content = manifest(closed_port())["modulesContent"]
    content["$edgeAgent"]["properties.desired"]["modules"]["alert"]["env"]["ALERT_MIN_CONFIDENCE"] = {"value": "0.7"}
    configs.create_configuration(
        Configuration(
            id="stricter-alerts",
            content=ConfigurationContent(modules_content=content),
            target_condition=f"tags.site='{west}'",
            priority=10,
        )
    )
    wait_for(
        lambda: configs.get_configuration("stricter-alerts").system_metrics.results["reportedSuccessfulCount"] == 1,
        120,
        "dock-west reporting the deployment",
    )
    wanted = {east: "0.8", west: "0.7"}
    wait_for(lambda: all(fleet.alert_env(d)["ALERT_MIN_CONFIDENCE"] == v for d, v in wanted.items()), 60, "the env")
    metrics = configs.get_configuration("stricter-alerts").system_metrics.results
    versions = {d: reported(registry, d)["lastDesiredVersion"] for d in DEVICES}
    queued = sorted(p.name for p in fleet.queue(west).glob("*.json"))
    fleet.stop()
    assert not module_processes(east) and not module_processes(west)  # the modules stopped with it
    fleet.start()  # the same state folder; nothing is deployed again
    registry, configs = fleet.clients()
    for device, value in wanted.items():
        env = fleet.alert_env(device)
        assert env["ALERT_MIN_CONFIDENCE"] == value  # the deployed env, not the manifest's 0.5
        assert env["ALERT_QUEUE_DIR"] == str(fleet.queue(device).resolve())
        wait_for(
            lambda d=device: (
                reported(registry, d).get("modules", {}).get("alert", {}).get("runtimeStatus") == "running"
            ),
            60,
            f"{device}'s alert reported running",
        )
        assert reported(registry, device)["lastDesiredVersion"] == versions[device]
        desired = registry.get_module_twin(device, "$edgeAgent").properties.desired
        assert desired["modules"]["alert"]["env"]["ALERT_MIN_CONFIDENCE"] == {"value": value}
    assert configs.get_configuration("stricter-alerts").system_metrics.results == metrics
    assert metrics == {"targetedCount": 1, "appliedCount": 1, "reportedSuccessfulCount": 1, "reportedFailedCount": 0}
    assert sorted(p.name for p in fleet.queue(west).glob("*.json")) == queued  # undelivered alerts kept
    # a rollback after the restart: dock-east's own content back to the manifest's reaches its alert module
    configs.apply_configuration_on_edge_device(
        east,
        ConfigurationContent(
            modules_content=json.loads((fleet.solution / "deployment.json").read_text())["modulesContent"]
        ),
    )
    wait_for(lambda: fleet.alert_env(east)["ALERT_MIN_CONFIDENCE"] == "0.5", 60, "dock-east back on the manifest")
