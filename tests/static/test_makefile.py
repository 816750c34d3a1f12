"""The Makefile as a user runs it: choosing a Python, what `clean` removes, what `help` lists. Each test runs
`make` itself, on a scratch VENV where it could create or remove something."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def make(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`make ARGS` in the repository root, without the caller's make variables."""
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE") and k not in ("PYTHON", "VENV")}
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        env={**clean_env, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def fake_python(folder: Path, version: str) -> Path:
    """A stand-in interpreter that reports `version` (only one Python is installed where the tests run)."""
    path = folder / f"python{version}"
    path.write_text(f'#!/bin/sh\necho "$0 {version}"\n', encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def this_python_id() -> str:
    """What the Makefile records for the interpreter running the tests."""
    return f"{os.path.realpath(sys.executable)} {sys.version_info[0]}.{sys.version_info[1]}.{sys.version_info[2]}"


def finished_venv(folder: Path, recorded: str) -> Path:
    """A scratch VENV whose stamp records `recorded` and is newer than every set-up input."""
    venv = folder / "venv"
    venv.mkdir()
    stamp = venv / ".setup-done"
    stamp.write_text(recorded + "\n", encoding="utf-8")
    future = time.time() + 3600
    os.utime(stamp, (future, future))
    return venv


@pytest.mark.parametrize(
    "python, expected_error",
    [
        ("/nonexistent/python3", "PYTHON=/nonexistent/python3 is not a Python interpreter on PATH"),
        ("{fake:3.9.18}", "is Python 3.9; this project needs 3.10 3.11 3.12"),
        ("{fake:3.13.1}", "is Python 3.13; this project needs 3.10 3.11 3.12"),
    ],
)
def test_setup_refuses_an_unsupported_python_before_building_anything(
    tmp_path: Path, python: str, expected_error: str
) -> None:
    if python.startswith("{fake:"):
        python = str(fake_python(tmp_path, python.removeprefix("{fake:").removesuffix("}")))
    venv = tmp_path / "venv"
    result = make("setup", f"PYTHON={python}", f"VENV={venv}")
    assert result.returncode != 0
    assert expected_error in result.stderr
    assert "make setup PYTHON=python3.12" in result.stderr  # says how to choose another
    assert not venv.exists(), "no half-built environment is left behind"


def test_setup_is_up_to_date_with_the_recorded_interpreter(tmp_path: Path) -> None:
    venv = finished_venv(tmp_path, this_python_id())
    assert make("-q", "setup", f"PYTHON={sys.executable}", f"VENV={venv}").returncode == 0


def test_another_python_on_the_command_line_sets_up_again(tmp_path: Path) -> None:
    other = fake_python(tmp_path, "3.12.1")
    venv = finished_venv(tmp_path, this_python_id())
    assert make("-q", "setup", f"PYTHON={other}", f"VENV={venv}").returncode == 1  # 1: not up to date


def test_a_plain_make_keeps_the_interpreter_the_venv_was_built_with(tmp_path: Path) -> None:
    """`make test` after `make setup PYTHON=python3.12` keeps 3.12, whatever `python3` is."""
    recorded = fake_python(tmp_path, "3.12.1")
    venv = finished_venv(tmp_path, f"{recorded} 3.12.1")
    assert make("-q", "setup", f"VENV={venv}").returncode == 0


def test_an_unfinished_setup_is_redone(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)  # what a failed pip install leaves: a folder without the stamp
    assert make("-q", "setup", f"VENV={venv}", f"PYTHON={sys.executable}").returncode == 1


def test_clean_removes_every_environment_and_local_state() -> None:
    result = make("-n", "clean")
    assert result.returncode == 0, result.stderr
    removed = result.stdout.split()
    for path in (".venv", ".venv-iotedgedev", ".state", ".edgehub-emulator", "node_modules", "htmlcov", ".coverage"):
        assert path in removed, f"make clean leaves {path}"
    for path in ("iot-edge-solution/modules/classifier/.model-store", "iot-edge-solution/modules/alert/alert-queue"):
        assert path in removed, f"make clean leaves {path}, where earlier versions kept local state"


def test_reset_removes_the_local_state_and_keeps_the_environments() -> None:
    removed = make("-n", "reset").stdout.split()
    assert ".state" in removed and ".state/edgehub-emulator" in removed
    assert ".venv" not in removed and "node_modules" not in removed


def test_setup_holds_everything_make_test_needs_so_it_then_runs_offline() -> None:
    """After `make setup` alone, the set-up `make test` and `make run` do fetches nothing: it succeeds in a network
    namespace with no network (root, or an unprivileged user namespace with `unshare -r`)."""
    unshare = shutil.which("unshare")
    prefix = ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "-r", "--net"]
    works = unshare is not None and subprocess.run([*prefix, "true"], capture_output=True, check=False).returncode == 0
    if not works:  # a capability of the machine (a container may forbid namespaces), not a part of the solution
        pytest.skip("unshare --net cannot make a network namespace here (needs root or user namespaces)")
    assert make("setup").returncode == 0, "make setup (with the network) first"
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE") and k not in ("PYTHON", "VENV")}
    offline = subprocess.run(
        [*prefix, "make", "--no-print-directory", "setup", "test", "PYTEST_ARGS=--collect-only -q tests/static"],
        cwd=ROOT, env=clean_env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert offline.returncode == 0, offline.stdout[-3000:] + offline.stderr[-3000:]
    for needed in (".venv/.setup-done", ".venv-iotedgedev/.setup-done", "node_modules/.setup-done",
                   "tools/edgehub-emulator/tests/node/node_modules/.install-done"):  # fmt: skip
        assert (ROOT / needed).is_file(), f"make setup did not set up {needed}"
    for tool in ("npm ci", "pip install", "Collecting"):
        assert tool not in offline.stdout, f"the offline set-up ran {tool!r}:\n{offline.stdout[-3000:]}"


def test_help_lists_setup_and_what_lint_runs() -> None:
    text = make("help").stdout
    assert "make setup" in text
    lint = next(line for line in text.splitlines() if line.startswith("make lint"))
    for tool in ("pylint", "hadolint", "ruff format --check"):
        assert tool in lint


def test_lint_checks_the_formatting_with_the_pinned_ruff() -> None:
    result = make("-n", "lint", f"VENV={ROOT / '.venv'}")
    assert "ruff format --check" in result.stdout
    pins = (ROOT / "requirements-dev.txt").read_text(encoding="utf-8").splitlines()
    assert any(line.startswith("ruff==") for line in pins), "ruff must be pinned: a new release formats differently"
