"""Static checks of the dev container and VS Code files: they parse, and every file, Makefile target, task and
folder they name exists."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEVCONTAINER = ROOT / ".devcontainer"
MODULE_DIRS = sorted(p.parent for p in (ROOT / "iot-edge-solution" / "modules").glob("*/main.py"))


def _images_check() -> Any:
    """tools/images/images_check.py, whose JSONC reader (devcontainer.json) these tests share."""
    spec = importlib.util.spec_from_file_location("images_check", ROOT / "tools" / "images" / "images_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


strip_jsonc = _images_check().strip_jsonc


def load_jsonc(path: Path) -> Any:
    """A VS Code JSON file."""
    return json.loads(strip_jsonc(path.read_text(encoding="utf-8")))


def make_targets() -> set[str]:
    """The Makefile's rule names."""
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, flags=re.MULTILINE))


def substitute(value: str, folder: Path) -> Path:
    """A VS Code path with ${workspaceFolder} to a path on disk."""
    return Path(os.path.normpath(value.replace("${workspaceFolder}", str(folder))))


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"a": 1, // note\n "b": "x//y",}', {"a": 1, "b": "x//y"}),
        ('/* head */ {"a": [1, 2,], "b": "\\"//\\""}', {"a": [1, 2], "b": '"//"'}),
    ],
)
def test_strip_jsonc(text: str, expected: Any) -> None:
    assert json.loads(strip_jsonc(text)) == expected


def compose() -> dict[str, Any]:
    """The dev container compose file."""
    return yaml.safe_load((DEVCONTAINER / "docker-compose.yml").read_text(encoding="utf-8"))


def test_compose_builds_the_dev_container_from_the_stage_matrix() -> None:
    dev = compose()["services"]["dev"]
    build = dev["build"]
    context = (DEVCONTAINER / build["context"]).resolve()
    assert context == ROOT
    assert (context / build["dockerfile"]).is_file()
    assert build["target"] == "base"
    assert build["args"]["TARGETARCH"] == "${TARGETARCH:-amd64}"
    assert build["args"]["CUDA_SUPPORT"] == "${CUDA_SUPPORT:-nocuda}"
    assert dev["platform"] == "linux/${TARGETARCH:-amd64}"
    assert dev["sysctls"]["net.ipv4.ip_unprivileged_port_start"] == "0", "the emulator binds 443 as non-root"
    assert "/dev/video0:/dev/video0" in (DEVCONTAINER / "docker-compose.yml").read_text(encoding="utf-8")


def test_compose_has_azurite() -> None:
    azurite = compose()["services"]["azurite"]
    assert re.fullmatch(r"mcr\.microsoft\.com/azure-storage/azurite:\d+\.\d+\.\d+", azurite["image"])


