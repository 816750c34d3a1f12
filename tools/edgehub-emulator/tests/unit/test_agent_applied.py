"""When the local edgeAgent reports a desired version applied: after the modules that version starts have started
(200), or with 500 naming each module that could not start (its code missing, as an image that cannot be pulled);
createOptions compare as JSON."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from edgehub_emulator.agent import LocalEdgeAgent, definition_key
from edgehub_emulator.config import EmulatorConfig
from edgehub_emulator.manifest import Manifest
from edgehub_emulator.store import Identity, Store, Twin

DEVICE = "edge-device"
SLEEPER = "import time\nprint('up', flush=True)\ntime.sleep(120)\n"


def module(image: str, **extra: Any) -> dict[str, Any]:
    """A custom module of `$edgeAgent` desired properties."""
    return {
        "version": "1.0",
        "type": "docker",
        "status": "running",
        "restartPolicy": "never",
        "settings": {"image": image, "createOptions": "{}"},
        **extra,
    }


class Device:
    """One device's store and agent, over a solution folder of scripts."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = EmulatorConfig(state_dir=root / "state", device_id=DEVICE)
        self.store = Store(root / "state" / "hub.db")
        self.store.put_identity(Identity(DEVICE, "$edgeAgent", "a2V5", "a2V5"))
        self.manifest = Manifest(root / "deployment.json", {}, [], {}, 7200)
        self.agent: LocalEdgeAgent | None = None

    def script(self, name: str, text: str = SLEEPER) -> None:
        """modules/<name>/main.py."""
        folder = self.root / "modules" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "main.py").write_text(text, encoding="utf-8")

    def desire(self, modules: dict[str, Any]) -> None:
        """A new `$edgeAgent` desired version."""
        twin = self.store.get_twin(DEVICE, "$edgeAgent") or Twin(desired_version=0)
        twin.desired = {"schemaVersion": "1.1", "modules": modules}
        twin.desired_version += 1
        self.store.put_twin(DEVICE, "$edgeAgent", twin)

    def reported(self) -> dict[str, Any]:
        """`$edgeAgent` reported properties."""
        twin = self.store.get_twin(DEVICE, "$edgeAgent")
        return twin.reported if twin else {}

    def start_agent(self) -> LocalEdgeAgent:
        """The agent, which reads the desired version without starting anything yet."""
        self.agent = LocalEdgeAgent(self.manifest, self.config, self.store, self.root / ".env", io.StringIO())
        return self.agent


@pytest.fixture()
def device(tmp_path: Path) -> Iterator[Device]:
    """A device whose agent is stopped at the end."""
    dev = Device(tmp_path)
    yield dev
    if dev.agent is not None:
        dev.agent.stop()
    dev.store.close()


def test_a_version_is_reported_applied_only_once_its_modules_have_started(device: Device) -> None:
    device.script("camera")
    device.desire({"camera": module("camera:1")})
    agent = device.start_agent()
    assert "lastDesiredStatus" not in device.reported()  # read, not yet applied: nothing started
    agent.poll()
    reported = device.reported()
    assert reported["lastDesiredVersion"] == 1 and reported["lastDesiredStatus"]["code"] == 200
    assert reported["modules"]["camera"]["runtimeStatus"] == "running"
    camera = agent.modules["camera"].process
    assert camera is not None and camera.poll() is None

    device.desire({"camera": module("camera:1", env={"FPS": {"value": "5"}})})
    assert agent.reconcile()
    assert device.reported()["lastDesiredVersion"] == 1  # the changed module is stopped, not yet started again
    agent.poll()
    assert device.reported()["lastDesiredVersion"] == 2 and device.reported()["lastDesiredStatus"]["code"] == 200


def test_a_module_that_cannot_start_fails_the_version_with_500(device: Device) -> None:
    device.script("camera")
    device.desire({"camera": module("camera:1"), "ghost": module("ghost:1")})  # modules/ghost/ does not exist
    agent = device.start_agent()
    agent.poll()
    status = device.reported()["lastDesiredStatus"]
    assert device.reported()["lastDesiredVersion"] == 1
    assert status["code"] == 500 and "module ghost" in status["description"]
    assert "does not exist" in status["description"] and "camera" not in status["description"]
    assert device.reported()["modules"]["ghost"]["runtimeStatus"] == "failed"
    assert device.reported()["modules"]["camera"]["runtimeStatus"] == "running"  # the others run

    device.script("ghost")  # the next version that does not start it is applied again
    device.desire({"camera": module("camera:1")})
    agent.poll()
    assert device.reported()["lastDesiredVersion"] == 2 and device.reported()["lastDesiredStatus"]["code"] == 200
    assert device.reported()["modules"].get("ghost") is None


def test_a_module_that_crashes_after_starting_is_run_time_not_a_failed_version(device: Device) -> None:
    device.script("flaky", "raise SystemExit(3)\n")
    device.desire({"flaky": module("flaky:1")})
    agent = device.start_agent()
    agent.poll()
    deadline = time.monotonic() + 20
    while device.reported().get("modules", {}).get("flaky", {}).get("runtimeStatus") != "failed":
        assert time.monotonic() < deadline, device.reported()
        time.sleep(0.1)
        agent.poll()
    assert device.reported()["lastDesiredStatus"]["code"] == 200  # as IoT Edge's agent: applied, then it exited
    assert device.reported()["modules"]["flaky"]["exitCode"] == 3


def test_create_options_compare_as_json(device: Device) -> None:
    one = module("camera:1")
    one["settings"]["createOptions"] = json.dumps({"HostConfig": {"Privileged": True, "ShmSize": 1}})
    spaced = module("camera:1")
    spaced["settings"]["createOptions"] = '{ "HostConfig": { "ShmSize": 1,  "Privileged": true } }'
    other = module("camera:1")
    other["settings"]["createOptions"] = '{"HostConfig": {"ShmSize": 2, "Privileged": true}}'
    assert definition_key(one) == definition_key(spaced)
    assert definition_key(one) != definition_key(other)
    broken = module("camera:1")
    broken["settings"]["createOptions"] = "{not json"
    assert definition_key(broken) != definition_key(one)  # compared as written

    device.script("camera")
    device.desire({"camera": one})
    agent = device.start_agent()
    agent.poll()
    first = agent.modules["camera"].process
    device.desire({"camera": spaced})
    agent.poll()
    assert agent.modules["camera"].process is first  # the same options: not recreated
    assert device.reported()["lastDesiredVersion"] == 2 and device.reported()["lastDesiredStatus"]["code"] == 200
    device.desire({"camera": other})
    agent.poll()
    assert agent.modules["camera"].process is not first
