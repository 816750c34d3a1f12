"""`edgevision deploy`'s manifest handling: the solution's template expanded as genconfig does, the deployment
schema's rules with an error naming the path, layered deployments."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from edgevision.deploy import (
    ManifestInvalidError,
    ManifestSource,
    content_id,
    expand_template,
    is_layered,
    load_modules_content,
    read_env_file,
    validate_base,
    validate_layered,
)

SOLUTION = Path(__file__).resolve().parents[4]
TEMPLATE = SOLUTION / "deployment.template.json"
VARIABLES = {**read_env_file(SOLUTION.parent / ".env_template"), "CONTAINER_REGISTRY_SERVER": "myacr.azurecr.io"}


def solution_modules(platform: str = "amd64") -> dict[str, Any]:
    """The real template's modulesContent, expanded."""
    return load_modules_content(ManifestSource(TEMPLATE, platform, VARIABLES), layered=False)


def test_the_solution_template_expands_like_genconfig() -> None:
    modules = solution_modules("arm64v8")
    agent = modules["$edgeAgent"]["properties.desired"]
    assert agent["modules"]["classifier"]["settings"]["image"] == "myacr.azurecr.io/classifier:0.1.0-arm64v8"
    assert agent["modules"]["alert"]["settings"]["image"].endswith("/alert:0.1.0-arm64v8")
    options = agent["modules"]["classifier"]["settings"]["createOptions"]
    assert isinstance(options, str)
    whole = options + "".join(
        value for key, value in sorted(agent["modules"]["classifier"]["settings"].items()) if key[-2:].isdigit()
    )
    assert json.loads(whole)["HostConfig"]["PortBindings"]["8080/tcp"] == [{"HostPort": "8080"}]
    assert all(len(v) <= 512 for k, v in agent["modules"]["classifier"]["settings"].items() if "createOptions" in k)
    assert "$CONTAINER_REGISTRY_SERVER" not in json.dumps(modules)
    assert "$schema-template" not in modules


def test_the_content_decides_the_default_id() -> None:
    modules = solution_modules()
    assert content_id(modules, False) == content_id(copy.deepcopy(modules), False)
    changed = copy.deepcopy(modules)
    changed["$edgeAgent"]["properties.desired"]["modules"]["alert"]["env"]["X"] = {"value": "1"}
    assert content_id(changed, False) != content_id(modules, False)
    assert content_id(modules, True).startswith("edgevision-layer-")


def _broken(change: str) -> dict[str, Any]:
    modules = solution_modules()
    agent = modules["$edgeAgent"]["properties.desired"]
    hub = modules["$edgeHub"]["properties.desired"]
    if change == "no edgeHub":
        del modules["$edgeHub"]
    elif change == "schema version":
        agent["schemaVersion"] = "9.9"
    elif change == "restart policy":
        agent["modules"]["alert"]["restartPolicy"] = "sometimes"
    elif change == "status":
        agent["modules"]["alert"]["status"] = "paused"
    elif change == "image":
        agent["modules"]["alert"]["settings"]["image"] = "${MODULES.alert}"
    elif change == "env":
        agent["modules"]["alert"]["env"]["X"] = "bare value"
    elif change == "route":
        hub["routes"]["bad"] = "INTO $upstream"
    elif change == "createOptions object":
        agent["modules"]["alert"]["settings"]["createOptions"] = {"HostConfig": {}}
    elif change == "startupOrder":
        agent["modules"]["alert"]["startupOrder"] = -1
    return modules


BROKEN = [
    ("no edgeHub", "modulesContent.$edgeHub"),
    ("schema version", "$edgeAgent.properties.desired.schemaVersion"),
    ("restart policy", "modules.alert.restartPolicy"),
    ("status", "modules.alert.status"),
    ("image", "still holds a placeholder"),
    ("env", "modules.alert.env"),
    ("route", "routes.bad"),
    ("createOptions object", "createOptions: must be a string"),
    ("startupOrder", "modules.alert.startupOrder"),
]


@pytest.mark.parametrize(("change", "expected"), BROKEN, ids=[b[0] for b in BROKEN])
def test_a_manifest_against_the_schema_fails_naming_the_path(change: str, expected: str) -> None:
    with pytest.raises(ManifestInvalidError, match=expected.replace("$", r"\$").replace(".", r"\.")):
        validate_base(_broken(change))


LAYERED_BAD = [
    ({"$edgeAgent": {"properties.desired.runtime.settings": {}}}, "may set only 'properties.desired.modules.<name>'"),
    ({"$edgeHub": {"properties.desired.schemaVersion": "1.1"}}, "may set only 'properties.desired.routes.<name>'"),
    ({"$edgeAgent": {"properties.desired.modules.": {}}}, "may set only"),
    ({"$edgeHub": {"properties.desired.routes.r": "INTO $upstream"}}, "routes.r"),
    ({"alert": {"tags.x": 1}}, "properties.desired"),
]


@pytest.mark.parametrize(("modules", "expected"), LAYERED_BAD)
def test_a_layered_manifest_may_not_set_everything(modules: dict[str, Any], expected: str) -> None:
    with pytest.raises(ManifestInvalidError, match=expected.replace("$", r"\$").replace(".", r"\.")):
        validate_layered(modules)


def test_a_whole_manifest_deployed_layered_becomes_a_layer(tmp_path: Path) -> None:
    layer = load_modules_content(ManifestSource(TEMPLATE, "amd64", VARIABLES), layered=True)
    assert is_layered(layer)
    assert set(layer["$edgeAgent"]) == {
        "properties.desired.modules.classifier",
        "properties.desired.modules.authrequest",
        "properties.desired.modules.alert",
    }
    assert all(key.startswith("properties.desired.routes.") for key in layer["$edgeHub"])
    validate_layered(layer)
    # A layered file deployed without --layered is refused with what to do.
    path = tmp_path / "layer.json"
    path.write_text(json.dumps({"modulesContent": layer}), encoding="utf-8")
    with pytest.raises(ManifestInvalidError, match="--layered"):
        load_modules_content(ManifestSource(path, "amd64", VARIABLES), layered=False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("{not json", "not valid JSON"), ('{"modulesContent": []}', "modulesContent must be an object")],
)
def test_unreadable_manifests(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "deployment.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ManifestInvalidError, match=expected):
        load_modules_content(ManifestSource(path, "amd64", {}), layered=False)
    with pytest.raises(ManifestInvalidError, match="cannot read"):
        load_modules_content(ManifestSource(tmp_path / "missing.json", "amd64", {}), layered=False)


def test_an_unknown_platform_is_named() -> None:
    with pytest.raises(ManifestInvalidError, match="no platform 'riscv64'"):
        expand_template(json.loads(TEMPLATE.read_text(encoding="utf-8")), SOLUTION, "riscv64", VARIABLES)
