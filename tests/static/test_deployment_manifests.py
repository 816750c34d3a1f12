"""The deployment templates are the single source of truth for modules, env, routes and desired properties:
check their shape, that the debug template matches, that .env_template defines every variable they use, and
that iotedgedev expands both for amd64, amd64.gpu and arm64v8."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

_BAKE_SPEC = importlib.util.spec_from_file_location(
    "images_bake", Path(__file__).resolve().parents[2] / "tools" / "images" / "bake.py"
)
BAKE = importlib.util.module_from_spec(_BAKE_SPEC)
sys.modules[_BAKE_SPEC.name] = BAKE
_BAKE_SPEC.loader.exec_module(BAKE)

ROOT = Path(__file__).resolve().parents[2]
SOLUTION = ROOT / "iot-edge-solution"
TEMPLATES = {
    "release": SOLUTION / "deployment.template.json",
    "debug": SOLUTION / "deployment.debug.template.json",
}
MODULE_NAMES = sorted(p.parent.name for p in (SOLUTION / "modules").glob("*/main.py"))
IOTEDGEDEV = ROOT / ".venv-iotedgedev" / "bin" / "iotedgedev"
GENCONFIG = ROOT / "tools" / "iotedgedev" / "genconfig.sh"
_VARIABLE = re.compile(r"\$\{?([A-Z][A-Z0-9_]*)\}?")


def load(kind: str) -> dict[str, Any]:
    """A template as strict JSON (what iotedgedev and the emulator read)."""
    return json.loads(TEMPLATES[kind].read_text(encoding="utf-8"))


def agent(manifest: dict[str, Any]) -> dict[str, Any]:
    """`$edgeAgent`'s desired properties."""
    return manifest["modulesContent"]["$edgeAgent"]["properties.desired"]


def routes(manifest: dict[str, Any]) -> dict[str, Any]:
    """`$edgeHub`'s routes."""
    return manifest["modulesContent"]["$edgeHub"]["properties.desired"]["routes"]


def route_text(value: Any) -> str:
    """The route text of a string or {route, priority, timeToLiveSecs} route."""
    return value if isinstance(value, str) else value["route"]


def env_template_values() -> dict[str, str]:
    """NAME=value pairs of .env_template."""
    values = {}
    for line in (ROOT / ".env_template").read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Z_][A-Z0-9_]*)=(.*)$", line)
        if match:
            values[match.group(1)] = match.group(2)
    return values


@pytest.mark.parametrize("kind", TEMPLATES)
def test_system_modules_are_runtime_1_4_or_later(kind: str) -> None:
    system = agent(load(kind))["systemModules"]
    for name, image in (("edgeAgent", "azureiotedge-agent"), ("edgeHub", "azureiotedge-hub")):
        match = re.fullmatch(rf"mcr\.microsoft\.com/{image}:1\.(\d+)", system[name]["settings"]["image"])
        assert match and int(match.group(1)) >= 4


@pytest.mark.parametrize("kind", TEMPLATES)
def test_every_module_is_deployed_with_its_image_placeholder_and_env(kind: str) -> None:
    manifest = load(kind)
    modules = agent(manifest)["modules"]
    assert sorted(modules) == MODULE_NAMES
    for name, spec in modules.items():
        suffix = ".debug" if kind == "debug" else ""
        assert spec["settings"]["image"] == f"${{MODULES.{name}{suffix}}}"
        assert spec["type"] == "docker" and spec["status"] == "running"
        assert spec["restartPolicy"] in ("always", "on-failure", "on-unhealthy", "never")
        assert all(set(holder) == {"value"} for holder in spec["env"].values())
        assert f"{name}" in manifest["modulesContent"], f"{name} has no initial desired properties"
        assert isinstance(spec["settings"]["createOptions"], dict)


