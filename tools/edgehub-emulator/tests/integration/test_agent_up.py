"""`edgehub-emulator up`: every module of the manifest runs as a process with the environment of a device."""

from __future__ import annotations

import json
import re
from typing import Iterator

import pytest

from .conftest import MODULE_LINE, UpProcess, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
STARTED = ("echo", "crashy", "flaky", "done", "oneshot")


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpProcess]:
    """One `up` for the tests of this file; SIGTERM at the end (test_agent_stop.py checks that part)."""
    proc = UpProcess(tmp_path_factory.mktemp("up"))
    proc.start()
    yield proc
    if proc.process and proc.process.poll() is None:
        proc.process.terminate()
        proc.process.wait(30)
    proc.kill_leftovers()


def _runs(up: UpProcess, module: str) -> list[str]:
    return [line for line in up.lines(module) if line.startswith("run pid ")]


def test_module_gets_the_environment_of_a_device(up: UpProcess) -> None:
    env = json.loads(up.line("echo", "env "))
    edge = json.loads(up.cli("env", "echo", "--workload", "--format", "json").stdout)
    assert env["cwd"] == str(up.solution / "modules" / "echo")
    # as on a device: only the manifest's env, its placeholders expanded from .env and the shell (.env wins);
    # nothing else of .env or the shell reaches the module
    assert env["GREETING"] == "hello from the manifest"
    assert env["OVERRIDDEN"] == "manifest"
    assert env["FROM_DOTENV"] is None and env["DOTENV_OVER_SHELL"] is None and env["FROM_SHELL"] is None
    assert env["FROM_PLACEHOLDER_DOTENV"] == "dotenv placeholder"
    assert env["FROM_PLACEHOLDER_SHELL"] == "shell placeholder"
    assert env["UNKNOWN_PLACEHOLDER"] == "$NOT_DEFINED_ANYWHERE"
    # the edge environment of the IOTEDGE_* (workload API) path, as edgeAgent sets it; no simulator leftovers
    assert env["EdgeHubConnectionString"] is None and env["EdgeModuleCACertificateFile"] is None
    iotedge = {k: v for k, v in env.items() if k.startswith("IOTEDGE_")}
    assert iotedge == {k: v for k, v in edge.items() if k.startswith("IOTEDGE_")}
    assert iotedge["IOTEDGE_MODULEID"] == "echo" and iotedge["IOTEDGE_DEVICEID"] == "edge-device"
    assert iotedge["IOTEDGE_WORKLOADURI"] == f"http://127.0.0.1:{up.workload_port}/"


def test_echo_answers_a_method_invoked_through_the_cli(up: UpProcess) -> None:
    up.line("echo", "ready pid ")
    result = up.cli("invoke", "edge-device", "echo", "echo", "--payload", '{"n": 7, "text": "hi"}')
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"status": 200, "payload": {"n": 7, "text": "hi"}}
    assert up.line("echo", "method echo ") == '{"n": 7, "text": "hi"}'


@pytest.mark.parametrize(("status", "exit_status"), [(201, 0), (400, 1), (404, 1), (500, 1)])
def test_invokes_exit_status_follows_the_methods_status(up: UpProcess, status: int, exit_status: int) -> None:
    up.line("echo", "ready pid ")
    payload = json.dumps({"answerStatus": status})
    result = up.cli("invoke", "edge-device", "echo", "echo", "--payload", payload)
    assert result.returncode == exit_status, result
    assert json.loads(result.stdout)["status"] == status


def test_invoking_a_module_that_is_not_there_is_exit_status_2(up: UpProcess) -> None:
    result = up.cli("invoke", "edge-device", "no-such-module", "echo")
    assert result.returncode == 2 and result.stdout == "", result


def test_restart_policy_decides_what_happens_after_an_exit(up: UpProcess) -> None:
    # always restarts even a clean exit; on-failure restarts a non-zero exit (backoff 1 s, then 2 s)
    wait_for(lambda: len(_runs(up, "crashy")) >= 3 and len(_runs(up, "flaky")) >= 3, 60)
    assert len(set(_runs(up, "crashy"))) == len(_runs(up, "crashy"))  # a new process (pid) every run
    # on-failure leaves a clean exit alone; never leaves any exit alone; status "stopped" never starts
    assert _runs(up, "done") == [_runs(up, "done")[0]] and _runs(up, "done")[0].endswith("exit 0")
    assert _runs(up, "oneshot") == [_runs(up, "oneshot")[0]] and _runs(up, "oneshot")[0].endswith("exit 3")
    assert up.lines("disabled") == [] and "disabled module ran" not in up.stdout()
    log = up.stderr()
    assert "module oneshot exited with 3; not restarted (restartPolicy never)" in log
    assert "module done exited with 0; not restarted (restartPolicy on-failure)" in log
    assert re.search(r"module flaky exited with 3; restarting in \d+ s \(restartPolicy on-failure\)", log)


def test_every_output_line_is_prefixed_with_its_module_name(up: UpProcess) -> None:
    up.line("echo", "ready pid ")
    wait_for(lambda: all(_runs(up, name) for name in STARTED if name != "echo"))
    hub_lines, module_lines = [], []
    for line in up.stdout().splitlines():
        (hub_lines if line.startswith(("SERVICE_API=", "REQUESTS_CA_BUNDLE=")) else module_lines).append(line)
    assert len(hub_lines) == 2
    matches = [MODULE_LINE.match(line) for line in module_lines]
    assert all(matches), [line for line, m in zip(module_lines, matches) if not m]
    assert {m["name"] for m in matches if m} == set(STARTED)
    assert len({line.index(" | ") for line in module_lines}) == 1  # names padded to one column


def test_hub_output_never_holds_a_key(up: UpProcess) -> None:
    up.line("echo", "ready pid ")
    edge = json.loads(up.cli("env", "echo", "--format", "json").stdout)
    keys = {
        part.split("=", 1)[1]
        for name in ("IOTHUB_CONNECTION_STRING", "EdgeHubConnectionString")
        for part in edge[name].split(";")
        if part.startswith("SharedAccessKey=")
    }
    assert len(keys) == 2
    hub_output = "\n".join(line for line in up.stdout().splitlines() if not MODULE_LINE.match(line))
    for key in keys:
        assert key not in hub_output and key not in up.stderr()
    assert "SERVICE_API=https://localhost:" in hub_output


def test_desired_property_placeholders_expand_like_genconfig(up: UpProcess) -> None:
    result = up.cli("twin", "get", "edge-device", "echo")
    assert result.returncode == 0, result.stderr
    desired = json.loads(result.stdout)["properties"]["desired"]
    assert desired["name"] == "dotenv placeholder"
    assert desired["nested"] == {"from": "shell placeholder", "list": ["dotenv", 3]}
    assert desired["unknown"] == "$NOT_DEFINED_ANYWHERE"
