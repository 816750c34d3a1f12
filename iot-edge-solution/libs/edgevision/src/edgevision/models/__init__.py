"""The model repository on disk: `<name>/<version>/model.json` manifests, validated on load."""

from edgevision.models.errors import (
    ManifestError,
    ModelError,
    ModelFileError,
    ModelNotFoundError,
)
from edgevision.models.manifest import (
    ClassificationPostprocess,
    DetectionHead,
    DetectionPostprocess,
    InputSpec,
    ModelManifest,
    PreprocessSpec,
    ResizeSpec,
    TextDetectionPostprocess,
    ZooDetectionPostprocess,
)
from edgevision.models.package import PackageError, PackageLimits, fetch_package, redact_url
from edgevision.models.repository import LoadedModel, ModelRepository, parse_labels, sha256_of

__all__ = [
    "ClassificationPostprocess",
    "DetectionHead",
    "DetectionPostprocess",
    "InputSpec",
    "LoadedModel",
    "ManifestError",
    "ModelError",
    "ModelFileError",
    "ModelManifest",
    "ModelNotFoundError",
    "PackageError",
    "PackageLimits",
    "ModelRepository",
    "PreprocessSpec",
    "ResizeSpec",
    "TextDetectionPostprocess",
    "ZooDetectionPostprocess",
    "fetch_package",
    "parse_labels",
    "redact_url",
    "sha256_of",
]