@pytest.mark.parametrize("kind", TEMPLATES)
def test_classifier_env_create_options_and_routes(kind: str) -> None:
    manifest = load(kind)
    classifier = agent(manifest)["modules"]["classifier"]
    env = classifier["env"]
    for variable in (
        "CAMERA_PATH",
        "USE_TENSOR_RT",
        "TENSORRT_FALLBACK",
        "NVIDIA_VISIBLE_DEVICES",
        "MODEL_NAME",
        "STORAGE_CONNECTION_STRING",
        "MODULE_KEY",
    ):
        assert variable in env
    assert env["CAMERA_PATH"]["value"] == "$CAMERA_PATH"
    host = classifier["settings"]["createOptions"]["HostConfig"]
    assert host["Runtime"] == "$DOCKER_RUNTIME"
    assert host["Devices"][0]["PathOnHost"] == "$CAMERA_DEVICE"
    assert host["PortBindings"]["8080/tcp"] == [{"HostPort": "8080"}]
    assert host["PortBindings"]["5012/tcp"] == [{"HostPort": "5012"}]
    if kind == "debug":
        assert "5678/tcp" in host["PortBindings"]
    texts = [route_text(r) for r in routes(manifest).values()]
    assert (
        'FROM /messages/modules/classifier/outputs/detections INTO BrokeredEndpoint("/modules/alert/inputs/detections")'
        in texts
    )
    desired = manifest["modulesContent"]["classifier"]["properties.desired"]
    assert desired["model"] == {"name": "$MODEL_NAME", "version": "$MODEL_VERSION"}


@pytest.mark.parametrize("kind", TEMPLATES)
def test_two_factor_flow_modules_share_storage_and_key_and_verification_goes_upstream(kind: str) -> None:
    manifest = load(kind)
    modules = agent(manifest)["modules"]
    authrequest, classifier = modules["authrequest"]["env"], modules["classifier"]["env"]
    for variable in ("STORAGE_CONNECTION_STRING", "MODULE_KEY", "REQUEST_QUEUE"):
        assert authrequest[variable] == classifier[variable] == {"value": f"${variable}"}, variable
    for variable in ("RESULT_CONTAINER", "REQUEST_VISIBILITY_SECONDS", "MAX_DEQUEUE_COUNT"):
        assert classifier[variable] == {"value": f"${variable}"}
    for variable in ("REQUEST_TTL_SECONDS", "ENQUEUE_TIMEOUT_SECONDS"):
        assert authrequest[variable] == {"value": f"${variable}"}
    texts = [route_text(r) for r in routes(manifest).values()]
    assert "FROM /messages/modules/classifier/outputs/verification INTO $upstream" in texts


def test_routes_are_in_the_manifest_format() -> None:
    pattern = re.compile(
        r"^FROM /messages/(\*|modules/\w+/(\*|outputs/(\*|\w+)))( WHERE .+)? INTO "
        r"(\$upstream|BrokeredEndpoint\(\"/modules/\w+/inputs/\w+\"\))$"
    )
    for value in routes(load("release")).values():
        assert pattern.match(route_text(value)), route_text(value)
        if isinstance(value, dict):
            assert set(value) <= {"route", "priority", "timeToLiveSecs"}


def test_debug_template_differs_only_in_images_debug_ports_and_log_level() -> None:
    release, debug = load("release"), load("debug")
    assert routes(release) == routes(debug)
    assert agent(release)["systemModules"] == agent(debug)["systemModules"]
    for name, spec in agent(release)["modules"].items():
        other = agent(debug)["modules"][name]
        assert set(spec["env"]) == set(other["env"])
        assert spec["settings"]["createOptions"].get("HostConfig", {}).get("Devices") == other["settings"][
            "createOptions"
        ].get("HostConfig", {}).get("Devices")
        assert spec["settings"]["createOptions"].get("HostConfig", {}).get("Mounts") == other["settings"][
            "createOptions"
        ].get("HostConfig", {}).get("Mounts")
    for name in MODULE_NAMES:
        assert release["modulesContent"][name] == debug["modulesContent"][name]


