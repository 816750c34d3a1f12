"""Module twins: desired and reported properties, tags, versions and etags, and how updates reach the module.

Desired updates follow JSON merge patch (RFC 7386); a replace sends the module a patch that turns its copy into
the new desired properties. A manifest's desired properties apply as IoT Hub applies a deployment.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, Callable

from edgehub_emulator.errors import BadRequestError, NotFoundError, PreconditionFailedError
from edgehub_emulator.jsonlimits import check_twin_depth, parse_json
from edgehub_emulator.store import Identity, Store, Twin

logger = logging.getLogger(__name__)

DESIRED_TOPIC = "$iothub/twin/PATCH/properties/desired/"


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """JSON merge patch: null deletes, objects merge, everything else replaces."""
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):  # RFC 7386: a non-object target counts as {} (nested nulls never stay)
            current = result.get(key)
            result[key] = merge_patch(current if isinstance(current, dict) else {}, value)
        else:
            result[key] = value
    return result


def replacement_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The desired patch of a replace: `new` with null for every key it drops, at every depth, so that a module
    merging it into `old` (JSON merge patch) gets `new` (a top-level-only diff would keep dropped nested keys)."""
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        old_value = old.get(key)
        if isinstance(value, dict) and isinstance(old_value, dict):
            patch[key] = replacement_patch(old_value, value)
        else:
            patch[key] = value
    return patch


def section_digest(section: dict[str, Any]) -> str:
    """A fingerprint of a manifest section: it changes exactly when the section's content changes."""
    return hashlib.sha256(json.dumps(section, sort_keys=True).encode("utf-8")).hexdigest()


def _strip_meta(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if not k.startswith("$")}


def require_etag(if_match: str, current: str) -> None:
    """Raise PreconditionFailedError unless an `If-Match` value (quoted or not) is `*` or the current etag."""
    wanted = if_match.strip().strip('"')
    if wanted not in ("*", current):
        raise PreconditionFailedError(f"etag {wanted!r} does not match the current {current!r}")


