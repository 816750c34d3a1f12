"""`edgevision deploy` / `deployments` against the edgeHub emulator through azure-iot-hub: the solution's real
template to one device and at scale, the listing with system metrics, and every error a user can meet (invalid
manifest, unknown device, hub unreachable, unauthorised, a layered manifest that sets what it may not).

Port 8883 is fixed by the device SDK: run under `unshare --net` when anything else may use it."""

# pylint: disable=unused-argument  # `hub` starts the emulator the tests talk to

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any, Iterator

import pytest
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import Twin

from edgehub_emulator.process import EmulatorProcess, free_port
from edgevision.cli import main

REPO = Path(__file__).resolve().parents[5]
TEMPLATE = REPO / "iot-edge-solution" / "deployment.template.json"
FLEET = {"lobby": "lobby", "garage": "garage", "attic": "attic"}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The emulator (hub only) with three tagged edge devices; its service environment."""
    try:
        socket.create_connection(("127.0.0.1", 8883), timeout=0.5).close()
        pytest.fail("port 8883 is taken: run these tests under `unshare --net` (see the module docstring)")
    except OSError:
        pass
    emulator = EmulatorProcess(tmp_path_factory.mktemp("deploy") / "state", TEMPLATE, stop_timeout=15).start()
    env = emulator.service_env("classifier")
    saved = dict(os.environ)
    os.environ.update(env)
    registry = IoTHubRegistryManager.from_connection_string(env["IOTHUB_CONNECTION_STRING"])
    for device, site in FLEET.items():
        registry.create_device_with_sas(device, None, None, "enabled", iot_edge=True)
        registry.update_twin(device, Twin(tags={"site": site}), "*")
    registry.create_device_with_sas("sensor", None, None, "enabled", iot_edge=False)
    yield env
    emulator.stop()
    os.environ.clear()
    os.environ.update(saved)


def deploy(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    """Run `edgevision deploy ARGV`; (exit code, its JSON summary or None, stderr)."""
    code = main(["deploy", "--platform", "amd64", *argv])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


def agent_desired(device: str) -> dict[str, Any]:
    """`$edgeAgent` desired properties of a device."""
    registry = IoTHubRegistryManager.from_connection_string(os.environ["IOTHUB_CONNECTION_STRING"])
    return registry.get_module_twin(device, "$edgeAgent").properties.desired


def test_the_solution_template_to_one_device(hub: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    code, summary, err = deploy(capsys, "--device", "attic", "--manifest", str(TEMPLATE))
    assert code == 0, err
    assert summary["device"] == "attic" and summary["desiredVersion"] >= 2
    modules = agent_desired("attic")["modules"]
    assert set(modules) == {"classifier", "authrequest", "alert"}
    assert modules["classifier"]["settings"]["image"].endswith("/classifier:0.1.0-amd64")
    assert isinstance(modules["classifier"]["settings"]["createOptions"], str)


def test_at_scale_with_labels_metrics_and_the_listing(hub: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    code, summary, err = deploy(
        capsys,
        "--target-condition",
        "tags.site='lobby' OR tags.site='garage'",
        "--priority",
        "10",
        "--label",
        "ring=test",
        "--metric",
        "lobby=SELECT deviceId FROM devices WHERE tags.site = 'lobby'",
    )
    assert code == 0, err
    assert summary["created"] is True and summary["deployment"].startswith("edgevision-")
    assert set(agent_desired("lobby")["modules"]) == {"classifier", "authrequest", "alert"}
    # The same content again updates the same deployment (its priority), it does not make a second one.
    code, again, err = deploy(
        capsys,
        "--target-condition",
        "tags.site='lobby'",
        "--priority",
        "11",
        "--label",
        "ring=test",
        "--metric",
        "lobby=SELECT deviceId FROM devices WHERE tags.site = 'lobby'",
    )
    assert code == 0, err
    assert again["deployment"] == summary["deployment"] and again["created"] is False and again["priority"] == 11
    assert main(["deployments", "--json"]) == 0
    rows = {row["id"]: row for row in json.loads(capsys.readouterr().out)}
    row = rows[summary["deployment"]]
    assert row["systemMetrics"]["targetedCount"] == 1 and row["systemMetrics"]["appliedCount"] == 1
    assert row["labels"] == {"ring": "test"} and row["metrics"] == {"lobby": 1} and row["layered"] is False
    assert main(["deployments"]) == 0
    assert summary["deployment"] in capsys.readouterr().out


def test_a_layered_deployment(hub: dict[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    layer = {
        "modulesContent": {
            "$edgeAgent": {
                "properties.desired.modules.helper": {
                    "version": "1.0",
                    "type": "docker",
                    "status": "running",
                    "restartPolicy": "always",
                    "settings": {"image": "example.azurecr.io/helper:1.0", "createOptions": "{}"},
                    "env": {"MODE": {"value": "layered"}},
                }
            },
            "$edgeHub": {"properties.desired.routes.helperUp": "FROM /messages/modules/helper/* INTO $upstream"},
        }
    }
    path = tmp_path / "layer.json"
    path.write_text(json.dumps(layer), encoding="utf-8")
    code, summary, err = deploy(
        capsys, "--manifest", str(path), "--layered", "--target-condition", "tags.site='lobby'", "--id", "helper-1"
    )
    assert code == 0, err
    assert summary["deployment"] == "helper-1" and summary["layered"] is True
    modules = agent_desired("lobby")["modules"]
    assert modules["helper"]["env"]["MODE"] == {"value": "layered"} and "classifier" in modules


def _bad_layer(tmp_path: Path) -> str:
    path = tmp_path / "bad-layer.json"
    path.write_text(
        json.dumps({"modulesContent": {"$edgeAgent": {"properties.desired.runtime.settings": {}}}}), encoding="utf-8"
    )
    return str(path)


def _invalid(tmp_path: Path) -> str:
    data = json.loads(TEMPLATE.read_text(encoding="utf-8"))
    data["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["alert"]["restartPolicy"] = "sometimes"
    path = tmp_path / "invalid.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


ERRORS = [
    ("invalid manifest", lambda t: ["--device", "lobby", "--manifest", _invalid(t)], {}, "restartPolicy"),
    ("unknown device", lambda t: ["--device", "nowhere"], {}, "device 'nowhere': not found"),
    ("not an edge device", lambda t: ["--device", "sensor"], {}, "not an IoT Edge device"),
    (
        "layered sets what it may not",
        lambda t: ["--layered", "--target-condition", "tags.site='x'", "--manifest", _bad_layer(t)],
        {},
        "may set only 'properties.desired.modules.<name>'",
    ),
    ("both targets", lambda t: ["--device", "lobby", "--target-condition", "x"], {}, "either --device"),
    ("bad id", lambda t: ["--target-condition", "tags.a='b'", "--id", "UPPER case"], {}, "deployment id"),
    (
        "no hub",
        lambda t: ["--device", "lobby"],
        {"IOTHUB_CONNECTION_STRING": ""},
        "IOTHUB_CONNECTION_STRING is not set",
    ),
    ("malformed", lambda t: ["--device", "lobby"], {"IOTHUB_CONNECTION_STRING": "nonsense"}, "malformed"),
    (
        "unreachable",
        lambda t: ["--device", "lobby"],
        {"IOTHUB_CONNECTION_STRING": "unreachable"},
        "cannot reach IoT Hub",
    ),
    ("unauthorised", lambda t: ["--device", "lobby"], {"IOTHUB_CONNECTION_STRING": "wrong key"}, "401 unauthorised"),
    (
        "unsupported condition",
        lambda t: ["--target-condition", "IS_DEFINED(tags.site)", "--id", "cond"],
        {},
        "answered 400",
    ),
]


def _connection(hub: dict[str, str], which: str) -> str:
    parts = dict(part.split("=", 1) for part in hub["IOTHUB_CONNECTION_STRING"].split(";"))
    policy = "SharedAccessKeyName=iothubowner"
    if which == "unreachable":
        return f"HostName=localhost:{free_port()};{policy};SharedAccessKey={parts['SharedAccessKey']}"
    if which == "wrong key":
        return f"HostName={parts['HostName']};{policy};SharedAccessKey=d3Jvbmcga2V5IGZvciB0aGUgaHViIQ=="
    return which


@pytest.mark.parametrize(("case", "argv", "env", "expected"), ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_are_one_clear_line(  # pylint: disable=too-many-arguments
    hub: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    case: str,
    argv: Any,
    env: dict[str, str],
    expected: str,
) -> None:
    before = agent_desired("lobby")
    for name, value in env.items():
        monkeypatch.setenv(name, _connection(hub, value))
    code, summary, err = deploy(capsys, *argv(tmp_path))
    assert code == 2 and summary is None, case
    assert expected in err and "Traceback" not in err
    assert err.count("\n") == 1  # one line
    monkeypatch.setenv("IOTHUB_CONNECTION_STRING", hub["IOTHUB_CONNECTION_STRING"])
    assert agent_desired("lobby") == before  # nothing was deployed
