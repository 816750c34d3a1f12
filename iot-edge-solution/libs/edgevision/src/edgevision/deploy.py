"""`edgevision deploy`: the solution's deployment manifest applied through IoT Hub's service API (azure-iot-hub's
`IoTHubConfigurationManager`), to one device or, as an automatic deployment, to every device a target condition
selects; `edgevision deployments` lists them with their system metrics.

The hub is the one `IOTHUB_CONNECTION_STRING` names: a real IoT Hub, or the local edgeHub emulator (`make deploy`
takes the emulator's when .env sets none). Nothing else differs.

The manifest is an expanded `config/deployment.<platform>.json` (from `make genconfig`) or a template that is
expanded here as `iotedgedev genconfig` does: `${MODULES.<name>[.<platform>]}` becomes the image
`<repository>:<version>-<platform>` of `modules/<name>/module.json`, `$VAR` / `${VAR}` come from .env and the
shell, and createOptions objects become strings (split into `createOptions01`... past 512 characters).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from edgevision.errors import EdgeVisionError

log = logging.getLogger(__name__)

DESIRED = "properties.desired"
SYSTEM_MODULES = ("$edgeAgent", "$edgeHub")
RESTART_POLICIES = ("always", "on-failure", "on-unhealthy", "never")
MODULE_STATUSES = ("running", "stopped")
CREATE_OPTIONS_CHUNK = 512
MAX_PRIORITY = 2**31 - 1
_PLACEHOLDER_RE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
_MODULE_IMAGE_RE = re.compile(r"\$\{MODULES\.([\w-]+)(?:\.([\w.]+))?\}")
_ID_RE = re.compile(r"^[a-z0-9\-:+%_#*?!(),=@;$']{1,128}$")
LAYERED_PATHS = {"$edgeAgent": "properties.desired.modules.", "$edgeHub": "properties.desired.routes."}


class DeployError(EdgeVisionError):
    """A deployment could not be made or followed; the message says why and what to do."""


class ManifestInvalidError(DeployError):
    """The manifest breaks the deployment schema (the message names the path)."""


# manifest: loading, expansion, validation
def read_env_file(path: Path) -> dict[str, str]:
    """`NAME=value` lines of a .env file (comments, blanks and `export ` allowed; quotes stripped)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip().removeprefix("export ").strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name.strip()] = value
    return values


def _expand(value: str, variables: Mapping[str, str]) -> str:
    return _PLACEHOLDER_RE.sub(lambda m: variables.get(m.group(1) or m.group(2), m.group(0)), value)


def module_image(solution: Path, name: str, platform: str, variables: Mapping[str, str]) -> str:
    """`<repository>:<version>-<platform>` of modules/<name>/module.json."""
    path = solution / "modules" / name / "module.json"
    try:
        image = json.loads(path.read_text(encoding="utf-8"))["image"]
        repository, version = image["repository"], image["tag"]["version"]
        platforms = image["tag"]["platforms"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ManifestInvalidError(f"${{MODULES.{name}}}: cannot read the image of {path}: {e}") from e
    if platform not in platforms:
        raise ManifestInvalidError(f"module {name} has no platform {platform!r} (it has {', '.join(platforms)})")
    return f"{_expand(repository, variables)}:{version}-{platform}"


def _stringify_create_options(settings: dict[str, Any]) -> None:
    options = settings.get("createOptions")
    if options is None or isinstance(options, str):
        return
    text = json.dumps(options, separators=(",", ":"))
    chunks = [text[i : i + CREATE_OPTIONS_CHUNK] for i in range(0, len(text), CREATE_OPTIONS_CHUNK)] or [""]
    settings["createOptions"] = chunks[0]
    for number, chunk in enumerate(chunks[1:], start=1):
        settings[f"createOptions{number:02d}"] = chunk


def expand_template(template: Any, solution: Path, platform: str, variables: Mapping[str, str]) -> dict[str, Any]:
    """A deployment template expanded as `iotedgedev genconfig` expands it."""

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            value = _MODULE_IMAGE_RE.sub(
                lambda m: module_image(solution, m.group(1), m.group(2) or platform, variables), value
            )
            return _expand(value, variables)
        if isinstance(value, dict):
            return {key: walk(item) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item) for item in value]
        return value

    if not isinstance(template, dict):
        raise ManifestInvalidError("a deployment manifest is a JSON object with modulesContent")
    manifest = walk({k: v for k, v in template.items() if k != "$schema-template"})
    for section in _all_module_settings(manifest):
        _stringify_create_options(section)
    return manifest