class Twins:  # pylint: disable=too-few-public-methods  # the twin operations below are its interface
    """The twins of one device's modules in the store; `push(client_id, topic, payload)` reaches a module that
    subscribed to desired patches (and does nothing otherwise)."""

    def __init__(
        self,
        device_id: str,
        store: Store,
        push: Callable[[str, str, bytes], None],
        connected: Callable[[str], bool],
    ) -> None:
        self.device_id = device_id
        self.store = store
        self._push = push
        self._connected = connected

    def apply_manifest_desired(
        self, module_id: str, desired: dict[str, Any], new_twin: bool, device_id: str | None = None
    ) -> None:
        """A manifest's desired properties, applied as IoT Hub applies a deployment: to a new twin, or when that
        module's section changed since it was last applied; otherwise the twin (with what the service patched
        since) stays."""
        device_id = device_id or self.device_id
        meta = (
            f"manifest-desired:{module_id}"
            if device_id == self.device_id
            else f"manifest-desired:{device_id}:{module_id}"
        )
        digest = section_digest(desired)
        applied = self.store.get_meta(meta)
        if not new_twin and applied == digest:
            logger.info("%s: manifest desired properties unchanged since applied; the twin keeps its values", module_id)
            return
        reason = "new twin" if new_twin else "its manifest section changed"
        logger.info("%s: applying the manifest's desired properties (%s)", module_id, reason)
        check_twin_depth(desired, f"modulesContent.{module_id} desired properties")
        twin = self.store.get_twin(device_id, module_id) or Twin()
        wanted = _strip_meta(desired)
        if twin.desired != wanted:
            twin.desired = wanted
            twin.desired_version += 1
            twin.version += 1
            self.store.put_twin(device_id, module_id, twin)
        self.store.put_meta(meta, digest)

    def twin_for(self, device_id: str, module_id: str) -> Twin:
        """The twin or NotFoundError."""
        twin = self.store.get_twin(device_id, module_id)
        if twin is None:
            raise NotFoundError(f"module {device_id}/{module_id} does not exist")
        return twin

    def twin_sections(self, identity: Identity) -> dict[str, Any]:
        """The MQTT twin GET answer."""
        twin = self.twin_for(identity.device_id, identity.module_id)
        return {
            "desired": {**twin.desired, "$version": twin.desired_version},
            "reported": {**twin.reported, "$version": twin.reported_version},
        }

    def patch_reported(self, identity: Identity, payload: bytes) -> int:
        """Apply a reported patch; BadRequestError for anything but a JSON object. Returns the new version."""
        patch = parse_json(payload, "reported patch")
        if not isinstance(patch, dict):
            raise BadRequestError("reported patch must be a JSON object")
        check_twin_depth(patch, "reported patch")
        twin = self.twin_for(identity.device_id, identity.module_id)
        twin.reported = merge_patch(twin.reported, _strip_meta(patch))
        twin.reported_version += 1
        twin.version += 1
        self.store.put_twin(identity.device_id, identity.module_id, twin)
        return twin.reported_version

    def service_twin(self, device_id: str, module_id: str) -> dict[str, Any]:
        """The twin as the service API returns it."""
        twin = self.twin_for(device_id, module_id)
        return {
            "deviceId": device_id,
            "moduleId": module_id,
            "etag": twin.etag,
            "version": twin.version,
            "status": "enabled",
            "authenticationType": "sas",
            "connectionState": "Connected" if self._connected(f"{device_id}/{module_id}") else "Disconnected",
            "tags": twin.tags,
            "properties": {
                "desired": {**twin.desired, "$version": twin.desired_version},
                "reported": {**twin.reported, "$version": twin.reported_version},
            },
        }

    @staticmethod
    def _twin_update_parts(body: Any) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The desired properties and tags of a service twin update, validated."""
        if not isinstance(body, dict):
            raise BadRequestError("the twin must be a JSON object")
        props = body.get("properties") or {}
        if not isinstance(props, dict):
            raise BadRequestError("'properties' must be an object")
        desired = props.get("desired")
        tags = body.get("tags")
        if desired is not None and not isinstance(desired, dict):
            raise BadRequestError("'properties.desired' must be an object")
        if tags is not None and not isinstance(tags, dict):
            raise BadRequestError("'tags' must be an object")
        check_twin_depth(desired or {}, "the desired properties")
        check_twin_depth(tags or {}, "the tags")
        return desired, tags

    @staticmethod
    def _apply_twin_update(
        twin: Twin, desired: dict[str, Any] | None, tags: dict[str, Any] | None, replace: bool
    ) -> dict[str, Any] | None:
        """Change the twin; returns the desired patch the module must get (None: desired unchanged)."""
        patch: dict[str, Any] | None = None
        if replace:
            new_desired = _strip_meta(desired or {})
            if new_desired != twin.desired:
                patch = replacement_patch(twin.desired, new_desired)
                twin.desired = new_desired
            twin.tags = tags or {}
        else:
            if desired:
                patch = _strip_meta(desired)
                twin.desired = merge_patch(twin.desired, patch)
            if tags:
                twin.tags = merge_patch(twin.tags, tags)
        if patch is not None:
            twin.desired_version += 1
        twin.version += 1
        return patch

    def update_twin(
        self, device_id: str, module_id: str, body: Any, if_match: str | None, replace: bool
    ) -> dict[str, Any]:
        """PATCH (merge) or PUT (replace) from the service; pushes the desired change to the module."""
        desired, tags = self._twin_update_parts(body)
        twin = self.twin_for(device_id, module_id)
        require_etag(if_match or "*", twin.etag)
        patch = self._apply_twin_update(twin, desired, tags, replace)
        self.store.put_twin(device_id, module_id, twin)
        if patch is not None:
            body_out = json.dumps({**patch, "$version": twin.desired_version}).encode()
            self._push(f"{device_id}/{module_id}", f"{DESIRED_TOPIC}?$version={twin.desired_version}", body_out)
        return self.service_twin(device_id, module_id)
