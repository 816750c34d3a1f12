"""A local fleet: several edge devices in one hub, each with its own identity, module processes and ports.

Devices come from `--device NAME` (repeatable) or a fleet file:

    {"devices": {"lobby": {"tags": {"site": "lobby"}}, "garage": {"tags": {"site": "garage"}}}}

Module processes of different devices share this machine's ports, where containers on separate devices would
not collide. The n-th device (from 0) serves each port binding of a module's createOptions
(`HostConfig.PortBindings`, e.g. `"80/tcp": [{"HostPort": "8080"}]`) on HostPort + n * port_step, and an env value
of that module equal to the binding's container or host port is given that local port, so the process listens
where the banner and `edgehub-emulator status` say. Status maps the modules the device's `$edgeAgent` desired
properties hold now, so a deployment that adds a module or changes its bindings shows at once.

On a device, what a module keeps on disk lives in a volume of its own device (createOptions `HostConfig.Mounts`).
Module processes of different devices share this machine's disk, so `--device-state DIR` with
`--device-path NAME=RELATIVE` (repeatable) gives every module whose env has NAME the folder
DIR/<device-id>/RELATIVE instead of the manifest's value, whatever a deployment sets it to: two devices never
share a model store or an alert queue.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgehub_emulator.errors import ConfigError, ManifestError
from edgehub_emulator.manifest import ModuleSpec, module_specs

DEFAULT_PORT_STEP = 100
_DEVICE_RE = re.compile(r"^[A-Za-z0-9\-.:+%_#*?!(),=@;$']{1,128}$")


@dataclass
class FleetDevice:
    """One device of the fleet: its id, tags, and its place (which decides its port offset)."""

    device_id: str
    tags: dict[str, Any] = field(default_factory=dict)
    index: int = 0


def load_fleet(names: list[str] | None, fleet_file: str | None) -> list[FleetDevice]:
    """The devices of `--device` options and a fleet file (file first); ConfigError naming what is wrong."""
    devices: dict[str, dict[str, Any]] = {}
    if fleet_file:
        try:
            data = json.loads(Path(fleet_file).read_text(encoding="utf-8"))
        except OSError as e:
            raise ConfigError(f"cannot read the fleet file {fleet_file}: {e.strerror}") from e
        except ValueError as e:
            raise ConfigError(f"the fleet file {fleet_file} is not valid JSON: {e}") from e
        entries = data.get("devices") if isinstance(data, dict) else None
        if not isinstance(entries, dict) or not entries:
            raise ConfigError(f'{fleet_file}: expected {{"devices": {{"<id>": {{"tags": {{...}}}}, ...}}}}')
        for device_id, entry in entries.items():
            tags = (entry or {}).get("tags", {}) if isinstance(entry, dict) else None
            if not isinstance(tags, dict):
                raise ConfigError(f"{fleet_file}: devices.{device_id}.tags must be an object")
            devices[device_id] = tags
    for name in names or []:
        devices.setdefault(name, {})
    for device_id in devices:
        if not _DEVICE_RE.match(device_id):
            raise ConfigError(f"device id {device_id!r} is not a valid IoT Hub device id")
    return [FleetDevice(device_id, tags, index) for index, (device_id, tags) in enumerate(devices.items())]


def parse_device_paths(items: list[str] | None) -> dict[str, str]:
    """`["MODEL_STORE=classifier/model-store"]` -> `{"MODEL_STORE": "classifier/model-store"}`; ConfigError for
    anything else (no `=`, an empty side, an absolute path or one that leaves its folder)."""
    paths: dict[str, str] = {}
    for item in items or []:
        name, sep, relative = item.partition("=")
        parts = Path(relative).parts
        if not sep or not name or not relative or Path(relative).is_absolute() or ".." in parts:
            raise ConfigError(f"--device-path {item!r}: expected NAME=RELATIVE/PATH (relative, without ..)")
        paths[name] = relative
    return paths


def state_environment(
    spec: ModuleSpec, device_id: str, state_dir: Path | None, paths: dict[str, str]
) -> dict[str, str]:
    """The device's own folder for each env variable of the module that `paths` names."""
    if state_dir is None:
        return {}
    root = state_dir.resolve() / device_id
    return {name: str(root / relative) for name, relative in paths.items() if name in spec.env}


def _create_options(spec: ModuleSpec) -> dict[str, Any]:
    options = spec.create_options
    if isinstance(options, str):
        try:
            options = json.loads(options) if options.strip() else {}
        except ValueError:
            return {}
    return options if isinstance(options, dict) else {}


def port_bindings(spec: ModuleSpec) -> dict[str, int]:
    """`{"80/tcp": 8080}`: each container port of createOptions with its (first) host port."""
    bindings = ((_create_options(spec).get("HostConfig") or {}).get("PortBindings")) or {}
    found: dict[str, int] = {}
    if not isinstance(bindings, dict):
        return found
    for container, hosts in bindings.items():
        if isinstance(hosts, list) and hosts and isinstance(hosts[0], dict):
            try:
                found[str(container)] = int(hosts[0].get("HostPort", ""))
            except ValueError:
                continue
    return found


def local_ports(spec: ModuleSpec, index: int, step: int = DEFAULT_PORT_STEP) -> dict[str, int]:
    """Where the n-th device's process of this module serves each binding: `{"80/tcp": 8180}`."""
    return {container: host + index * step for container, host in port_bindings(spec).items()}


def port_environment(spec: ModuleSpec, index: int, step: int = DEFAULT_PORT_STEP) -> dict[str, str]:
    """Env values of the module that name a bound port (container or host side), set to the local port."""
    mapped: dict[str, str] = {}
    for container, local in local_ports(spec, index, step).items():
        sides = {container.split("/")[0], str(port_bindings(spec)[container])}
        for name, value in spec.env.items():
            if value in sides:
                mapped[name] = str(local)
    return mapped


def served_ports(agent_desired: dict[str, Any], index: int, step: int = DEFAULT_PORT_STEP) -> dict[str, dict[str, int]]:
    """Where the n-th device serves each module of its `$edgeAgent` desired properties (what its agent runs):
    `{"classifier": {"8080/tcp": 8180}, "alert": {}}`; empty when they hold no valid modules."""
    try:
        specs = module_specs(agent_desired)
    except ManifestError:
        return {}
    return {name: local_ports(spec, index, step) for name, spec in specs.items()}
