"""Over-the-air model updates driven by the module twin.

Desired properties (the seed's keys at the top level, or the same keys under `modelUpdate`):
`FileName`, `DownloadUrl`, `ContentMD5` (base64 or hex), optional `ContentSHA256`; and `modelVersion` to switch to
an installed version (roll back). A package is downloaded, verified, unpacked, validated, installed into
MODEL_STORE, loaded in a new engine, warmed up, and swapped in; on any failure the old model keeps serving.
Each step is reported in `model: {name, version, sha256, status, error, updatedAt}`; an activation also reports
`LatestAIModelFileName` and sends a `DLModelOutput` message. Each desired request is handled once, also across
restarts (the store remembers it), so the same patch twice is a no-op."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import queue
import shutil
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from pydantic import Field

from edgevision.config import ModuleSettings
from edgevision.errors import EdgeVisionError
from edgevision.iot import IoTError, ModuleConnection
from edgevision.manager import ModelManager, ServedModel
from edgevision.models import LoadedModel, ModelRepository, PackageError, PackageLimits, fetch_package
from edgevision.models.errors import ModelError, ModelNotFoundError

log = logging.getLogger(__name__)

STATE_FILE = "active.json"
OUTPUT_NAME = "DLModelOutput"
# a package whose update the module never finished (killed, or a power loss) this many times is not tried again:
# it is reported failed instead (a package that kills the module must not do so on every start)
MAX_INTERRUPTED_ATTEMPTS = 3


class ModelUpdateSettings(ModuleSettings):
    """Where installed models live and what a package may cost."""

    model_store: Path = Field(
        Path(".model-store"), description="MODEL_STORE: folder of installed model versions (a volume on a device)."
    )
    model_max_bytes: int = Field(1 << 30, gt=0, description="MODEL_MAX_BYTES: largest package download.")
    model_max_unpacked_bytes: int = Field(
        2 << 30, gt=0, description="MODEL_MAX_UNPACKED_BYTES: largest total size a package may unpack to."
    )
    model_max_files: int = Field(1000, gt=0, description="MODEL_MAX_FILES: most entries a package may hold.")
    model_download_timeout_seconds: float = Field(
        60.0, gt=0, description="MODEL_DOWNLOAD_TIMEOUT_SECONDS: network timeout of a package download."
    )

    def package_limits(self) -> PackageLimits:
        """The limits these settings set."""
        return PackageLimits(
            self.model_max_bytes,
            self.model_max_unpacked_bytes,
            self.model_max_files,
            self.model_download_timeout_seconds,
        )


@dataclass(frozen=True)
class UpdateRequest:
    """A package the twin asks for."""

    file_name: str
    url: str
    md5: str | None
    sha256: str | None

    @property
    def key(self) -> str:
        """Identifies the request (a digest: the URL's SAS token is a secret and is not stored)."""
        return hashlib.sha256(json.dumps([self.file_name, self.url, self.md5, self.sha256]).encode()).hexdigest()


def parse_request(desired: dict[str, Any]) -> UpdateRequest | None:
    """The package request in desired properties, or None; PackageError when it is malformed."""
    section = desired.get("modelUpdate")
    if not isinstance(section, dict):
        section = desired
    url = section.get("DownloadUrl")
    if url is None:
        return None
    fields = {key: section.get(key) for key in ("FileName", "DownloadUrl", "ContentMD5", "ContentSHA256")}
    for key, value in fields.items():
        if value is not None and not isinstance(value, str):
            raise PackageError("downloading", f"desired property {key} must be a string")
    if not url:
        raise PackageError("downloading", "desired property DownloadUrl is empty")
    file_name = fields["FileName"] or url.split("?")[0].rsplit("/", 1)[-1]
    return UpdateRequest(file_name, url, fields["ContentMD5"] or None, fields["ContentSHA256"] or None)


def merge_patch(document: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """`document` with a twin patch applied (nested objects merge, null removes); `$`-keys are dropped."""
    merged = dict(document)
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_patch(merged[key], value)
        else:
            merged[key] = value
    return merged


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class ModelStore:
    """MODEL_STORE: installed versions (`<name>/<version>/`) and `active.json` (the active version and the
    desired requests already handled)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def state(self) -> dict[str, Any]:
        """The saved state, or {} when there is none (or it is unreadable, which is logged)."""
        path = self.root / STATE_FILE
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            log.warning("ignoring unreadable %s: %s", path, e)
            return {}
        return data if isinstance(data, dict) else {}

    def save(self, **changes: Any) -> None:
        """Update the saved state atomically (write, then rename)."""
        self.root.mkdir(parents=True, exist_ok=True)
        state = {**self.state(), **changes}
        temporary = self.root / f".{STATE_FILE}.tmp"
        temporary.write_text(json.dumps(state, indent=2), encoding="utf-8")
        temporary.replace(self.root / STATE_FILE)

    def discard_leftovers(self) -> list[str]:
        """Remove what an update cut short left (its `.incoming-*` scratch folder: a partial download or a half
        unpacked model; a version folder only ever appears whole, by one rename), each with a warning; their names."""
        removed = []
        for leftover in sorted(self.root.glob(".incoming-*")) if self.root.is_dir() else []:
            shutil.rmtree(leftover, ignore_errors=True)
            log.warning(
                "removed %s from MODEL_STORE, left by a model update cut short (never installed)", leftover.name
            )
            removed.append(leftover.name)
        return removed

    def load(self, name: str, version: str) -> LoadedModel:
        """An installed version, validated (SHA-256 included)."""
        if not self.root.is_dir():
            raise ModelNotFoundError(f"MODEL_STORE {self.root} holds no models yet")
        return ModelRepository(self.root).load(name, version)


def find_version(store: ModelStore, bundled: Path | None, name: str, version: str) -> LoadedModel:
    """Version `version` of model `name`: installed in the store, else bundled. When neither has it, the error
    names the versions each place does have (the store's alone would hide the bundled ones, and the reverse)."""
    try:
        return store.load(name, version)
    except ModelNotFoundError:
        if bundled is None or not Path(bundled).is_dir():
            installed = ModelRepository(store.root).versions(name) if store.root.is_dir() else []
            raise ModelNotFoundError(
                f"model {name!r} has no version {version!r} (installed in MODEL_STORE: "
                f"{', '.join(installed) or 'none'})"
            ) from None
    repository = ModelRepository(bundled)
    try:
        return repository.load(name, version)
    except ModelNotFoundError:
        installed = ModelRepository(store.root).versions(name) if store.root.is_dir() else []
        shipped = repository.versions(name)
        raise ModelNotFoundError(
            f"model {name!r} has no version {version!r} (installed in MODEL_STORE: {', '.join(installed) or 'none'};"
            f" bundled: {', '.join(shipped) or 'none'})"
        ) from None


class ModelUpdater:
    """Applies the twin's model requests to `manager`, one at a time on its own thread."""

    def __init__(
        self,
        manager: ModelManager,
        connection: ModuleConnection,
        store: Path,
        limits: PackageLimits | None = None,
        fallback_repository: Path | None = None,
    ) -> None:
        self.manager = manager
        self.connection = connection
        self.store = ModelStore(store)
        self.limits = limits or PackageLimits()
        self.fallback_repository = fallback_repository
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="model-updates", daemon=True)
        self._idle = threading.Event()
        self._idle.set()
        self._desired: dict[str, Any] = {}
        self._desired_lock = threading.Lock()
        self._pending = 0
        self.handled = 0

    @classmethod
    def from_settings(
        cls,
        settings: ModelUpdateSettings,
        manager: ModelManager,
        connection: ModuleConnection,
        fallback_repository: Path | None = None,
    ) -> ModelUpdater:
        """An updater as MODEL_STORE and the MODEL_* limits say."""
        return cls(manager, connection, settings.model_store, settings.package_limits(), fallback_repository)

    # -- start-up --------------------------------------------------------------------------------------------
    def initial_model(self, default: Callable[[], LoadedModel], model_name: str | None = None) -> LoadedModel:
        """The version active before a restart when MODEL_STORE has it (and it is a version of `model_name`, when
        given: a changed MODEL_NAME wins), else `default()`. What an update cut short left is removed first."""
        self.store.discard_leftovers()
        state = self.store.state()
        name, version = state.get("name"), state.get("version")
        if model_name is not None and name is not None and name != model_name:
            log.info("MODEL_NAME is %s now; not using %s:%s, active before the restart", model_name, name, version)
        elif isinstance(name, str) and isinstance(version, str):
            try:
                model = self._find(name, version)
                log.info("using %s, active before the restart", model.ref)
                return model
            except ModelError as e:
                log.warning(
                    "the previously active model %s:%s cannot be used (%s); using the default", name, version, e
                )
        return default()

    def register(self) -> None:
        """Listen to desired properties (call before `connection.start()`) and start the worker."""
        self.connection.on_desired(self.on_desired)
        if not self._thread.is_alive():
            self._thread.start()

    def on_desired(self, desired: dict, complete: bool) -> None:
        """Merge desired properties (a whole document, or a patch as JSON merge-patch: null removes a key) into
        the module's view of the desired document and queue that for the worker."""
        with self._desired_lock:
            self._desired = dict(desired) if complete else merge_patch(self._desired, desired)
            snapshot = copy.deepcopy(self._desired)
            self._pending += 1
            self._idle.clear()
        self._queue.put(snapshot)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every queued request is handled (for tests and tools)."""
        return self._idle.wait(timeout)

    def stop(self) -> None:
        """Finish the request in progress, then stop."""
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(30)

    # -- work ------------------------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            desired = self._queue.get()
            if desired is None:
                return
            try:
                self.handle(desired)
            except Exception:  # pylint: disable=broad-exception-caught
                log.exception("model update failed unexpectedly")
            finally:
                with self._desired_lock:
                    self._pending -= 1
                    if self._pending == 0:
                        self._idle.set()

    def handle(self, desired: dict[str, Any]) -> None:
        """Apply one desired document or patch: a new package, then a version switch, each only when new."""
        state = self.store.state()
        try:
            request = parse_request(desired)
        except PackageError as e:
            self._report_failure(e)
            request = None
        if request is not None and request.key != state.get("package"):
            self._once(
                "package", request.key, f"the update to {request.file_name}", lambda: self.apply_package(request), state
            )
            state = self.store.state()
        version = desired.get("modelVersion")
        if version is not None and str(version) != state.get("versionRequest"):
            self._once(
                "version",
                str(version),
                f"the switch to version {version}",
                lambda: self.switch_version(str(version)),
                state,
            )
        self.handled += 1

    def _once(self, kind: str, key: str, what: str, action: Callable[[], Any], state: dict[str, Any]) -> None:
        """Run `action` (a package update, or a version switch), recorded as handled once it ends (active or
        failed) under `package`/`versionRequest`. A module killed during it finds the request in progress
        (`<kind>InProgress`) at its next start and runs it again (it used to be marked handled before it began, so
        a kill during the download or the engine build left the old model `active` with the request never tried
        again); after MAX_INTERRUPTED_ATTEMPTS starts that never finished it, it is reported failed."""
        done = "package" if kind == "package" else "versionRequest"
        in_progress, attempts_key = f"{kind}InProgress", f"{kind}Attempts"
        attempts = int(state.get(attempts_key) or 0) if state.get(in_progress) == key else 0
        handled = {done: key, in_progress: None, attempts_key: None}
        if attempts >= MAX_INTERRUPTED_ATTEMPTS:
            self.store.save(**handled)
            self._report_failure(
                PackageError(
                    "applying",
                    f"{what}: the module stopped during it {attempts} times; not tried again (publish it again "
                    "to retry)",
                )
            )
            return
        if attempts:
            log.warning("%s was cut short %d time(s) (the module stopped during it); applying it again", what, attempts)
        self.store.save(**{in_progress: key, attempts_key: attempts + 1})
        try:
            action()
        except Exception:  # an unexpected error ends it too; a stop (SIGTERM, SIGKILL) does not
            self.store.save(**handled)
            raise
        self.store.save(**handled)

    def apply_package(self, request: UpdateRequest) -> ServedModel | None:
        """Download ... activate one package; None (status failed, old model serving) when any step fails."""
        log.info("model update requested: %s", request.file_name)
        try:
            installed = fetch_package(
                request.url, self.store.root, self.limits, request.md5, request.sha256, on_step=self._report_status
            )
        except EdgeVisionError as e:
            self._report_failure(e)
            return None
        try:
            self._report_status("loading")
            served = self.manager.build(installed.model)
        except EdgeVisionError as e:
            if installed.new:  # a version that cannot run is not kept for a later rollback
                shutil.rmtree(installed.model.folder, ignore_errors=True)
            self._report_failure(e)
            return None
        self._activate(served, request.file_name)
        return served

    def switch_version(self, version: str) -> ServedModel | None:
        """Activate an installed version of the model in service (roll back or forward)."""
        current = self.manager.current
        if current is None:
            return None
        if current.version == version:
            self._report_status("active")
            return current
        try:
            self._report_status("loading")
            served = self.manager.build(self._find(current.name, version))
        except EdgeVisionError as e:
            self._report_failure(e)
            return None
        self._activate(served, self.store.state().get("fileName"))
        return served

    def _find(self, name: str, version: str) -> LoadedModel:
        return find_version(self.store, self.fallback_repository, name, version)

    def _activate(self, served: ServedModel, file_name: str | None) -> None:
        self.manager.swap(served)
        self.store.save(name=served.name, version=served.version, fileName=file_name, lastError=None)
        patch: dict[str, Any] = {"model": self._model_report("active", None)}
        if file_name:
            patch["LatestAIModelFileName"] = file_name
        self._report(patch)
        body = {
            "FileName": file_name,
            "name": served.name,
            "version": served.version,
            "sha256": served.sha256,
            "activatedAt": _now(),
        }
        try:
            self.connection.send_output(OUTPUT_NAME, body, {"event": "modelActivated"})
        except IoTError as e:
            log.warning("could not send %s: %s", OUTPUT_NAME, e)

    # -- reporting -------------------------------------------------------------------------------------------
    def _model_report(self, status: str, error: str | None) -> dict[str, Any]:
        current = self.manager.current
        return {
            "name": current.name if current else None,
            "version": current.version if current else None,
            "sha256": current.sha256 if current else None,
            "status": status,
            "error": error,
            "updatedAt": _now(),
            # the backend actually running it (after any TensorRT fallback), its version, device and precision
            "engine": current.task.engine.describe() if current else None,
        }

    def report_active(self) -> None:
        """Report the model in service and its engine (at start, once the module reaches its twin). When the last
        request failed, that failure is reported again with the model serving since: a restart must not turn an
        update that failed into an `active` that hides it (the request is not tried again by itself)."""
        error = self.store.state().get("lastError")
        if isinstance(error, str) and error:
            self._report({"model": self._model_report("failed", error)})
        else:
            self._report_status("active")

    def _report_status(self, status: str) -> None:
        self._report({"model": self._model_report(status, None)})

    def _report_failure(self, error: EdgeVisionError) -> None:
        step = getattr(error, "step", "loading")
        reason = f"{step}: {error}"
        log.error("model update failed (the current model stays active): %s", reason)
        self.store.save(lastError=reason)
        self._report({"model": self._model_report("failed", reason)})

    def _report(self, patch: dict[str, Any]) -> None:
        try:
            self.connection.report(patch)
        except IoTError as e:
            log.warning("could not report the model status: %s", e)
