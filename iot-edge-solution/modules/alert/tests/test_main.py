"""The alert module as a process: clear start-up errors for bad settings, a clean stop on SIGTERM without edgeHub."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

MODULE = Path(__file__).resolve().parents[1] / "main.py"
KEEP = ("PATH", "HOME", "LANG", "SYSTEMROOT", "TMPDIR")


def module_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """A clean environment (no edge variables: IoT Hub features off), the queue in a temporary folder."""
    env = {k: v for k, v in os.environ.items() if k in KEEP}
    env.update(PYTHONUNBUFFERED="1", LOG_LEVEL="INFO", ALERT_QUEUE_DIR=str(tmp_path / "queue"))
    env.update(overrides)
    return env


@pytest.mark.parametrize(
    "env, fragments",
    [
        ({"ALERT_MIN_CONFIDENCE": "60"}, ["ALERT_MIN_CONFIDENCE='60'", "less than or equal to 1"]),
        ({"ALERT_COOLDOWN_SECONDS": "-5"}, ["ALERT_COOLDOWN_SECONDS='-5'"]),
        ({"ALERT_MIN_CONSECUTIVE_FRAMES": "0"}, ["ALERT_MIN_CONSECUTIVE_FRAMES='0'"]),
        ({"ALERT_CLASSES": ","}, ["ALERT_CLASSES", "at least one class"]),
        ({"ALERT_QUEUE_MAX": "lots"}, ["ALERT_QUEUE_MAX='lots'"]),
        ({"ALERT_SOMETHING": "1"}, []),  # unknown variables in the environment are not settings: ignored
        ({"LOG_LEVEL": "LOUD"}, ["LOG_LEVEL='LOUD'"]),
        ({"ALERT_WEBHOOK_URL": "ftp://host/x?sig=SECRET"}, ["webhook URL must be http(s)"]),
    ],
)
def test_bad_settings_stop_start_up_with_a_message_naming_the_variable(
    env: dict[str, str], fragments: list[str], tmp_path: Path
) -> None:
    with subprocess.Popen(
        [sys.executable, str(MODULE)],
        env=module_env(tmp_path, **env),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:
        if not fragments:  # starts fine: stop it
            time.sleep(2)
            process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    if fragments:
        assert process.returncode == 2, err
        for fragment in fragments:
            assert fragment in err
        assert "SECRET" not in out + err
    else:
        assert process.returncode == 0, err


def test_without_edgehub_it_says_so_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, str(MODULE)],
        env=module_env(tmp_path),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:
        try:
            deadline = time.monotonic() + 60
            lines = []
            assert process.stderr is not None
            while time.monotonic() < deadline:
                line = process.stderr.readline()
                lines.append(line)
                if "alert module running" in line:
                    break
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=30)
        finally:
            process.kill()
    text = "".join(lines) + err
    assert process.returncode == 0, text
    assert "IoT Hub features are off" in text and "received SIGTERM" in text
    assert "alert rules from the environment: [{'class': '*', 'minConfidence': 0.6" in text
