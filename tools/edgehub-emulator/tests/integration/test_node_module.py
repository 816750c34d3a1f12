"""A module written with Azure's Node.js device SDK (`azure-iot-device` 1.18 + `azure-iot-device-mqtt`) as a second,
independent client: output routed by property to another module and to `$upstream`, twin, desired patches,
direct methods and inputs. `make test` installs it with `npm ci` in tests/node."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from azure.iot.device import IoTHubModuleClient
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import CloudToDeviceMethod, Twin, TwinProperties

from .conftest import EmulatorProcess, call_service_api, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DEVICE = "edge-device"
NODE_DIR = Path(__file__).parents[1] / "node"


def _node_or_reason() -> str | None:
    """The node executable, or None; without it (or the npm packages) the test fails in CI and skips locally."""
    node = shutil.which("node")
    missing = []
    if node is None:
        missing.append("node is not on PATH")
    for package in ("azure-iot-device", "azure-iot-device-mqtt"):
        if not (NODE_DIR / "node_modules" / package / "package.json").is_file():
            missing.append(f"{package} is not installed (run `npm ci` in {NODE_DIR}, or `make test`)")
    if missing:
        reason = "; ".join(missing)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the Node.js module test needs Node.js and its npm packages: {reason}")
        pytest.skip(reason)
    return node


class NodeModule:
    """`node module.js` as module `sender`; its JSON event lines arrive on a queue."""

    def __init__(self, node: str, env: dict[str, str]) -> None:
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.process = subprocess.Popen(  # pylint: disable=consider-using-with  # stopped in close()
            [node, "module.js"],
            cwd=NODE_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                self.events.put(json.loads(line))
            except ValueError:
                self.events.put({"event": "output", "line": line.rstrip()})

    def wait(self, event: str, predicate: Callable[[dict[str, Any]], bool] = lambda e: True) -> dict[str, Any]:
        """The first event of that kind matching predicate (30 s at most); fails on the module's fatal error."""

        def found() -> dict[str, Any] | None:
            while not self.events.empty():
                self.seen.append(self.events.get())
            for item in self.seen:
                assert item["event"] != "fatal", item["message"]
                if item["event"] == event and predicate(item):
                    return item
            return None

        try:
            return wait_for(found, timeout=30)
        except AssertionError as e:
            raise AssertionError(f"no {event!r} event from the Node.js module; it printed {self.seen}") from e

    def close(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def node_module(emulator: EmulatorProcess) -> Iterator[NodeModule]:
    """The Node.js module, connected as `sender` through the simulator variables of `edgehub-emulator env`."""
    node = _node_or_reason()
    assert node is not None
    env = {name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ}
    env.update(emulator.env("sender"))
    module = NodeModule(node, env)
    yield module
    module.close()


def test_node_module_works_against_the_emulator(
    emulator: EmulatorProcess,
    registry: IoTHubRegistryManager,
    module_client: Callable[..., IoTHubModuleClient],
    node_module: NodeModule,
) -> None:
    received: list[Any] = []
    receiver = module_client("receiver")
    receiver.on_message_received = received.append
    receiver.connect()
    node_module.wait("ready")

    # its output reaches the Python module through the route WHERE severity = 'high' (the property the Node.js SDK
    # writes last, before its trailing '/'), and $upstream with clean property values
    alert = wait_for(lambda: [m for m in received if m.input_name == "alerts"])[0]
    assert alert.custom_properties == {"severity": "high", "sdk": "node"}
    assert json.loads(alert.data) == {"from": "node"} and alert.message_id == "node-message-1"
    upstream = call_service_api(emulator, "GET", "/emulator/upstream?limit=5000", b"").json()
    mine = [item for item in upstream if item["properties"].get("$.mid") == "node-message-1"]
    assert mine and mine[-1]["properties"]["sdk"] == "node" and mine[-1]["output"] == "out1"

    # direct method, reported properties, desired patch, an input
    result = registry.invoke_device_module_method(
        DEVICE, "sender", CloudToDeviceMethod(method_name="echo", payload={"n": 5}, response_timeout_in_seconds=10)
    )
    assert (result.status, result.payload) == (200, {"echo": {"n": 5}, "sdk": "node"})
    reported = registry.get_module_twin(DEVICE, "sender").properties.reported
    assert reported["sdk"] == "node" and reported["ready"] is True
    registry.update_module_twin(DEVICE, "sender", Twin(properties=TwinProperties(desired={"fromService": 7})))
    node_module.wait("desired", lambda e: e["desired"].get("fromService") == 7)
    response = call_service_api(emulator, "POST", "/emulator/modules/sender/inputs/cmd", b'{"do": "it"}')
    assert response.status_code == 202
    message = node_module.wait("input", lambda e: e["inputName"] == "cmd")
    assert json.loads(message["body"]) == {"do": "it"}
