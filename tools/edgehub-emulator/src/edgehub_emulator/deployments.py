"""The device registry, device twins with tags, and IoT Edge deployments as IoT Hub applies them.

Per edge device: the highest-priority base deployment whose target condition matches (equal priority: the most
recently created) applies, then every matching layered deployment on top, lowest priority first, so the higher one
wins a name clash. A device that no automatic deployment targets keeps its single-device content (or the
manifest it started with); one that stops matching keeps what it has. The result lands in the device's module
twins (`$edgeAgent`, `$edgeHub`, each module), which the local edgeAgent and edgeHub act on.

System metrics come from the queries a hub runs for an edge deployment, evaluated over the twins here.
"""

from __future__ import annotations

import copy
import datetime
import json
import logging
import re
from typing import Any, Callable

from edgehub_emulator.errors import BadRequestError, ConflictError, NotFoundError
from edgehub_emulator.jsonlimits import check_twin_depth
from edgehub_emulator.query import Query, parse_condition, parse_query
from edgehub_emulator.store import Store, Twin
from edgehub_emulator.twins import require_etag, section_digest

logger = logging.getLogger(__name__)

SYSTEM_MODULES = ("$edgeAgent", "$edgeHub")
DESIRED = "properties.desired"
# What a layered deployment may set in the system modules (IoT Edge: modules of the agent, routes of the hub).
LAYERED_SYSTEM_PATHS = {"$edgeAgent": "properties.desired.modules.", "$edgeHub": "properties.desired.routes."}
_ID_RE = re.compile(r"^[a-z0-9\-:+%_#*?!(),=@;$']{1,128}$")
_DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9\-.:+%_#*?!(),=@;$']{1,128}$")
MAX_PRIORITY = 2**31 - 1


def utc_now() -> str:
    """Now as IoT Hub writes times: ISO 8601 in UTC with a Z."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def is_layered(content: dict[str, Any]) -> bool:
    """A layered deployment's modulesContent has no whole `$edgeAgent` desired properties."""
    modules = content.get("modulesContent") or {}
    return DESIRED not in (modules.get("$edgeAgent") or {})


def validate_modules_content(modules: Any, layered: bool) -> None:  # pylint: disable=too-many-branches
    """BadRequestError naming the first thing a hub would refuse in a deployment's modulesContent."""
    if not isinstance(modules, dict) or not modules:
        raise BadRequestError("content.modulesContent must be a non-empty object")
    for module, section in modules.items():
        if not isinstance(section, dict):
            raise BadRequestError(f"modulesContent.{module} must be an object")
        for key, value in section.items():
            if not key.startswith(DESIRED):
                raise BadRequestError(f"modulesContent.{module}: {key!r} is not 'properties.desired[.path]'")
            if key == DESIRED and not isinstance(value, dict):
                raise BadRequestError(f"modulesContent.{module}.properties.desired must be an object")
            if layered and module in LAYERED_SYSTEM_PATHS:
                allowed = LAYERED_SYSTEM_PATHS[module]
                if not key.startswith(allowed) or len(key) == len(allowed):
                    raise BadRequestError(
                        f"a layered deployment may set only '{allowed}<name>' in {module}, not {key!r}"
                    )
            check_twin_depth(value if isinstance(value, dict) else {}, f"modulesContent.{module}.{key}")
    if not layered:
        for system in SYSTEM_MODULES:
            if not isinstance((modules.get(system) or {}).get(DESIRED), dict):
                raise BadRequestError(f"a base deployment needs modulesContent.{system}.properties.desired")
        agent = modules["$edgeAgent"][DESIRED]
        for key in ("schemaVersion", "runtime", "systemModules"):
            if key not in agent:
                raise BadRequestError(f"$edgeAgent.properties.desired lacks {key!r}")
        if not isinstance(agent.get("modules", {}), dict):
            raise BadRequestError("$edgeAgent.properties.desired.modules must be an object")


def _set_path(target: dict[str, Any], path: list[str], value: Any) -> None:
    node = target
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[path[-1]] = copy.deepcopy(value)


