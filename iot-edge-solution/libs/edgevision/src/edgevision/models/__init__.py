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
)
from edgevision.models.repository import LoadedModel, ModelRepository, sha256_of

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
    "ModelRepository",
    "PreprocessSpec",
    "ResizeSpec",
    "TextDetectionPostprocess",
    "sha256_of",
]
