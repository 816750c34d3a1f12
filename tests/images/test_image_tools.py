"""The image tools without building anything: the lock reader and comparison of tools/images/images_check.py,
the bake file of tools/images/bake.py against every module.json (tags as iotedgedev gives them), and its refusal
when Docker or buildx is missing. The builds themselves run in `make images-check` (CI calls it)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "tools" / "images"
SOLUTION = ROOT / "iot-edge-solution"


def load(name: str):
    """A script of tools/images as a module (they are scripts, not an installed package)."""
    spec = importlib.util.spec_from_file_location(f"images_{name}", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


check = load("images_check")
bake = load("bake")


@pytest.mark.parametrize(
    ("marker", "python", "holds"),
    [
        ("python_full_version < '3.11'", "3.10", True),
        ("python_full_version < '3.11'", "3.11", False),
        ("python_full_version >= '3.11'", "3.12", True),
        ("sys_platform == 'win32'", "3.11", False),
        ("(platform_machine == 'arm64' and sys_platform == 'darwin') or sys_platform == 'linux'", "3.11", True),
        ("platform_machine == 'aarch64' and python_full_version < '3.11'", "3.10", False),
    ],
)
def test_marker_holds_for_linux_x86_64(marker: str, python: str, holds: bool) -> None:
    assert check.marker_holds(marker, python) is holds


def test_marker_that_cannot_be_evaluated_is_an_error() -> None:
    with pytest.raises(ValueError, match="cannot evaluate"):
        check.marker_holds("extra == 'x' or __import__('os')", "3.11")


def test_read_lock_applies_markers(tmp_path: Path) -> None:
    lock = tmp_path / "lock.txt"
    lock.write_text(
        "numpy==1.26.4 \\\n    --hash=sha256:aa\n"
        "Platform_Dirs==4.12.4 ; python_full_version < '3.11' \\\n    --hash=sha256:bb\n"
        "platformdirs==4.14.9 ; python_full_version >= '3.11' \\\n    --hash=sha256:cc\n"
        "pyreadline3==3.5.6 ; sys_platform == 'win32' \\\n    --hash=sha256:dd\n"
        "    # via coloredlogs\n",
        encoding="utf-8",
    )
    assert check.read_lock(lock, "3.11") == {"numpy": "1.26.4", "platformdirs": "4.14.9"}
    assert check.read_lock(lock, "3.10") == {"numpy": "1.26.4", "platform-dirs": "4.12.4"}


@pytest.mark.parametrize(
    ("installed", "expected"),
    [
        ({"numpy": "1.26.4", "pip": "24.0"}, []),
        ({"numpy": "2.4.6"}, ["numpy is 2.4.6, the lock says 1.26.4"]),
        ({}, ["numpy==1.26.4 is locked but not installed"]),
        ({"numpy": "1.26.4", "opencv-python": "4.14"}, ["opencv-python==4.14 is installed but not in the lock"]),
    ],
)
def test_lock_differences(installed: dict[str, str], expected: list[str]) -> None:
    assert check.lock_differences(installed, {"numpy": "1.26.4"}, {"pip"}) == expected


def test_every_module_and_the_devcontainer_are_checked() -> None:
    names = {t.name for t in check.module_targets()}
    assert names == {p.parent.name for p in SOLUTION.glob("modules/*/module.json")}
    for target in check.module_targets():
        assert target.dockerfile.name == "Dockerfile.amd64" and target.dockerfile.is_file()
        assert target.context == SOLUTION and target.lock.is_file()
    dev = check.devcontainer_target()
    assert dev.build_args == {"TARGETARCH": "amd64", "CUDA_SUPPORT": "nocuda"} and dev.target == "base"
    assert check.external_bases(dev) == ["node:22.11.0-bookworm-slim", "python:3.11.9-slim-bookworm"]


@pytest.mark.parametrize("container_tag", ["", "20260101"])
def test_bake_file_matches_every_module_json(container_tag: str) -> None:
    variables = {"CONTAINER_REGISTRY_SERVER": "Example.azurecr.io", "CONTAINER_TAG": container_tag}
    result = bake.bake_file({"linux/amd64", "linux/arm64"}, variables)
    targets = result["target"]
    expected = set()
    for path in SOLUTION.glob("modules/*/module.json"):
        module = json.loads(path.read_text(encoding="utf-8"))
        version = module["image"]["tag"]["version"]
        for platform, dockerfile in module["image"]["tag"]["platforms"].items():
            name = f"{path.parent.name}-{platform.replace('.', '-')}"
            expected.add(name)
            target = targets[name]
            suffix = f"-{container_tag}" if container_tag else ""
            # iotedgedev: "{repository.lower()}:{version}{-CONTAINER_TAG}-{platform}"
            assert target["tags"] == [f"example.azurecr.io/{path.parent.name}:{version}{suffix}-{platform}"]
            assert (ROOT / target["context"] / target["dockerfile"]).resolve() == (path.parent / dockerfile).resolve()
            assert target["platforms"] == ["linux/arm64" if platform.startswith("arm64") else "linux/amd64"]
    assert {n for n in targets if not n.startswith("devcontainer-")} == expected
    assert {n for n in targets if n.startswith("devcontainer-")} == {
        "devcontainer-amd64-nocuda",
        "devcontainer-amd64-cuda",
        "devcontainer-arm64-nocuda",
        "devcontainer-arm64-cuda",
    }
    assert sorted(result["group"]["default"]["targets"]) == sorted(targets)


def test_bake_file_keeps_only_the_platforms_asked_for() -> None:
    targets = bake.bake_file({"linux/arm64"}, {"CONTAINER_REGISTRY_SERVER": "r"})["target"]
    assert targets and all(t["platforms"] == ["linux/arm64"] for t in targets.values())
    assert "classifier-arm64v8-debug" in targets and "classifier-amd64" not in targets


def test_bake_without_registry_names_the_variable() -> None:
    with pytest.raises(SystemExit, match="CONTAINER_REGISTRY_SERVER is not set"):
        bake.bake_file({"linux/amd64"}, {})


def _run_bake(path_dirs: list[Path], *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": os.pathsep.join(str(p) for p in path_dirs)}
    return subprocess.run(
        [sys.executable, str(TOOLS / "bake.py"), *args], capture_output=True, text=True, env=env, check=False
    )


def test_images_refuses_without_docker(tmp_path: Path) -> None:
    done = _run_bake([tmp_path], "--platforms", "linux/amd64")
    assert done.returncode == 2
    assert "docker is not installed" in done.stderr


def test_images_refuses_without_buildx(tmp_path: Path) -> None:
    # A docker CLI without the buildx plugin answers `docker buildx version` with an error, as this one does.
    docker = tmp_path / "docker"
    docker.write_text("#!/bin/sh\necho \"docker: 'buildx' is not a docker command.\" >&2\nexit 1\n")
    docker.chmod(0o755)
    done = _run_bake([tmp_path], "--platforms", "linux/amd64")
    assert done.returncode == 2
    assert "docker buildx is missing" in done.stderr


def test_images_rejects_an_unknown_platform(tmp_path: Path) -> None:
    done = _run_bake([tmp_path], "--platforms", "linux/s390x")
    assert done.returncode == 2 and "unknown platform" in done.stderr


def test_images_check_refuses_without_buildah(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(TOOLS / "images_check.py"), "--no-devcontainer"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 2
    assert "buildah is not installed" in done.stderr


def test_make_images_check_fails_loudly_without_its_tools(tmp_path: Path) -> None:
    """The Makefile target names the missing tools and exits non-zero (CI=true must never pass without them)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "sh", "make", "cat", "python3", "dirname", "readlink"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    done = subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "images-check"],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": str(bin_dir), "CI": "true"},
        check=False,
    )
    assert done.returncode != 0
    assert "images-check needs: buildah debootstrap unshare" in done.stderr
