"""The IoT Edge deployment manifest (deployment.template.json or a generated deployment.json).

Read: `modulesContent.$edgeAgent.properties.desired.modules.<name>.{settings.image, settings.createOptions,
env.<NAME>.value, restartPolicy, status}`, `$edgeHub.properties.desired.routes` (and
`storeAndForwardConfiguration.timeToLiveSecs`), and `modulesContent.<module>.properties.desired`.
`$VAR` / `${VAR}` placeholders in `env` values and desired properties expand as `iotedgedev genconfig` expands
them; in image fields (`${MODULES.x}`) they are kept as text: nothing here pulls images.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from edgehub_emulator.errors import ManifestError
from edgehub_emulator.routes import Route, parse_route

RESTART_POLICIES = ("always", "on-failure", "on-unhealthy", "never")
_PLACEHOLDER_RE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


@dataclass
class ModuleSpec:
    """One custom module of `$edgeAgent`."""

    name: str
    image: str = ""
    env: dict[str, str] = field(default_factory=dict)
    restart_policy: str = "always"
    status: str = "running"
    create_options: Any = None


@dataclass
class Manifest:
    """What the emulator uses from a manifest."""

    path: Path | None
    modules: dict[str, ModuleSpec]
    routes: list[Route]
    desired: dict[str, dict[str, Any]]
    ttl_secs: int
    # `$edgeAgent` and `$edgeHub` desired properties, placeholders expanded (what the device's twins get).
    system: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def content(self) -> dict[str, Any]:
        """The expanded modulesContent: system and module desired properties."""
        return {name: {"properties.desired": desired} for name, desired in {**self.system, **self.desired}.items()}

    @property
    def solution_dir(self) -> Path:
        """The folder that holds `modules/<name>/main.py` (the manifest's folder)."""
        return self.path.parent if self.path else Path.cwd()


def _expand_env(value: str, variables: Mapping[str, str] | None = None) -> str:
    """`$VAR` / `${VAR}` from variables (default: the environment), as the IoT Edge tooling does with .env;
    unknown ones stay."""
    known = os.environ if variables is None else variables

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return known.get(name, match.group(0))

    return _PLACEHOLDER_RE.sub(replace, value)


def _section(root: dict[str, Any], *keys: str) -> dict[str, Any]:
    node: Any = root
    walked = []
    for key in keys:
        walked.append(key)
        if not isinstance(node, dict) or not isinstance(node.get(key), dict):
            raise ManifestError(f"manifest lacks the object {'.'.join(walked)}")
        node = node[key]
    return node


def _parse_module(name: str, spec: Any, variables: Mapping[str, str] | None) -> ModuleSpec:
    if not isinstance(spec, dict):
        raise ManifestError(f"module {name!r} must be an object")
    settings = spec.get("settings", {}) or {}
    env: dict[str, str] = {}
    for var, holder in (spec.get("env") or {}).items():
        if not isinstance(holder, dict) or "value" not in holder:
            raise ManifestError(f'module {name!r}: env {var!r} must be {{"value": ...}}')
        value = holder["value"]
        env[var] = _expand_env(value if isinstance(value, str) else json.dumps(value), variables)
    policy = spec.get("restartPolicy", "always")
    if policy not in RESTART_POLICIES:
        raise ManifestError(f"module {name!r}: restartPolicy {policy!r} is not one of {RESTART_POLICIES}")
    return ModuleSpec(
        name=name,
        image=str(settings.get("image", "")),
        env=env,
        restart_policy=policy,
        status=spec.get("status", "running"),
        create_options=settings.get("createOptions"),
    )


def _expand_values(value: Any, variables: Mapping[str, str] | None) -> Any:
    """`$VAR` placeholders expanded in every string value (not in keys) of a JSON document."""
    if isinstance(value, str):
        return _expand_env(value, variables)
    if isinstance(value, dict):
        return {key: _expand_values(item, variables) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand_values(item, variables) for item in value]
    return value


def _parse_desired(content: dict[str, Any], variables: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    desired: dict[str, dict[str, Any]] = {}
    for name, section in content.items():
        if name.startswith("$"):
            continue
        props = section.get("properties.desired") if isinstance(section, dict) else None
        if not isinstance(props, dict):
            raise ManifestError(f"modulesContent.{name} needs a 'properties.desired' object")
        desired[name] = _expand_values(props, variables)
    return desired


def parse_manifest(data: Any, path: Path | None = None, variables: Mapping[str, str] | None = None) -> Manifest:
    """Validate and read a manifest already loaded from JSON; `$VAR` in env values and in desired properties expand
    from variables (default: the environment), as `iotedgedev genconfig` expands them."""
    if not isinstance(data, dict):
        raise ManifestError("a manifest is a JSON object with 'modulesContent'")
    content = _section(data, "modulesContent")
    agent = _section(content, "$edgeAgent", "properties.desired")
    hub = _section(content, "$edgeHub", "properties.desired")
    raw_modules = agent.get("modules", {}) or {}
    if not isinstance(raw_modules, dict):
        raise ManifestError("$edgeAgent.properties.desired.modules must be an object")
    modules = {name: _parse_module(name, spec, variables) for name, spec in raw_modules.items()}
    ttl = (hub.get("storeAndForwardConfiguration") or {}).get("timeToLiveSecs", 7200)
    if not isinstance(ttl, int) or ttl < 0:
        raise ManifestError("storeAndForwardConfiguration.timeToLiveSecs must be a non-negative integer")
    raw_routes = hub.get("routes", {}) or {}
    if not isinstance(raw_routes, dict):
        raise ManifestError("$edgeHub.properties.desired.routes must be an object of name: route")
    routes = [parse_route(name, value, ttl) for name, value in raw_routes.items()]
    desired = _parse_desired(content, variables)
    system = {"$edgeAgent": _expand_values(agent, variables), "$edgeHub": _expand_values(hub, variables)}
    return Manifest(path=path, modules=modules, routes=routes, desired=desired, ttl_secs=ttl, system=system)


def desired_routes(hub: dict[str, Any]) -> list[Route]:
    """The routes of `$edgeHub` desired properties; ManifestError for a bad one."""
    ttl = (hub.get("storeAndForwardConfiguration") or {}).get("timeToLiveSecs", 7200)
    if not isinstance(ttl, int) or ttl < 0:
        raise ManifestError("storeAndForwardConfiguration.timeToLiveSecs must be a non-negative integer")
    raw_routes = hub.get("routes", {}) or {}
    if not isinstance(raw_routes, dict):
        raise ManifestError("$edgeHub.properties.desired.routes must be an object of name: route")
    return [parse_route(name, value, ttl) for name, value in raw_routes.items()]


def module_specs(agent: dict[str, Any]) -> dict[str, ModuleSpec]:
    """The custom modules of `$edgeAgent` desired properties (values already expanded); ManifestError for a bad
    one."""
    raw_modules = agent.get("modules", {}) or {}
    if not isinstance(raw_modules, dict):
        raise ManifestError("$edgeAgent.properties.desired.modules must be an object")
    return {name: _parse_module(name, spec, {}) for name, spec in raw_modules.items()}


def load_manifest(path: Path | str, variables: Mapping[str, str] | None = None) -> Manifest:
    """Read a manifest file; errors name the file. variables: see parse_manifest."""
    file = Path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except OSError as e:
        raise ManifestError(f"cannot read manifest {file}: {e.strerror}") from e
    except ValueError as e:
        raise ManifestError(f"manifest {file} is not valid JSON: {e}") from e
    try:
        return parse_manifest(data, file.resolve(), variables)
    except ManifestError as e:
        raise type(e)(f"{file}: {e}") from e
