"""Errors of the model repository."""

from edgevision.errors import EdgeVisionError


class ModelError(EdgeVisionError):
    """A model cannot be used."""


class ModelNotFoundError(ModelError):
    """No such model name or version in the repository."""


class ManifestError(ModelError):
    """`model.json` is missing, not JSON, or does not describe a usable model."""


class ModelFileError(ModelError):
    """A file the manifest names is missing or does not match its SHA-256 (corrupt or replaced)."""
