"""One set of pinned versions everywhere: every image's lock file (iot-edge-solution/requirements/*.txt) holds the
versions of requirements/lock.txt (the .venv's); every module Dockerfile and the dev container install from those
files with hashes checked and install nothing unpinned; USER names no group (so the runtime applies the user's
supplementary groups, video for cameras); a .debug Dockerfile adds only the debugger to its image."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOLUTION = ROOT / "iot-edge-solution"
LOCKS = sorted((SOLUTION / "requirements").glob("*.txt"))
MODULE_DOCKERFILES = sorted((SOLUTION / "modules").glob("*/Dockerfile.*"))
ALL_DOCKERFILES = [ROOT / ".devcontainer" / "Dockerfile", *MODULE_DOCKERFILES]
# Only in the GPU images' file: pycuda and what it needs (it does not build without CUDA, so not in .venv).
GPU_ONLY = {"pycuda", "pytools", "mako", "markupsafe", "siphash24"}

_spec = importlib.util.spec_from_file_location("images_check_static", ROOT / "tools" / "images" / "images_check.py")
check = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = check
_spec.loader.exec_module(check)


def instructions(path: Path) -> list[str]:
    """Instructions with continuations joined, comments dropped."""
    text = re.sub(r"^\s*#.*\n", "", path.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return [" ".join(i.split()) for i in re.sub(r"\\\n", " ", text).splitlines() if i.strip()]


@pytest.mark.parametrize("lock", LOCKS, ids=lambda p: p.name)
@pytest.mark.parametrize("python", ["3.10", "3.11", "3.12"])
def test_image_lock_versions_are_the_venv_lock_versions(lock: Path, python: str) -> None:
    main = check.read_lock(ROOT / "requirements" / "lock.txt", python)
    image = check.read_lock(lock, python)
    assert image, f"{lock.name} pins nothing for Python {python}"
    for name, version in image.items():
        if name in GPU_ONLY and lock.name == "classifier-gpu.txt":
            continue
        assert main.get(name) == version, f"{lock.name}: {name}=={version}, requirements/lock.txt: {main.get(name)}"


@pytest.mark.parametrize("lock", [ROOT / "requirements" / "lock.txt", *LOCKS], ids=lambda p: p.name)
def test_every_pin_has_hashes(lock: Path) -> None:
    text = lock.read_text(encoding="utf-8")
    pins = re.findall(r"^[A-Za-z0-9][^\n]*==[^\n]*\\\n(\s+--hash=sha256:[0-9a-f]{64})", text, re.MULTILINE)
    assert len(pins) == len(re.findall(r"^[A-Za-z0-9][^\s]*==", text, re.MULTILINE)) > 0


def test_modules_without_a_model_lock_no_vision_stack() -> None:
    for name in ("authrequest", "alert"):
        pins = check.read_lock(SOLUTION / "requirements" / f"{name}.txt", "3.11")
        assert not {"numpy", "opencv-python-headless", "onnxruntime", "ai-edge-litert"} & set(pins), name
    classifier = check.read_lock(SOLUTION / "requirements" / "classifier.txt", "3.11")
    assert {"numpy", "opencv-python-headless", "onnxruntime", "ai-edge-litert"} <= set(classifier)
    assert classifier["ai-edge-litert"] == "2.3.0"


@pytest.mark.parametrize("path", ALL_DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_dockerfile_installs_only_from_the_lock(path: Path) -> None:
    pip_runs = [i for i in instructions(path) if i.startswith("RUN") and "pip install" in i]
    assert pip_runs, f"{path.name} installs no Python package"
    for run in pip_runs:
        for command in re.findall(r"pip install ([^&;]*)", run):
            words = command.split()
            if "--require-hashes" in words:
                assert "--no-deps" in words and "-r" in words, run
                requirement = words[words.index("-r") + 1]
                copied = [i for i in instructions(path) if i.startswith("COPY") and i.endswith(requirement)]
                assert copied and "requirements/" in copied[-1], f"{requirement} is not copied from a lock file"
            else:
                # The project's own library, from the build context, without dependencies.
                assert words[-1] == "/app/libs/edgevision" and "--no-deps" in words, run


@pytest.mark.parametrize("path", ALL_DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_user_names_no_group(path: Path) -> None:
    users = [i.split(None, 1)[1] for i in instructions(path) if i.startswith("USER ")]
    assert users, f"{path.name} runs as root"
    assert ":" not in users[-1], f"{path.name}: USER {users[-1]} names a group: the video group would not apply"


@pytest.mark.parametrize("path", sorted((SOLUTION / "modules").glob("*/Dockerfile.*.debug")), ids=lambda p: p.name)
def test_debug_variant_adds_only_the_debugger(path: Path) -> None:
    release = instructions(path.with_name(path.name[: -len(".debug")]))
    debug = instructions(path)
    debugger = ["COPY requirements/debug.txt /tmp/debug.txt"]
    added = [i for i in debug if i not in release]
    removed = [i for i in release if i not in debug]
    # The debugger, its port, DEBUG logs, and the command under debugpy: nothing else.
    assert all(
        i in debugger or "debug.txt" in i or "5678" in i or "LOG_LEVEL=DEBUG" in i or i.startswith("ENV ")
        for i in added
    ), added
    assert all(i.startswith(("CMD", "EXPOSE", "ENV ")) for i in removed), removed
    assert (SOLUTION / "requirements" / "debug.txt").read_text(encoding="utf-8").count("==") == 1
