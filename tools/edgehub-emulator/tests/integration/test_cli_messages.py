"""Client commands say in one line what is wrong and what to run: emulator down, never started, reset; `env` knows
which modules exist."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import FIXTURES, EmulatorProcess, cli_options, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DEVICE = "edge-device"
CLIENT_COMMANDS = [
    ("twin", "get", DEVICE, "receiver"),
    ("twin", "patch", DEVICE, "receiver", '{"x": 1}'),
    ("invoke", DEVICE, "receiver", "m"),
    ("monitor", "--once"),
    ("send-input", "receiver", "in1", '{"x": 1}'),
]


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgehub_emulator.cli", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _assert_one_line(result: subprocess.CompletedProcess[str], command: str, *parts: str) -> None:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"edgehub-emulator {command}: ")
    for part in parts:
        assert part in lines[0], lines[0]


@pytest.mark.parametrize("argv", CLIENT_COMMANDS, ids=lambda argv: argv[0] + "-" + argv[1])
def test_never_started(tmp_path: Path, argv: tuple[str, ...]) -> None:
    result = _run(*argv, *cli_options(tmp_path / "state", free_port(), free_port()))
    _assert_one_line(result, argv[0], "no emulator has run with the state folder", "edgehub-emulator start")


def test_down_and_after_reset(emulator: EmulatorProcess) -> None:
    emulator.stop()
    try:
        for argv in CLIENT_COMMANDS:
            _assert_one_line(emulator.cli(*argv, check=False), argv[0], "cannot reach the emulator", "is it running?")
        emulator.cli("reset")
        for argv in CLIENT_COMMANDS:
            _assert_one_line(emulator.cli(*argv, check=False), argv[0], "(never started, or reset)")
    finally:
        emulator.start()
    assert emulator.cli("twin", "get", DEVICE, "receiver").returncode == 0


def test_env_refuses_a_module_that_is_not_in_the_deployment(emulator: EmulatorProcess, tmp_path: Path) -> None:
    _assert_one_line(
        emulator.cli("env", "nosuch", check=False),
        "env",
        "module 'nosuch' is not in the deployment; known modules: receiver, sender",
    )
    fresh = cli_options(tmp_path / "fresh", free_port(), free_port())
    _assert_one_line(_run("env", "receiver", *fresh), "env", "no emulator state", "pass --manifest")
    manifest = str(FIXTURES / "deployment.json")
    assert "EdgeHubConnectionString=" in _run("env", "receiver", "--manifest", manifest, *fresh).stdout
    _assert_one_line(_run("env", "nosuch", "--manifest", manifest, *fresh), "env", "known modules: receiver, sender")
