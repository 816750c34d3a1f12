"""A model repository on disk: `<root>/<name>/<version>/model.json` plus the files it names."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from edgevision.files import sha256_of
from edgevision.models.errors import ManifestError, ModelFileError, ModelNotFoundError
from edgevision.models.manifest import ModelManifest

log = logging.getLogger(__name__)

MANIFEST_NAME = "model.json"


def _version_key(version: str) -> tuple[int, int | str]:
    # numeric versions sort numerically and above non-numeric ones
    return (1, int(version)) if version.isdigit() else (0, version)


@dataclass(frozen=True)
class LoadedModel:
    """A validated model version: its manifest, folder and labels."""

    manifest: ModelManifest
    folder: Path
    labels: tuple[str, ...]

    @property
    def model_path(self) -> Path:
        """The model file (e.g. model.onnx)."""
        return self.folder / self.manifest.file

    @property
    def ref(self) -> str:
        """`name:version`, for logs and results."""
        return f"{self.manifest.name}:{self.manifest.version}"


class ModelRepository:
    """Finds and validates models under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ModelNotFoundError(f"model repository {self.root} is not a folder")

    def names(self) -> list[str]:
        """Model names that have at least one version with a manifest."""
        return sorted(p.parent.parent.name for p in self.root.glob(f"*/*/{MANIFEST_NAME}"))

    def versions(self, name: str) -> list[str]:
        """The versions of `name`, oldest first."""
        folder = self.root / name
        found = [p.parent.name for p in folder.glob(f"*/{MANIFEST_NAME}")] if folder.is_dir() else []
        return sorted(found, key=_version_key)

    def load(self, name: str, version: str | None = None, *, verify: bool = True) -> LoadedModel:
        """Load and validate `name` at `version` (default: the newest). `verify` checks the SHA-256."""
        versions = self.versions(name)
        if not versions:
            known = ", ".join(sorted(set(self.names()))) or "none"
            raise ModelNotFoundError(f"no model named {name!r} in {self.root} (models there: {known})")
        if version is None:
            version = versions[-1]
        elif version not in versions:
            raise ModelNotFoundError(f"model {name!r} has no version {version!r} (versions: {', '.join(versions)})")
        return self.load_folder(self.root / name / version, verify=verify)

    @staticmethod
    def load_folder(folder: Path, *, verify: bool = True) -> LoadedModel:
        """Validate one version folder (also used for models that arrive over the air)."""
        manifest = read_manifest(folder / MANIFEST_NAME)
        if manifest.name != folder.parent.name or manifest.version != folder.name:
            log.debug("manifest %s:%s lives in %s", manifest.name, manifest.version, folder)
        model_file = folder / manifest.file
        if not model_file.is_file():
            raise ModelFileError(f"model file {model_file} named by {folder / MANIFEST_NAME} does not exist")
        if verify:
            actual = sha256_of(model_file)
            if actual != manifest.sha256:
                raise ModelFileError(
                    f"model file {model_file} is corrupt or was replaced: SHA-256 {actual} does not match "
                    f"the manifest's {manifest.sha256}"
                )
        labels: tuple[str, ...] = ()
        if manifest.labels:
            labels_file = folder / manifest.labels
            if not labels_file.is_file():
                raise ModelFileError(f"labels file {labels_file} named by the manifest does not exist")
            labels = parse_labels(labels_file.read_text(encoding="utf-8"))
            if not labels:
                raise ModelFileError(f"labels file {labels_file} is empty")
        return LoadedModel(manifest=manifest, folder=folder, labels=labels)


_ID_AND_NAME = re.compile(r"^(\d+)[\s:]+(\S.*)$")
# What a labels file writes for a class id without a name (the Detection Zoo's gaps in COCO's 90 ids).
UNNAMED = "???"


def parse_labels(text: str) -> tuple[str, ...]:
    """Class names by class id, from one of three formats:
    - one name per line (the repository's `labels.txt`): line k is class k;
    - the Detection Zoo's `labelmap.txt`: the same, but its first line `???` is the background the model's class
      ids do not count, so it is dropped (a later `???` marks an id without a name);
    - `<id>  <name>` per line (Coral's `coco_labels.txt`): ids may leave gaps, which stay unnamed.
    Unnamed ids are UNNAMED; `Task.label` shows them as `class_<id>`."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines and all(_ID_AND_NAME.match(line) for line in lines):
        pairs = {int(m.group(1)): m.group(2).strip() for m in map(_ID_AND_NAME.match, lines) if m}
        return tuple(pairs.get(i, UNNAMED) for i in range(max(pairs) + 1))
    if lines and lines[0] == UNNAMED:
        lines = lines[1:]
    return tuple(lines)


def read_manifest(path: Path) -> ModelManifest:
    """Parse and validate a `model.json`; ManifestError says which field is wrong and why."""
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ManifestError(f"manifest {path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ManifestError(f"manifest {path} must hold a JSON object")
    try:
        return ModelManifest.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(manifest)'}: "
            f"{'missing required field' if err['type'] == 'missing' else err['msg']}"
            for err in e.errors()
        )
        raise ManifestError(f"manifest {path} is invalid: {problems}") from e