def test_env_template_defines_every_variable_the_templates_and_module_json_use() -> None:
    defined = set(env_template_values())
    files = list(TEMPLATES.values()) + sorted((SOLUTION / "modules").glob("*/module.json"))
    for path in files:
        used = set(_VARIABLE.findall(path.read_text(encoding="utf-8")))
        missing = used - defined - {"MODULES"}
        assert not missing, f"{path.name} uses {sorted(missing)} that .env_template does not define"


def iotedgedev_or_fail() -> Path:
    """iotedgedev from .venv-iotedgedev; missing fails in CI and skips elsewhere."""
    if not IOTEDGEDEV.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("iotedgedev is missing in CI: `make test` runs `make iotedgedev-setup` first")
        pytest.skip("iotedgedev not installed; run `make iotedgedev-setup`")
    return IOTEDGEDEV


@pytest.mark.slow
@pytest.mark.parametrize("platform", ["amd64", "amd64.gpu", "arm64v8"])
def test_iotedgedev_genconfig_expands_both_templates(  # pylint: disable=too-many-locals
    platform: str, tmp_path: Path
) -> None:
    iotedgedev_or_fail()
    env = {**os.environ, "CONFIG_OUTPUT_DIR": str(tmp_path), "DOTENV_FILE": str(ROOT / ".env_template")}
    for variable in env_template_values():
        env.pop(variable, None)  # the manifest must come out of .env_template alone
    env["CONFIG_OUTPUT_DIR"] = str(tmp_path)
    result = subprocess.run(
        ["bash", str(GENCONFIG), platform],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation for all createOptions passed." in result.stdout
    registry = env_template_values()["CONTAINER_REGISTRY_SERVER"]
    for kind, name in (
        ("release", f"deployment.{platform}.json"),
        ("debug", f"deployment.debug.{platform}.json"),
    ):
        generated_text = (tmp_path / name).read_text(encoding="utf-8")
        assert "${MODULES" not in generated_text and "$CAMERA_PATH" not in generated_text
        generated = json.loads(generated_text)
        assert "$schema-template" not in generated
        modules = agent(generated)["modules"]
        assert sorted(modules) == MODULE_NAMES
        for module, spec in modules.items():
            version = json.loads((SOLUTION / "modules" / module / "module.json").read_text())["image"]["tag"]["version"]
            suffix = f"{platform}.debug" if kind == "debug" else platform
            assert spec["settings"]["image"] == f"{registry}/{module}:{version}-{suffix}"
            # `make images` (tools/images/bake.py) tags the image it builds exactly as the manifest names it.
            module_json = json.loads((SOLUTION / "modules" / module / "module.json").read_text())
            assert spec["settings"]["image"] == BAKE.module_tag(module_json, suffix, env_template_values())
            options = json.loads(spec["settings"]["createOptions"])
            if module == "classifier":  # the module that needs the GPU runtime on Jetson and GPU hosts
                assert options["HostConfig"]["Runtime"] == env_template_values()["DOCKER_RUNTIME"]
        assert modules["classifier"]["env"]["CAMERA_PATH"]["value"] == env_template_values()["CAMERA_PATH"]
        assert agent(generated)["runtime"]["settings"]["registryCredentials"]["registry"]["address"] == registry


@pytest.mark.slow
def test_make_genconfig_works_as_a_user_runs_it(tmp_path: Path) -> None:
    """`make genconfig PLATFORM=arm64v8` from the repository root, as the README says: the Makefile's own paths
    (a relative IOTEDGEDEV_VENV, the script changing folder) must hold up, not only the script's."""
    iotedgedev_or_fail()
    env = {k: v for k, v in os.environ.items() if k not in env_template_values() and not k.startswith("MAKE")}
    env.update({"CONFIG_OUTPUT_DIR": str(tmp_path), "DOTENV_FILE": str(ROOT / ".env_template")})
    result = subprocess.run(
        ["make", "--no-print-directory", "genconfig", "PLATFORM=arm64v8"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("deployment.arm64v8.json", "deployment.debug.arm64v8.json"):
        generated = json.loads((tmp_path / name).read_text(encoding="utf-8"))
        assert sorted(agent(generated)["modules"]) == MODULE_NAMES


@pytest.mark.parametrize("module", MODULE_NAMES)
def test_default_camera_path_resolves_locally_and_in_the_image(module: str) -> None:
    """Relative paths in .env are relative to the module folder: the emulator's cwd and the image's WORKDIR."""
    camera = env_template_values()["CAMERA_PATH"]
    assert (SOLUTION / "modules" / module / camera).resolve().is_file()
    for dockerfile in (SOLUTION / "modules" / module).glob("Dockerfile.*"):
        workdirs = re.findall(r"^WORKDIR (\S+)$", dockerfile.read_text(encoding="utf-8"), flags=re.MULTILINE)
        assert workdirs[-1] == f"/app/modules/{module}", dockerfile.name
        assert os.path.normpath(os.path.join(workdirs[-1], camera)) == "/app/media/demo.mp4"


@pytest.mark.parametrize("kind", TEMPLATES)
def test_authrequest_keeps_the_requests_it_follows_up_in_a_volume(kind: str) -> None:
    authrequest = agent(load(kind))["modules"]["authrequest"]
    assert authrequest["env"]["AUTHREQUEST_STATE_DIR"]["value"] == "$AUTHREQUEST_STATE_DIR"
    mounts = authrequest["settings"]["createOptions"]["HostConfig"]["Mounts"]
    assert {"Type": "volume", "Source": "authrequest-state", "Target": "/app/authrequest-state"} in mounts
    # the documented default is that volume, seen from the module's working folder
    lines = (ROOT / ".env_template").read_text(encoding="utf-8").splitlines()
    default = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    default = default["AUTHREQUEST_STATE_DIR"]
    for dockerfile in (SOLUTION / "modules" / "authrequest").glob("Dockerfile.*"):
        text = dockerfile.read_text(encoding="utf-8")
        assert "AUTHREQUEST_STATE_DIR=/app/authrequest-state" in text, dockerfile.name
        assert "chown moduleuser:moduleuser /app/authrequest-state" in text, dockerfile.name
        workdir = re.findall(r"^WORKDIR (\S+)$", text, flags=re.MULTILINE)[-1]
        assert os.path.normpath(os.path.join(workdir, default)) == "/app/authrequest-state", dockerfile.name


@pytest.mark.parametrize("kind", TEMPLATES)
def test_alert_module_env_routes_and_queue_volume(kind: str) -> None:
    manifest = load(kind)
    alert = agent(manifest)["modules"]["alert"]
    assert {"ALERT_CLASSES", "ALERT_MIN_CONFIDENCE", "ALERT_COOLDOWN_SECONDS", "ALERT_WEBHOOK_URL"} <= set(alert["env"])
    assert alert["env"]["ALERT_WEBHOOK_URL"]["value"] == "$ALERT_WEBHOOK_URL"
    mounts = alert["settings"]["createOptions"]["HostConfig"]["Mounts"]
    assert {"Type": "volume", "Source": "alert-queue", "Target": "/app/alert-queue"} in mounts
    for dockerfile in (SOLUTION / "modules" / "alert").glob("Dockerfile.*"):
        assert "ALERT_QUEUE_DIR=/app/alert-queue" in dockerfile.read_text(encoding="utf-8"), dockerfile.name
    texts = {route_text(r) for r in routes(manifest).values()}
    assert "FROM /messages/modules/alert/outputs/alerts INTO $upstream" in texts
    # detections stay on the device: only alerts go to IoT Hub
    assert "FROM /messages/modules/classifier/outputs/detections INTO $upstream" not in texts
    assert manifest["modulesContent"]["alert"]["properties.desired"] == {}
