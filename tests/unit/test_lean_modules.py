"""authrequest and alert install edgevision without its `vision` extra (their images hold neither OpenCV nor ONNX
Runtime nor NumPy): each module's main.py imports and runs to its first check of the environment with those
packages made unimportable, as in its image."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULES = ROOT / "iot-edge-solution" / "modules"
# The `vision` and `tflite` extras of edgevision (libs/edgevision/pyproject.toml).
VISION_PACKAGES = ("numpy", "cv2", "onnxruntime", "ai_edge_litert", "starlette", "uvicorn", "prometheus_client")

RUNNER = textwrap.dedent(
    """
    import importlib.abc, importlib.util, sys
    BLOCKED = set(sys.argv[2].split(","))

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"{name} is not installed in this image", name=name)
            return None

    sys.meta_path.insert(0, Blocker())
    spec = importlib.util.spec_from_file_location("module_main", sys.argv[1])
    main = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(main)
    sys.exit(main.main())
    """
)


def run_module(name: str, blocked: tuple[str, ...], env: dict[str, str]) -> subprocess.CompletedProcess:
    """The module's main() with the `blocked` top-level packages unimportable, and no IoT Edge or Storage env."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("IOTEDGE_", "MODULE_KEY", "STORAGE_"))}
    return subprocess.run(
        [sys.executable, "-c", RUNNER, str(MODULES / name / "main.py"), ",".join(blocked)],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=60,
        check=False,
        cwd=MODULES / name,
    )


def test_authrequest_runs_without_the_vision_stack() -> None:
    done = run_module("authrequest", VISION_PACKAGES, {})
    output = done.stdout + done.stderr
    assert "not installed in this image" not in output and "Traceback" not in output, output
    # It got as far as its settings: the two it needs are named.
    assert done.returncode == 2 and "MODULE_KEY" in output, output


def test_alert_runs_without_the_vision_stack(tmp_path: Path) -> None:
    """alert starts its service without IoT Edge (saying so), then ends cleanly on SIGTERM."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("IOTEDGE_")}
    with subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(MODULES / "alert" / "main.py"), ",".join(VISION_PACKAGES)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**clean, "ALERT_QUEUE_DIR": str(tmp_path)},
        cwd=MODULES / "alert",
    ) as process:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "alert module running" in line:
                process.send_signal(signal.SIGTERM)
        code = process.wait(30)
    output = "".join(lines)
    assert "not installed in this image" not in output and "Traceback" not in output, output
    assert "alert module running" in output and code == 0, output


def test_the_blocker_does_block() -> None:
    """The same runner fails on the classifier, which needs the vision stack: the blocking is real."""
    done = run_module("classifier", VISION_PACKAGES, {})
    assert done.returncode != 0
    assert "is not installed in this image" in done.stderr