def merge_layer(base: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    """modulesContent of `layer` (paths like `properties.desired.modules.x`) applied on top of `base`'s."""
    result = copy.deepcopy(base)
    for module, section in layer.items():
        target = result.setdefault(module, {}).setdefault(DESIRED, {})
        for key, value in section.items():
            if key == DESIRED:
                target.update(copy.deepcopy(value))
            else:
                _set_path(target, key[len(DESIRED) + 1 :].split("."), value)
    return result


def system_queries(config_id: str, target_condition: str) -> dict[str, str]:
    """The system metric queries of an edge deployment, as a hub defines them."""
    applied = (
        "select deviceId from devices.modules where moduleId = '$edgeAgent' "
        f"and configurations.[[{config_id}]].status = 'Applied'"
    )
    reported = f"{applied} and properties.desired.$version = properties.reported.lastDesiredVersion"
    return {
        "targetedCount": f"select deviceId from devices where capabilities.iotEdge = true and ({target_condition})",
        "appliedCount": applied,
        "reportedSuccessfulCount": f"{reported} and properties.reported.lastDesiredStatus.code = 200",
        "reportedFailedCount": f"{reported} and properties.reported.lastDesiredStatus.code != 200",
    }


def _precedence(doc: dict[str, Any]) -> tuple[int, str]:
    """Higher priority wins; at equal priority the most recently created."""
    return doc["priority"], doc["createdTimeUtc"]


class Deployments:  # pylint: disable=too-many-public-methods  # the registry and deployment operations
    """Devices, device twins and configurations in the store; `write_twin(device, module, desired)` replaces a
    module twin's desired properties (and pushes the change); `ensure_identity(device, module)` creates one."""

    def __init__(
        self,
        store: Store,
        write_twin: Callable[[str, str, dict[str, Any]], None],
        ensure_identity: Callable[[str, str], Any],
        connected: Callable[[str], bool],
    ) -> None:
        self.store = store
        self._write_twin = write_twin
        self._ensure_identity = ensure_identity
        self._connected = connected

    # registry
    def ensure_edge_device(self, device_id: str, tags: dict[str, Any] | None = None) -> bool:
        """The device as an edge device with its system modules (created when absent). `tags` (a fleet file's) are
        merged into its twin when the device is created and when they differ from the ones given at the last
        start; otherwise its twin keeps the tags it has, those set through the service API included. True when
        its tags changed."""
        created = self.store.get_device(device_id) is None
        if created:
            now = utc_now()
            self.store.put_device(device_id, {"iotEdge": True, "status": "enabled", "created": now, "version": 1})
        self._ensure_identity(device_id, "")
        if self.store.get_twin(device_id, "") is None:
            self.store.put_twin(device_id, "", Twin())
        for system in SYSTEM_MODULES:
            self._ensure_identity(device_id, system)
        given = json.dumps(tags or {}, sort_keys=True)
        if not tags or (not created and self.store.get_meta(f"fleet-tags:{device_id}") == given):
            return False
        self.store.put_meta(f"fleet-tags:{device_id}", given)
        twin = self.store.get_twin(device_id, "") or Twin()
        if all(twin.tags.get(k) == v for k, v in tags.items()):
            return False
        logger.info("device %s: tags %s from the fleet file", device_id, given)
        twin.tags = {**twin.tags, **tags}
        twin.version += 1
        self.store.put_twin(device_id, "", twin)
        return True

    def _device_record(self, device_id: str) -> dict[str, Any]:
        record = self.store.get_device(device_id)
        if record is None:
            raise NotFoundError(f"device {device_id} does not exist")
        return record

    def device_json(self, device_id: str) -> dict[str, Any]:
        """The device as the registry API returns it."""
        record = self._device_record(device_id)
        identity = self.store.get_identity(device_id, "")
        keys = {"primaryKey": identity.primary_key, "secondaryKey": identity.secondary_key} if identity else {}
        return {
            "deviceId": device_id,
            "generationId": identity.generation_id if identity else "",
            "etag": f"v{record.get('version', 1)}",
            "connectionState": "Connected" if self._connected(device_id) else "Disconnected",
            "status": record.get("status", "enabled"),
            "statusReason": None,
            "connectionStateUpdatedTime": record.get("created"),
            "statusUpdatedTime": record.get("created"),
            "lastActivityTime": record.get("created"),
            "cloudToDeviceMessageCount": 0,
            "authentication": {"type": "sas", "symmetricKey": keys},
            "capabilities": {"iotEdge": bool(record.get("iotEdge"))},
        }

    def put_device(self, device_id: str, body: Any, if_match: str | None) -> dict[str, Any]:
        """Create (no If-Match) or update a device; an edge device gets `$edgeAgent` and `$edgeHub`."""
        if not _DEVICE_ID_RE.match(device_id):
            raise BadRequestError(f"device id {device_id[:130]!r} is not a valid IoT Hub device id")
        if not isinstance(body, dict):
            raise BadRequestError("the device must be a JSON object")
        existing = self.store.get_device(device_id)
        if existing is not None:
            if if_match is None:
                raise ConflictError(f"device {device_id} already exists; update it with If-Match (the etag or '*')")
            require_etag(if_match, f"v{existing.get('version', 1)}")
        capabilities = body.get("capabilities") or {}
        if not isinstance(capabilities, dict):
            raise BadRequestError("capabilities must be an object")
        status = body.get("status") or "enabled"
        if status not in ("enabled", "disabled"):
            raise BadRequestError(f"status must be 'enabled' or 'disabled', not {status!r}")
        record = existing or {"created": utc_now(), "version": 0}
        record.update(
            {"iotEdge": bool(capabilities.get("iotEdge")), "status": status, "version": record["version"] + 1}
        )
        self.store.put_device(device_id, record)
        identity, _ = self._ensure_identity(device_id, "")
        keys = (body.get("authentication") or {}).get("symmetricKey") or {}
        if isinstance(keys, dict) and (keys.get("primaryKey") or keys.get("secondaryKey")):
            identity.primary_key = keys.get("primaryKey") or identity.primary_key
            identity.secondary_key = keys.get("secondaryKey") or identity.secondary_key
            self.store.put_identity(identity)
        if self.store.get_twin(device_id, "") is None:
            self.store.put_twin(device_id, "", Twin())
        if record["iotEdge"]:
            for system in SYSTEM_MODULES:
                self._ensure_identity(device_id, system)
            self.reevaluate([device_id])
        return self.device_json(device_id)

    def list_devices(self, top: int) -> list[dict[str, Any]]:
        """Up to `top` devices."""
        return [self.device_json(device_id) for device_id in self.store.list_devices()[:top]]

    def delete_device(self, device_id: str, if_match: str | None) -> None:
        """Delete a device, its modules and twins."""
        record = self._device_record(device_id)
        require_etag(if_match or "*", f"v{record.get('version', 1)}")
        self.store.delete_device(device_id)
        self.store.put_meta(f"applied:{device_id}", "{}")
        self.store.put_meta(f"single:{device_id}", "null")

    # device twins
    def device_twin(self, device_id: str) -> dict[str, Any]:
        """The device twin as the service API returns it."""
        record = self._device_record(device_id)
        twin = self.store.get_twin(device_id, "") or Twin()
        return {
            "deviceId": device_id,
            "etag": twin.etag,
            "version": twin.version,
            "status": record.get("status", "enabled"),
            "connectionState": "Connected" if self._connected(device_id) else "Disconnected",
            "authenticationType": "sas",
            "capabilities": {"iotEdge": bool(record.get("iotEdge"))},
            "tags": twin.tags,
            "properties": {
                "desired": {**twin.desired, "$version": twin.desired_version},
                "reported": {**twin.reported, "$version": twin.reported_version},
            },
        }

    def update_device_twin(
        self, device_id: str, body: Any, if_match: str | None, replace: bool
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """PATCH (merge) or PUT (replace) the device twin; a tag change re-evaluates the device's deployments.
        Returns (the twin, the desired patch for the device or None)."""
        # pylint: disable=import-outside-toplevel,protected-access  # the twin update rules live in twins.Twins
        from edgehub_emulator.twins import Twins

        self._device_record(device_id)
        desired, tags = Twins._twin_update_parts(body)
        twin = self.store.get_twin(device_id, "") or Twin()
        require_etag(if_match or "*", twin.etag)
        old_tags = copy.deepcopy(twin.tags)
        patch = Twins._apply_twin_update(twin, desired, tags, replace)
        self.store.put_twin(device_id, "", twin)
        if twin.tags != old_tags:
            logger.info("device %s: tags changed; re-evaluating its deployments", device_id)
            self.reevaluate([device_id])
        return self.device_twin(device_id), patch

    # query documents
    def _device_doc(self, device_id: str) -> dict[str, Any]:
        return self.device_twin(device_id)

    def _module_docs(self, device_id: str) -> list[dict[str, Any]]:
        applied = self._applied(device_id)
        docs = []
        for identity in self.store.list_identities(device_id):
            if not identity.module_id:
                continue
            twin = self.store.get_twin(device_id, identity.module_id) or Twin()
            doc: dict[str, Any] = {
                "deviceId": device_id,
                "moduleId": identity.module_id,
                "tags": twin.tags,
                "properties": {
                    "desired": {**twin.desired, "$version": twin.desired_version},
                    "reported": {**twin.reported, "$version": twin.reported_version},
                },
            }
            if identity.module_id == "$edgeAgent":
                doc["configurations"] = {
                    config_id: {"status": status} for config_id, status in applied.get("status", {}).items()
                }
            docs.append(doc)
        return docs

    def run_query(self, query: Query) -> list[dict[str, Any]]:
        """Matching documents of a parsed query, projected."""
        out = []
        for device_id in self.store.list_devices():
            docs = [self._device_doc(device_id)] if query.collection == "devices" else self._module_docs(device_id)
            out.extend(query.project(doc) for doc in docs if query.condition(doc))
        return out

    def query(self, body: Any) -> list[dict[str, Any]]:
        """`POST /devices/query` with `{"query": "..."}`."""
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            raise BadRequestError('the query must be {"query": "SELECT ..."}')
        return self.run_query(parse_query(body["query"]))

    # configurations
    def _parse_configuration(self, config_id: str, body: Any) -> dict[str, Any]:
        if not _ID_RE.match(config_id):
            raise BadRequestError(
                f"configuration id {config_id[:130]!r} must be 1-128 lower-case letters, digits or -:+%_#*?!(),=@;$'"
            )
        if not isinstance(body, dict):
            raise BadRequestError("the configuration must be a JSON object")
        if body.get("id") not in (None, config_id):
            raise BadRequestError(f"the body's id {body.get('id')!r} is not the id in the path {config_id!r}")
        content = body.get("content") or {}
        if not isinstance(content, dict) or "modulesContent" not in content:
            raise BadRequestError("content.modulesContent is required (only IoT Edge deployments are supported)")
        validate_modules_content(content["modulesContent"], is_layered(content))
        target = body.get("targetCondition") or ""
        if not isinstance(target, str):
            raise BadRequestError("targetCondition must be a string")
        if target:
            parse_condition(target)
        priority = body.get("priority", 0)
        if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= MAX_PRIORITY:
            raise BadRequestError(f"priority must be an integer from 0 to {MAX_PRIORITY}, got {priority!r}")
        labels = body.get("labels") or {}
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise BadRequestError("labels must be an object of strings")
        queries = ((body.get("metrics") or {}).get("queries")) or {}
        if not isinstance(queries, dict):
            raise BadRequestError("metrics.queries must be an object of name: query")
        for name, text in queries.items():
            parse_query(text) if isinstance(text, str) else None  # pylint: disable=expression-not-assigned
            if not isinstance(text, str):
                raise BadRequestError(f"metric {name!r} must be a query string")
        return {
            "id": config_id,
            "schemaVersion": body.get("schemaVersion") or "1.0",
            "labels": labels,
            "content": {"modulesContent": content["modulesContent"]},
            "targetCondition": target,
            "priority": priority,
            "metrics": {"queries": queries},
        }

    def put_configuration(self, config_id: str, body: Any, if_match: str | None) -> tuple[dict[str, Any], bool]:
        """Create (no If-Match) or update; (configuration, created). As on IoT Hub, an update may change only
        labels, metrics, priority and targetCondition."""
        new = self._parse_configuration(config_id, body)
        existing = self.store.get_configuration(config_id)
        now = utc_now()
        if existing is None:
            if if_match not in (None, "*", '"*"'):
                raise NotFoundError(f"configuration {config_id} does not exist")
            doc = {**new, "createdTimeUtc": now, "lastUpdatedTimeUtc": now, "version": 1}
            created = True
        else:
            if if_match is None:
                raise ConflictError(
                    f"configuration {config_id} already exists; update it with If-Match (its etag or '*')"
                )
            require_etag(if_match, existing["etag"])
            if json.dumps(new["content"], sort_keys=True) != json.dumps(existing["content"], sort_keys=True):
                raise BadRequestError(
                    f"the content of configuration {config_id} cannot change; deploy it under a new id "
                    "(only labels, metrics, priority and targetCondition can be updated)"
                )
            doc = {**existing, **new, "lastUpdatedTimeUtc": now, "version": existing["version"] + 1}
            doc["createdTimeUtc"] = existing["createdTimeUtc"]
            created = False
        doc["etag"] = f"{config_id}:{doc['version']}"
        self.store.put_configuration(config_id, doc)
        logger.info("deployment %s %s (priority %d)", config_id, "created" if created else "updated", doc["priority"])
        self.reevaluate()
        return self.configuration_json(doc), created

    def configuration_json(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The configuration with its system and custom metrics computed now."""
        system = system_queries(doc["id"], doc["targetCondition"] or "false = true")
        metrics = doc.get("metrics", {}).get("queries", {})
        out = {key: value for key, value in doc.items() if key != "version"}
        out["systemMetrics"] = {"queries": system, "results": self._counts(system)}
        out["metrics"] = {"queries": metrics, "results": self._counts(metrics)}
        return out

    def _counts(self, queries: dict[str, str]) -> dict[str, int]:
        results = {}
        for name, text in queries.items():
            try:
                results[name] = len({item.get("deviceId") for item in self.run_query(parse_query(text))})
            except BadRequestError as e:
                logger.warning("metric %s cannot be computed: %s", name, e)
        return results

    def get_configuration(self, config_id: str) -> dict[str, Any]:
        """One configuration or NotFoundError."""
        doc = self.store.get_configuration(config_id)
        if doc is None:
            raise NotFoundError(f"configuration {config_id} does not exist")
        return self.configuration_json(doc)

    def list_configurations(self, top: int) -> list[dict[str, Any]]:
        """Up to `top` configurations."""
        return [self.configuration_json(doc) for doc in self.store.list_configurations()[:top]]

    def delete_configuration(self, config_id: str, if_match: str | None) -> None:
        """Delete; devices fall back to their next matching deployment."""
        doc = self.store.get_configuration(config_id)
        if doc is None:
            raise NotFoundError(f"configuration {config_id} does not exist")
        require_etag(if_match or "*", doc["etag"])
        self.store.delete_configuration(config_id)
        logger.info("deployment %s deleted", config_id)
        self.reevaluate()

    def test_queries(self, body: Any) -> dict[str, Any]:
        """`POST /configurations/testQueries`: which of the queries are valid here."""
        if not isinstance(body, dict):
            raise BadRequestError("the body must be a JSON object")
        out: dict[str, Any] = {"targetConditionError": "", "customMetricQueryErrors": {}}
        if body.get("targetCondition"):
            try:
                parse_condition(body["targetCondition"])
            except BadRequestError as e:
                out["targetConditionError"] = str(e)
        for name, text in (body.get("customMetricQueries") or {}).items():
            try:
                parse_query(text)
            except BadRequestError as e:
                out["customMetricQueryErrors"][name] = str(e)
        return out

    # applying
    def _applied(self, device_id: str) -> dict[str, Any]:
        text = self.store.get_meta(f"applied:{device_id}")
        return dict(json.loads(text)) if text else {}

    def applied_deployments(self, device_id: str) -> list[str]:
        """Ids of the deployments applied to the device now (base first, then layers)."""
        return [cid for cid, status in self._applied(device_id).get("status", {}).items() if status == "Applied"]

    def automatic_deployments(self, device_id: str) -> list[str]:
        """Ids of the automatic deployments that target the device now."""
        device = self._device_doc(device_id)
        return [doc["id"] for doc in self.store.list_configurations() if self._targets(doc, device)]

    @staticmethod
    def _targets(doc: dict[str, Any], device: dict[str, Any]) -> bool:
        condition = doc.get("targetCondition") or ""
        return bool(condition) and parse_condition(condition)(device)

    def apply_content(self, device_id: str, content: Any) -> None:
        """`applyConfigurationContent`: a single-device deployment; refused while automatic deployments target the
        device (the hub then owns its modules)."""
        record = self._device_record(device_id)
        if not record.get("iotEdge"):
            raise BadRequestError(f"device {device_id} is not an IoT Edge device")
        if not isinstance(content, dict) or "modulesContent" not in content:
            raise BadRequestError("the content needs modulesContent")
        if is_layered(content):
            raise BadRequestError("a single-device deployment needs whole $edgeAgent and $edgeHub desired properties")
        validate_modules_content(content["modulesContent"], layered=False)
        targeting = self.automatic_deployments(device_id)
        if targeting:
            raise ConflictError(
                f"device {device_id} is targeted by automatic deployments ({', '.join(sorted(targeting))}); "
                "it takes no single-device deployment: change its tags or those deployments instead"
            )
        self.store.put_meta(f"single:{device_id}", json.dumps(content["modulesContent"]))
        self.store.put_meta(f"single-source:{device_id}", "service")
        self.store.put_meta(f"applied:{device_id}", json.dumps({"status": {}, "automatic": False}))
        self.reevaluate([device_id])

    def replaced_manifest(self, device_id: str, modules_content: dict[str, Any]) -> bool:
        """Whether a single-device deployment through the service API replaced the manifest `start`/`up` gave the
        device, and that manifest is unchanged since: then the deployment stays when the hub starts again."""
        return self.store.get_meta(f"single-source:{device_id}") == "service" and self.store.get_meta(
            f"manifest:{device_id}"
        ) == section_digest(modules_content)

    def remember_manifest(self, device_id: str, modules_content: dict[str, Any]) -> None:
        """The manifest `start`/`up` applied is the device's single-device content (what it falls back to)."""
        self.store.put_meta(f"manifest:{device_id}", section_digest(modules_content))
        self.store.put_meta(f"single-source:{device_id}", "manifest")
        self.store.put_meta(f"single:{device_id}", json.dumps(modules_content))
        for module, section in modules_content.items():
            desired = section.get(DESIRED) if isinstance(section, dict) else None
            if isinstance(desired, dict):
                self.store.put_meta(f"content:{device_id}:{module}", section_digest(desired))

    def reevaluate(self, device_ids: list[str] | None = None) -> None:
        """Choose each device's deployments again and write what changed into its module twins."""
        configs = self.store.list_configurations()
        for device_id in device_ids if device_ids is not None else self.store.list_devices():
            record = self.store.get_device(device_id)
            if not record or not record.get("iotEdge"):
                continue
            self._reevaluate_device(device_id, configs)

    def _reevaluate_device(self, device_id: str, configs: list[dict[str, Any]]) -> None:
        device = self._device_doc(device_id)
        matching = [doc for doc in configs if self._targets(doc, device)]
        bases = sorted((d for d in matching if not is_layered(d["content"])), key=_precedence)
        layers = sorted((d for d in matching if is_layered(d["content"])), key=_precedence)
        status: dict[str, str] = {doc["id"]: "Targeted" for doc in matching}
        # Whether the twins hold an automatic deployment's content: a device no deployment targets any more keeps
        # it (as on IoT Hub) until a single-device deployment replaces it.
        automatic = bool(self._applied(device_id).get("automatic"))
        if bases:
            content = bases[-1]["content"]["modulesContent"]
            status[bases[-1]["id"]] = "Applied"
            automatic = True
        elif automatic:
            content = json.loads(self.store.get_meta(f"base:{device_id}") or "null")
        else:
            content = json.loads(self.store.get_meta(f"single:{device_id}") or "null")
        if content is None or (automatic and not matching):
            self.store.put_meta(f"applied:{device_id}", json.dumps({"status": status, "automatic": automatic}))
            return  # nothing to write: the device keeps what it has
        self.store.put_meta(f"base:{device_id}", json.dumps(content))
        for layer in layers:
            content = merge_layer(content, layer["content"]["modulesContent"])
            status[layer["id"]] = "Applied"
        self.store.put_meta(f"applied:{device_id}", json.dumps({"status": status, "automatic": automatic}))
        self._write_content(device_id, content)

    def _write_content(self, device_id: str, content: dict[str, Any]) -> None:
        """Each module's desired properties, where its section changed since last written (a twin the service
        patched since keeps its values until its section changes, as a deployment does)."""
        agent = content.get("$edgeAgent", {}).get(DESIRED, {})
        for module in agent.get("modules", {}) or {}:
            self._ensure_identity(device_id, module)
        ordered = [m for m in SYSTEM_MODULES if m in content] + [m for m in content if m not in SYSTEM_MODULES]
        for module in ordered:
            desired = content[module].get(DESIRED)
            if not isinstance(desired, dict):
                continue
            digest = section_digest(desired)
            key = f"content:{device_id}:{module}"
            _, created = self._ensure_identity(device_id, module)
            if created or self.store.get_meta(key) != digest:
                self._write_twin(device_id, module, desired)
                self.store.put_meta(key, digest)
