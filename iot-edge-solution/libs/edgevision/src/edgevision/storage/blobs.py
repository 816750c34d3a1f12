"""A blob container written only by conditional create: an existing blob is never overwritten, so the first
result written for a request stands, whoever writes second."""

from __future__ import annotations

import logging
from typing import Any, Callable

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContentSettings

from edgevision.storage.errors import StorageError, StorageUnavailableError, call, error_code
from edgevision.storage.queues import CLIENT_OPTIONS

log = logging.getLogger(__name__)


class BlobStore:
    """One container over azure-storage-blob; created when missing."""

    def __init__(self, connection_string: str, container: str, **client_options: Any) -> None:
        self.container = container
        self._service = BlobServiceClient.from_connection_string(
            connection_string, **{**CLIENT_OPTIONS, **client_options}
        )
        self.client = self._service.get_container_client(container)

    def ensure(self) -> None:
        """Create the container when missing."""
        try:
            call(f"creating container {self.container}", self.client.create_container)
            log.info("created container %s", self.container)
        except StorageError as e:
            if not isinstance(e.__cause__, ResourceExistsError):
                raise

    def _with_container(self, doing: str, operation: Callable[[], Any]) -> Any:
        try:
            return call(doing, operation)
        except StorageError as e:
            if isinstance(e, StorageUnavailableError) or error_code(e.__cause__) != "ContainerNotFound":
                raise
            self.ensure()
            return call(doing, operation)

    def create(self, name: str, data: bytes, content_type: str, metadata: dict[str, str] | None = None) -> bool:
        """Write blob `name` only when it does not exist (If-None-Match: *); True when written, False when a blob
        of that name was there already (it is left as it is)."""
        blob = self.client.get_blob_client(name)
        try:
            self._with_container(
                f"creating blob {self.container}/{name}",
                lambda: blob.upload_blob(
                    data,
                    overwrite=False,
                    metadata=metadata,
                    content_settings=ContentSettings(content_type=content_type),
                ),
            )
        except StorageError as e:
            if isinstance(e.__cause__, ResourceExistsError):
                return False
            raise
        return True

    def read(self, name: str) -> tuple[bytes, dict[str, str]] | None:
        """The content and metadata of blob `name`, or None when it does not exist."""
        blob = self.client.get_blob_client(name)
        try:
            downloader = call(f"reading blob {self.container}/{name}", blob.download_blob)
            return downloader.readall(), dict(downloader.properties.metadata or {})
        except StorageError as e:
            if isinstance(e.__cause__, ResourceNotFoundError):
                return None
            raise

    def metadata(self, name: str) -> dict[str, str] | None:
        """The metadata of blob `name`, or None when it does not exist."""
        blob = self.client.get_blob_client(name)
        try:
            properties = call(f"reading blob {self.container}/{name}", blob.get_blob_properties)
        except StorageError as e:
            if isinstance(e.__cause__, ResourceNotFoundError):
                return None
            raise
        return dict(properties.metadata or {})

    def listing(self, prefix: str) -> dict[str, dict[str, str]]:
        """Name -> metadata of every blob whose name starts with `prefix` (one request; the container may be
        missing: then nothing)."""
        try:
            return call(
                f"listing {self.container}/{prefix}",
                lambda: {
                    b.name: dict(b.metadata or {})
                    for b in self.client.list_blobs(name_starts_with=prefix, include=["metadata"])
                },
            )
        except StorageError as e:
            if error_code(e.__cause__) == "ContainerNotFound":
                return {}
            raise

    def set_metadata(self, name: str, metadata: dict[str, str]) -> None:
        """Replace the metadata of blob `name` (its content stays)."""
        blob = self.client.get_blob_client(name)
        call(f"setting metadata of {self.container}/{name}", lambda: blob.set_blob_metadata(metadata))

    def close(self) -> None:
        """Close the HTTP session."""
        self._service.close()