def _all_module_settings(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    agent = ((manifest.get("modulesContent") or {}).get("$edgeAgent") or {}).get(DESIRED) or {}
    found = []
    for group in ("systemModules", "modules"):
        for spec in (agent.get(group) or {}).values():
            if isinstance(spec, dict) and isinstance(spec.get("settings"), dict):
                found.append(spec["settings"])
    return found


def _fail(path: str, why: str) -> None:
    raise ManifestInvalidError(f"{path}: {why}")


def _check_module(path: str, spec: Any, system: bool = False) -> None:  # pylint: disable=too-many-branches
    if not isinstance(spec, dict):
        _fail(path, "must be an object")
    if spec.get("type") != "docker":
        _fail(f"{path}.type", "must be 'docker'")
    settings = spec.get("settings")
    if not isinstance(settings, dict) or not isinstance(settings.get("image"), str) or not settings["image"]:
        _fail(f"{path}.settings.image", "must be a non-empty string")
    if "${" in settings["image"]:
        _fail(f"{path}.settings.image", f"{settings['image']!r} still holds a placeholder")
    for key, value in settings.items():
        if key.startswith("createOptions") and not isinstance(value, str):
            _fail(f"{path}.settings.{key}", "must be a string (expand the template, or pass the template itself)")
    if "status" in spec and spec["status"] not in MODULE_STATUSES:
        _fail(f"{path}.status", f"must be one of {', '.join(MODULE_STATUSES)}")
    if "restartPolicy" in spec and spec["restartPolicy"] not in RESTART_POLICIES:
        _fail(f"{path}.restartPolicy", f"must be one of {', '.join(RESTART_POLICIES)}")
    if not system:
        for key in ("status", "restartPolicy"):
            if key not in spec:
                _fail(f"{path}.{key}", "is required")
        order = spec.get("startupOrder", 0)
        if isinstance(order, bool) or not isinstance(order, int) or not 0 <= order <= 4294967295:
            _fail(f"{path}.startupOrder", "must be an integer from 0 to 4294967295")
    env = spec.get("env", {})
    if not isinstance(env, dict) or any(not isinstance(v, dict) or "value" not in v for v in env.values()):
        _fail(f"{path}.env", 'must map each name to {"value": ...}')


def _check_routes(path: str, routes: Any) -> None:
    if not isinstance(routes, dict):
        _fail(path, "must be an object of name: route")
    for name, route in routes.items():
        text = route.get("route") if isinstance(route, dict) else route
        if not isinstance(text, str) or not text.strip().upper().startswith("FROM "):
            _fail(f"{path}.{name}", "must be 'FROM ... INTO ...' or {route, priority, timeToLiveSecs}")
        if isinstance(route, dict) and not 0 <= route.get("priority", 0) <= 9:
            _fail(f"{path}.{name}.priority", "must be from 0 to 9")


def validate_base(modules: dict[str, Any]) -> None:
    """ManifestInvalidError unless modulesContent is a whole deployment (the IoT Edge 1.1 schema's rules)."""
    agent = (modules.get("$edgeAgent") or {}).get(DESIRED)
    hub = (modules.get("$edgeHub") or {}).get(DESIRED)
    if not isinstance(agent, dict):
        _fail("modulesContent.$edgeAgent", "needs 'properties.desired'")
    if not isinstance(hub, dict):
        _fail("modulesContent.$edgeHub", "needs 'properties.desired'")
    prefix = "modulesContent.$edgeAgent.properties.desired"
    if agent.get("schemaVersion") not in ("1.0", "1.1"):
        _fail(f"{prefix}.schemaVersion", "must be '1.0' or '1.1'")
    runtime = agent.get("runtime")
    if (
        not isinstance(runtime, dict)
        or runtime.get("type") != "docker"
        or not isinstance(runtime.get("settings"), dict)
    ):
        _fail(f"{prefix}.runtime", "must be {type: 'docker', settings: {...}}")
    system = agent.get("systemModules")
    if not isinstance(system, dict) or not {"edgeAgent", "edgeHub"} <= set(system):
        _fail(f"{prefix}.systemModules", "must hold edgeAgent and edgeHub")
    for name, spec in system.items():
        _check_module(f"{prefix}.systemModules.{name}", spec, system=True)
    custom = agent.get("modules", {})
    if not isinstance(custom, dict):
        _fail(f"{prefix}.modules", "must be an object")
    for name, spec in custom.items():
        _check_module(f"{prefix}.modules.{name}", spec)
    hub_prefix = "modulesContent.$edgeHub.properties.desired"
    if hub.get("schemaVersion") not in ("1.0", "1.1", "1.2"):
        _fail(f"{hub_prefix}.schemaVersion", "must be '1.0', '1.1' or '1.2'")
    _check_routes(f"{hub_prefix}.routes", hub.get("routes"))
    ttl = (hub.get("storeAndForwardConfiguration") or {}).get("timeToLiveSecs", 7200)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 0:
        _fail(f"{hub_prefix}.storeAndForwardConfiguration.timeToLiveSecs", "must be an integer >= 0")


def validate_layered(modules: dict[str, Any]) -> None:
    """ManifestInvalidError unless modulesContent is a layered deployment: `$edgeAgent` only
    `properties.desired.modules.<name>`, `$edgeHub` only `properties.desired.routes.<name>`."""
    if not modules:
        _fail("modulesContent", "is empty")
    for module, section in modules.items():
        if not isinstance(section, dict):
            _fail(f"modulesContent.{module}", "must be an object")
        for key, value in section.items():
            path = f"modulesContent.{module}.{key}"
            if module in LAYERED_PATHS:
                allowed = LAYERED_PATHS[module]
                if not key.startswith(allowed) or len(key) == len(allowed):
                    _fail(path, f"a layered deployment may set only '{allowed}<name>' in {module}")
                name = key[len(allowed) :]
                if module == "$edgeAgent" and "." not in name:
                    _check_module(path, value)
                if module == "$edgeHub" and "." not in name:
                    _check_routes(f"modulesContent.$edgeHub.{allowed[:-1]}", {name: value})
            elif not key.startswith(DESIRED):
                _fail(path, "must be 'properties.desired' or 'properties.desired.<path>'")


def to_layer(modules: dict[str, Any]) -> dict[str, Any]:
    """A whole deployment as a layer: its custom modules, routes and module twins as layered paths (the runtime,
    system modules and schema stay the base deployment's)."""
    agent = modules["$edgeAgent"][DESIRED]
    hub = modules["$edgeHub"][DESIRED]
    layer: dict[str, Any] = {
        "$edgeAgent": {f"{DESIRED}.modules.{name}": spec for name, spec in (agent.get("modules") or {}).items()},
        "$edgeHub": {f"{DESIRED}.routes.{name}": route for name, route in (hub.get("routes") or {}).items()},
    }
    for module, section in modules.items():
        if module not in SYSTEM_MODULES:
            layer[module] = copy.deepcopy(section)
    return {module: section for module, section in layer.items() if section}


def is_layered(modules: dict[str, Any]) -> bool:
    """A layered manifest has no whole `$edgeAgent` desired properties."""
    return DESIRED not in (modules.get("$edgeAgent") or {})


@dataclass
class ManifestSource:
    """Where the manifest comes from and what to expand it with."""

    path: Path
    platform: str
    variables: dict[str, str] = field(default_factory=dict)
    # Where modules/<name>/module.json are when the manifest's folder has no modules/ (a copy elsewhere).
    solution: Path | None = None

    @property
    def modules_root(self) -> Path:
        """The folder whose modules/ the `${MODULES.x}` placeholders name."""
        here = self.path.parent
        if (here / "modules").is_dir() or self.solution is None:
            return here
        return self.solution


def default_manifest(solution: Path, platform: str) -> Path:
    """config/deployment.<platform>.json when genconfig made it, else the template."""
    expanded = solution / "config" / f"deployment.{platform}.json"
    return expanded if expanded.is_file() else solution / "deployment.template.json"


def load_modules_content(source: ManifestSource, layered: bool) -> dict[str, Any]:
    """The modulesContent to deploy: read, expanded when a template, validated; a whole manifest becomes a layer
    under `layered`, a layered one is refused without it."""
    try:
        data = json.loads(source.path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ManifestInvalidError(f"cannot read the manifest {source.path}: {e.strerror}") from e
    except ValueError as e:
        raise ManifestInvalidError(f"the manifest {source.path} is not valid JSON: {e}") from e
    manifest = expand_template(data, source.modules_root, source.platform, source.variables)
    modules = manifest.get("modulesContent")
    if not isinstance(modules, dict):
        raise ManifestInvalidError(f"{source.path}: modulesContent must be an object")
    try:
        if is_layered(modules):
            if not layered:
                raise ManifestInvalidError(
                    "the manifest is a layered deployment (no whole $edgeAgent properties.desired): deploy it with "
                    "--layered (LAYERED=1)"
                )
            validate_layered(modules)
            return modules
        validate_base(modules)
        return to_layer(modules) if layered else modules
    except ManifestInvalidError as e:
        raise ManifestInvalidError(f"{source.path}: {e}") from e


def content_id(modules: dict[str, Any], layered: bool) -> str:
    """A deployment id that follows the content (a hub cannot change a deployment's content under one id)."""
    digest = hashlib.sha256(json.dumps(modules, sort_keys=True).encode("utf-8")).hexdigest()[:10]
    return f"edgevision-{'layer-' if layered else ''}{digest}"


# the hub
def _hub_host(connection_string: str) -> str:
    parts = dict(part.split("=", 1) for part in connection_string.split(";") if "=" in part)
    return parts.get("HostName", "?")


def _translate(e: Exception, host: str, what: str) -> DeployError:
    """SDK and transport errors as one clear line."""
    # pylint: disable=import-outside-toplevel
    import requests
    from msrest.exceptions import ClientRequestError, HttpOperationError

    if isinstance(e, HttpOperationError):
        status = e.response.status_code if e.response is not None else 0
        try:
            detail = e.response.json().get("Message", "") if e.response is not None else ""
        except ValueError:
            detail = e.response.text[:300] if e.response is not None else ""
        if status == 401:
            return DeployError(
                f"{host} refused the credentials of IOTHUB_CONNECTION_STRING (401 unauthorised): check the policy "
                "name and key (it needs registry write and service connect rights)"
            )
        if status == 404:
            return DeployError(f"{what}: not found on {host} ({detail or 404})")
        return DeployError(f"{what}: {host} answered {status}: {detail}")
    if isinstance(e, (ClientRequestError, requests.RequestException, OSError)):
        return DeployError(f"cannot reach IoT Hub {host}: {type(e).__name__}; is it running and is the host right?")
    return DeployError(f"{what}: {e}")


class HubClient:
    """The service SDK clients of one hub, with errors translated."""

    def __init__(self, connection_string: str) -> None:
        if not connection_string:
            raise DeployError(
                "IOTHUB_CONNECTION_STRING is not set: set it to your IoT Hub's service connection string (or run "
                "`make deploy`, which takes the local emulator's)"
            )
        try:
            # pylint: disable=import-outside-toplevel
            from azure.iot.hub import IoTHubConfigurationManager, IoTHubRegistryManager
        except ImportError as e:
            raise DeployError("deploy needs azure-iot-hub: pip install 'edgevision[deploy]'") from e
        self.host = _hub_host(connection_string)
        try:
            self.configs = IoTHubConfigurationManager.from_connection_string(connection_string)
            self.registry = IoTHubRegistryManager.from_connection_string(connection_string)
        except (ValueError, TypeError, KeyError) as e:
            raise DeployError(
                "IOTHUB_CONNECTION_STRING is malformed: expected "
                "HostName=...;SharedAccessKeyName=...;SharedAccessKey=..."
            ) from e

    def call(self, what: str, action: Callable[[], Any]) -> Any:
        """Run an SDK call; DeployError on failure."""
        try:
            return action()
        except Exception as e:  # pylint: disable=broad-exception-caught  # translated into one clear line
            raise _translate(e, self.host, what) from e


def apply_to_device(hub: HubClient, device: str, modules: dict[str, Any]) -> int:
    """A single-device deployment; returns the `$edgeAgent` desired version to wait for."""
    # pylint: disable=import-outside-toplevel
    from azure.iot.hub.models import ConfigurationContent

    found = hub.call(f"device {device!r}", lambda: hub.registry.get_device(device))
    if not (found.capabilities and found.capabilities.iot_edge):
        raise DeployError(f"device {device!r} on {hub.host} is not an IoT Edge device")
    hub.call(
        f"deploying to {device!r}",
        lambda: hub.configs.apply_configuration_on_edge_device(device, ConfigurationContent(modules_content=modules)),
    )
    twin = hub.call(f"device {device!r}", lambda: hub.registry.get_module_twin(device, "$edgeAgent"))
    return int(twin.properties.desired["$version"])


@dataclass
class AtScale:
    """An automatic deployment's settings."""

    config_id: str
    target_condition: str
    priority: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, str] = field(default_factory=dict)


def apply_at_scale(hub: HubClient, modules: dict[str, Any], settings: AtScale) -> tuple[Any, bool]:
    """Create the deployment, or update the one with this id (its labels, metrics, priority and target; never its
    content). Returns (the configuration, created)."""
    # pylint: disable=import-outside-toplevel
    from azure.iot.hub.models import Configuration, ConfigurationContent, ConfigurationMetrics
    from msrest.exceptions import HttpOperationError

    if not _ID_RE.match(settings.config_id):
        raise DeployError(f"deployment id {settings.config_id!r}: use 1-128 lower-case letters, digits and -:+%_#")
    if not 0 <= settings.priority <= MAX_PRIORITY:
        raise DeployError(f"priority must be from 0 to {MAX_PRIORITY}")
    if not settings.target_condition.strip():
        raise DeployError("an at-scale deployment needs a target condition, e.g. tags.site='lobby'")
    wanted = Configuration(
        id=settings.config_id,
        content=ConfigurationContent(modules_content=modules),
        target_condition=settings.target_condition,
        priority=settings.priority,
        labels=settings.labels,
        metrics=ConfigurationMetrics(queries=settings.metrics),
    )
    try:
        existing = hub.configs.get_configuration(settings.config_id)
    except HttpOperationError as e:
        if e.response is None or e.response.status_code != 404:
            raise _translate(e, hub.host, f"deployment {settings.config_id!r}") from e
        existing = None
    except Exception as e:  # pylint: disable=broad-exception-caught
        raise _translate(e, hub.host, f"deployment {settings.config_id!r}") from e
    if existing is None:
        created = hub.call(
            f"creating deployment {settings.config_id!r}", lambda: hub.configs.create_configuration(wanted)
        )
        return created, True
    old = (existing.content.modules_content if existing.content else None) or {}
    if json.dumps(old, sort_keys=True) != json.dumps(modules, sort_keys=True):
        raise DeployError(
            f"deployment {settings.config_id!r} already exists on {hub.host} with other content, which a hub cannot "
            "change: deploy under a new id (leave DEPLOYMENT_ID unset to get one from the content)"
        )
    updated = hub.call(
        f"updating deployment {settings.config_id!r}",
        lambda: hub.configs.update_configuration(wanted, existing.etag),
    )
    return updated, False


def list_deployments(hub: HubClient) -> list[dict[str, Any]]:
    """Every deployment with its system metrics."""
    found = hub.call("listing deployments", lambda: hub.configs.get_configurations(max_count=100))
    rows = []
    for config in found:
        modules = (config.content.modules_content if config.content else None) or {}
        if not modules:
            continue  # an automatic device configuration, not an IoT Edge deployment
        results = (config.system_metrics.results if config.system_metrics else None) or {}
        rows.append(
            {
                "id": config.id,
                "priority": config.priority,
                "layered": is_layered(modules),
                "targetCondition": config.target_condition,
                "labels": config.labels or {},
                "createdTimeUtc": str(config.created_time_utc or ""),
                "systemMetrics": results,
                "metrics": (config.metrics.results if config.metrics else None) or {},
            }
        )
    return rows


def wait_at_scale(
    hub: HubClient, config_id: str, timeout: float, progress: Callable[[str], None], interval: float = 1.0
) -> dict[str, int]:
    """Until every targeted device reported the deployment (successfully or not); DeployError on timeout."""
    deadline = time.monotonic() + timeout
    last = ""
    results: dict[str, int] = {}
    while True:
        config = hub.call(f"deployment {config_id!r}", lambda: hub.configs.get_configuration(config_id))
        results = (config.system_metrics.results if config.system_metrics else None) or {}
        targeted = results.get("targetedCount", 0)
        done = results.get("reportedSuccessfulCount", 0) + results.get("reportedFailedCount", 0)
        line = (
            f"{config_id}: targeted {targeted}, applied {results.get('appliedCount', 0)}, reported successful "
            f"{results.get('reportedSuccessfulCount', 0)}, failed {results.get('reportedFailedCount', 0)}"
        )
        if line != last:
            progress(line)
            last = line
        if targeted and done >= targeted:
            return results
        if time.monotonic() > deadline:
            raise DeployError(
                f"{config_id}: after {timeout:g} s, {targeted - done} of {targeted} targeted devices have not reported "
                "it (offline, or a higher-priority deployment applies to them)"
                if targeted
                else f"{config_id}: after {timeout:g} s it targets no device: check the target condition and the tags"
            )
        time.sleep(interval)


def wait_device(
    hub: HubClient, device: str, version: int, timeout: float, progress: Callable[[str], None], interval: float = 1.0
) -> dict[str, Any]:
    """Until the device's edgeAgent reports desired `version`; DeployError on timeout or a failed status."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        twin = hub.call(f"device {device!r}", lambda: hub.registry.get_module_twin(device, "$edgeAgent"))
        reported = twin.properties.reported or {}
        status = reported.get("lastDesiredStatus") or {}
        modules = {name: (state or {}).get("runtimeStatus") for name, state in (reported.get("modules") or {}).items()}
        line = f"{device}: desired version {version}, reported {reported.get('lastDesiredVersion')}, modules {modules}"
        if line != last:
            progress(line)
            last = line
        if (reported.get("lastDesiredVersion") or 0) >= version:
            if status.get("code") != 200:
                raise DeployError(
                    f"{device} could not apply the deployment: {status.get('code')} {status.get('description', '')}"
                )
            return reported
        if time.monotonic() > deadline:
            raise DeployError(
                f"{device}: its edgeAgent did not report version {version} within {timeout:g} s (offline?)"
            )
        time.sleep(interval)


def failed_devices(hub: HubClient, config_id: str, limit: int = 10) -> tuple[dict[str, str], int]:
    """The devices whose edgeAgent reported the deployment with a status other than 200, found with the
    deployment's own `reportedFailedCount` query: ({device: "code description"} of the first `limit` of them,
    how many there are)."""
    # pylint: disable=import-outside-toplevel
    from azure.iot.hub.models import QuerySpecification

    config = hub.call(f"deployment {config_id!r}", lambda: hub.configs.get_configuration(config_id))
    queries = (config.system_metrics.queries if config.system_metrics else None) or {}
    query = queries.get("reportedFailedCount")
    if not query:
        return {}, 0
    found = hub.call(
        f"deployment {config_id!r}: its failed devices",
        lambda: hub.registry.query_iot_hub(QuerySpecification(query=query)),
    )
    devices = sorted({twin.device_id for twin in found.items or [] if twin.device_id})
    named = {}
    for device in devices[:limit]:
        twin = hub.call(f"device {device!r}", lambda d=device: hub.registry.get_module_twin(d, "$edgeAgent"))
        status = (twin.properties.reported or {}).get("lastDesiredStatus") or {}
        named[device] = f"{status.get('code')} {status.get('description') or ''}".strip()
    return named, len(devices)
