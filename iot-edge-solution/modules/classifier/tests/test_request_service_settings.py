"""The classifier's two-factor settings as a process: off with one log line without MODULE_KEY (the local job
runs), clear start-up errors for a bad key or a key without Storage, and a secret never printed. The request
service itself is tested in edgevision's integration tests and in tests/e2e."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import pytest

MODULE = Path(__file__).resolve().parents[1] / "main.py"
SOLUTION = Path(__file__).resolve().parents[3]
KEEP = ("PATH", "HOME", "LANG", "SYSTEMROOT", "TMPDIR")
KEY = base64.b64encode(bytes(range(32))).decode()


def run_module(**env: str) -> subprocess.CompletedProcess:
    """Run main.py to its end with a clean environment plus `env`, and a model store of its own."""
    clean = {k: v for k, v in os.environ.items() if k in KEEP}
    with tempfile.TemporaryDirectory() as store:
        return subprocess.run([sys.executable, str(MODULE)],
                              env={**clean, "LOG_LEVEL": "INFO", "MODEL_STORE": store, **env},
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


@pytest.fixture(scope="module")
def short_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four frames of the bundled coffee photo."""
    coffee = cv2.imread(str(SOLUTION / "media" / "coffee.png"))
    assert coffee is not None, "media/coffee.png is missing"
    path = tmp_path_factory.mktemp("video") / "coffee.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (coffee.shape[1], coffee.shape[0]))
    for _ in range(4):
        writer.write(coffee)
    writer.release()
    return path


def test_without_module_key_the_request_service_is_off_and_says_so_once(short_video: Path) -> None:
    completed = run_module(CAMERA_PATH=str(short_video), LOOP_VIDEO="False")
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr.count("two-factor request service off: MODULE_KEY is not set") == 1
    assert "processed 4 frames" in completed.stdout


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"MODULE_KEY": KEY}, "STORAGE_CONNECTION_STRING must be set when MODULE_KEY is set"),
        (
            {"MODULE_KEY": "dG9vIHNob3J0", "STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true"},
            "MODULE_KEY: MODULE_KEY must decode to at least 32 bytes",
        ),
        (
            {"MODULE_KEY": "not base64!", "STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true"},
            "MODULE_KEY: MODULE_KEY is not valid base64",
        ),
        (
            {
                "MODULE_KEY": KEY,
                "STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true",
                "RESULT_CONTAINER": "Results_2026",
            },
            "RESULT_CONTAINER='Results_2026': must be 3..63 lower-case",
        ),
        (
            {"MODULE_KEY": KEY, "STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true", "MAX_DEQUEUE_COUNT": "0"},
            "MAX_DEQUEUE_COUNT='0'",
        ),
    ],
)
def test_bad_two_factor_settings_stop_start_up_naming_the_variable(
    short_video: Path, env: dict[str, str], expected: str
) -> None:
    completed = run_module(CAMERA_PATH=str(short_video), LOOP_VIDEO="False", **env)
    assert completed.returncode == 2
    assert expected in completed.stderr
    for secret in (KEY, "dG9vIHNob3J0", "not base64!"):
        assert secret not in completed.stderr + completed.stdout
