"""`twin get`, `twin patch` and `reset` through the CLI, against a running emulator and its state folder."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest
from azure.iot.device import IoTHubModuleClient

from .conftest import FIXTURES, DesiredPatches, EmulatorProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DEVICE = "edge-device"
MANIFEST_DESIRED = json.loads((FIXTURES / "deployment.json").read_text(encoding="utf-8"))["modulesContent"]["receiver"][
    "properties.desired"
]


def _desired(emulator: EmulatorProcess, module: str) -> dict[str, Any]:
    twin = json.loads(emulator.cli("twin", "get", DEVICE, module).stdout)
    assert (twin["device_id"], twin["module_id"]) == (DEVICE, module)
    return dict(twin["properties"]["desired"])


def test_twin_get_and_patch_reach_the_module(
    emulator: EmulatorProcess, module_client: Callable[..., IoTHubModuleClient]
) -> None:
    before = _desired(emulator, "receiver")
    assert {k: v for k, v in before.items() if k != "$version"} == MANIFEST_DESIRED
    receiver = module_client("receiver")
    patches = DesiredPatches(receiver)
    receiver.connect()

    marker = str(uuid.uuid4())
    result = emulator.cli("twin", "patch", DEVICE, "receiver", json.dumps({"threshold": 0.8, "marker": marker}))
    printed = json.loads(result.stdout)["properties"]["desired"]
    assert printed["threshold"] == 0.8 and printed["marker"] == marker and printed["labels"] == ["cat", "dog"]
    patch = patches.wait("marker", marker)
    assert patch["threshold"] == 0.8 and patch["$version"] == before["$version"] + 1
    after = _desired(emulator, "receiver")
    assert after["$version"] == patch["$version"] and after["marker"] == marker
    assert receiver.get_twin()["desired"] == after  # the module and the service see one twin


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("twin", "patch", DEVICE, "receiver", "{threshold: 0.8"), "the desired patch is not valid JSON"),
        (("twin", "patch", DEVICE, "receiver"), "twin patch needs a JSON object of desired properties"),
        (("twin", "get", DEVICE, "no-such-module"), "404"),
    ],
)
def test_twin_cli_errors_are_one_clear_line(emulator: EmulatorProcess, argv: tuple[str, ...], message: str) -> None:
    before = _desired(emulator, "receiver")
    result = emulator.cli(*argv, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("edgehub-emulator twin: ") and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert _desired(emulator, "receiver") == before  # nothing changed


def test_reset_removes_state_keys_stay_twins_return_to_the_manifest(emulator: EmulatorProcess) -> None:
    env_before = emulator.env("receiver")
    emulator.cli("twin", "patch", DEVICE, "receiver", '{"threshold": 0.99, "labels": null, "extra": 1}')
    changed = _desired(emulator, "receiver")
    assert changed["threshold"] == 0.99 and "labels" not in changed
    emulator.stop()

    result = emulator.cli("reset")
    assert f"removed {emulator.state}" in result.stdout
    assert not emulator.state.exists()
    again = emulator.cli("reset")
    assert again.returncode == 0 and "nothing to reset" in again.stdout

    emulator.start()
    env_after = emulator.env("receiver")
    for name in ("EdgeHubConnectionString", "IOTHUB_CONNECTION_STRING"):
        assert env_after[name] == env_before[name]  # keys derive from the seed
    assert env_after["REQUESTS_CA_BUNDLE"] == env_before["REQUESTS_CA_BUNDLE"]  # same path, a new CA
    desired = _desired(emulator, "receiver")
    assert {k: v for k, v in desired.items() if k != "$version"} == MANIFEST_DESIRED
    assert "extra" not in desired
    # the connection string from before the reset still opens the module (with the new CA)
    client = IoTHubModuleClient.create_from_connection_string(
        env_before["EdgeHubConnectionString"],
        server_verification_cert=Path(env_after["REQUESTS_CA_BUNDLE"]).read_text(encoding="utf-8"),
        connection_retry=False,
    )
    try:
        client.connect()
        assert client.get_twin()["desired"] == desired
    finally:
        client.shutdown()