def test_gpu_override_reserves_nvidia_gpus() -> None:
    gpu = yaml.safe_load((DEVCONTAINER / "docker-compose.gpu.yml").read_text(encoding="utf-8"))
    devices = gpu["services"]["dev"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    jetson = yaml.safe_load((DEVCONTAINER / "docker-compose.jetson.yml").read_text(encoding="utf-8"))
    assert jetson["services"]["dev"]["runtime"] == "nvidia"


def test_devcontainer_json() -> None:
    config = load_jsonc(DEVCONTAINER / "devcontainer.json")
    for name in config["dockerComposeFile"]:
        assert (DEVCONTAINER / name).is_file()
    assert config["service"] in compose()["services"]
    for script in (config["initializeCommand"], config["postCreateCommand"]):
        path = script.split()[-1]
        assert (ROOT / path).is_file(), f"{path} is missing"
    assert {8000, 8080, 5012, 8443, 8883} <= set(config["forwardPorts"])
    vscode = config["customizations"]["vscode"]
    assert {
        "ms-python.python",
        "ms-python.vscode-pylance",
        "ms-azuretools.vscode-docker",
        "vsciot-vscode.azure-iot-edge",
    } <= set(vscode["extensions"])
    assert vscode["settings"]["python.testing.pytestEnabled"] is True


def test_post_create_runs_the_make_setup() -> None:
    script = (DEVCONTAINER / "post-create.sh").read_text(encoding="utf-8")
    targets = make_targets()
    for target in re.findall(r"^make ([\w-]+)", script, flags=re.MULTILINE):
        assert target in targets
    assert "make setup" in script


def test_tasks_call_existing_make_targets() -> None:
    tasks = load_jsonc(ROOT / ".vscode" / "tasks.json")["tasks"]
    labels = {t["label"] for t in tasks}
    assert {"lint", "test", "coverage", "run"} <= labels
    targets = make_targets()
    for task in tasks:
        match = re.match(r"make ([\w-]+)", task["command"])
        assert match, f"task {task['label']} does not call make"
        assert match.group(1) in targets, f"task {task['label']}: no Makefile target {match.group(1)}"
        for dependency in task.get("dependsOn", []):
            assert dependency in labels, f"task {task['label']} depends on unknown task {dependency}"


def check_launch(path: Path, folder: Path, task_labels: set[str]) -> None:
    """Every path, mapping, test folder and task a launch.json names exists."""
    configurations = load_jsonc(path)["configurations"]
    assert configurations
    for config in configurations:
        for key in ("program", "cwd"):
            if key in config and "${file}" not in config[key] and ".venv" not in config[key]:
                assert substitute(config[key], folder).exists(), f"{path}: {config['name']}: {key} is missing"
        for mapping in config.get("pathMappings", []):
            assert substitute(mapping["localRoot"], folder).is_dir()
        if config.get("module") == "pytest":
            for arg in config.get("args", []):
                cwd = substitute(config.get("cwd", "${workspaceFolder}"), folder)
                assert (cwd / arg).exists(), f"{path}: {config['name']}: {arg} is missing"
        if "preLaunchTask" in config:
            assert config["preLaunchTask"] in task_labels


def test_root_launch_configurations_point_at_existing_files() -> None:
    labels = {t["label"] for t in load_jsonc(ROOT / ".vscode" / "tasks.json")["tasks"]}
    check_launch(ROOT / ".vscode" / "launch.json", ROOT, labels)
    names = {c["name"] for c in load_jsonc(ROOT / ".vscode" / "launch.json")["configurations"]}
    for module in MODULE_DIRS:
        assert any(n.startswith(f"{module.name}:") and "tests" in n for n in names)
        assert any(n.startswith(f"{module.name}:") and "attach" in n for n in names)


@pytest.mark.parametrize("module_dir", MODULE_DIRS, ids=lambda p: p.name)
def test_every_module_has_its_own_vscode_folder(module_dir: Path) -> None:
    check_launch(module_dir / ".vscode" / "launch.json", module_dir, set())
    settings = load_jsonc(module_dir / ".vscode" / "settings.json")
    assert settings["python.testing.pytestEnabled"] is True
    interpreter = substitute(settings["python.defaultInterpreterPath"], module_dir)
    assert interpreter.parent.parent == ROOT / ".venv"


def test_workspace_has_a_folder_per_module_library_emulator_and_root() -> None:
    workspace = load_jsonc(ROOT / "workspace.code-workspace")
    folders = {(ROOT / f["path"]).resolve() for f in workspace["folders"]}
    expected = {ROOT, ROOT / "iot-edge-solution" / "libs" / "edgevision", ROOT / "tools" / "edgehub-emulator"}
    expected |= set(MODULE_DIRS)
    assert {p.resolve() for p in expected} <= folders
    for folder in folders:
        assert folder.is_dir()
    assert workspace["settings"]["python.testing.pytestEnabled"] is True


def test_env_template_documents_every_variable_with_a_comment() -> None:
    lines = (ROOT / ".env_template").read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^[A-Z_][A-Z0-9_]*=", line):
            assert lines[index - 1].startswith("#"), f".env_template: {line.split('=')[0]} has no comment above it"


def test_env_template_lists_every_module_setting() -> None:
    # pylint: disable=import-outside-toplevel
    from edgevision.alerts import AlertSettings
    from edgevision.config import VisionSettings
    from edgevision.detections import DetectionsSettings
    from edgevision.preview import PreviewSettings
    from edgevision.twofactor import AuthRequestSettings

    text = (ROOT / ".env_template").read_text(encoding="utf-8")
    listed = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", text, re.MULTILINE))
    fields = {}
    for settings_class in (VisionSettings, AuthRequestSettings, DetectionsSettings, PreviewSettings, AlertSettings):
        fields.update(settings_class.model_fields)
    missing = sorted(name.upper() for name in fields if name.upper() not in listed)
    assert not missing, f".env_template does not document {missing}"


GUIDES = ["amd64-nvidia-gpu.md", "amd64-cpu.md", "arm64-apple-silicon.md", "jetson.md", "codespaces.md"]


@pytest.mark.parametrize("guide", GUIDES)
def test_getting_started_guide_covers_the_inner_loop(guide: str) -> None:
    text = (ROOT / "getting-started" / guide).read_text(encoding="utf-8")
    for topic in ("Prerequisites", "make run", "make test", "CAMERA_PATH", "USE_TENSOR_RT", "IoT Hub"):
        assert topic in text, f"{guide} does not cover {topic}"
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            assert (ROOT / "getting-started" / target).resolve().exists(), f"{guide}: broken link {target}"


def test_getting_started_index_links_every_guide() -> None:
    index = (ROOT / "getting-started" / "README.md").read_text(encoding="utf-8")
    for guide in GUIDES:
        assert f"]({guide})" in index
