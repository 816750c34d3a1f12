"""`edgevision publish-model`: zip a model version folder, upload it to a blob container, make a read-only SAS URL
with an expiry, and ask a module for it through its twin's desired properties (IoT Hub's service API)."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from edgevision.errors import EdgeVisionError
from edgevision.models import ModelRepository, redact_url
from edgevision.models.errors import ModelError


class PublishError(EdgeVisionError):
    """The model could not be packaged, uploaded or requested."""


@dataclass(frozen=True)
class Published:
    """What was uploaded and requested (the SAS URL itself is a secret and is not kept here)."""

    file_name: str
    blob_url: str
    md5: str
    sha256: str
    expires: str
    name: str
    version: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return dict(self.__dict__)


def package_folder(folder: Path) -> tuple[bytes, str, str]:
    """The validated model folder as a zip (in a `<name>-<version>/` folder); bytes, name and version."""
    try:
        model = ModelRepository.load_folder(Path(folder))
    except ModelError as e:
        raise PublishError(f"{folder} is not a valid model version folder: {e}") from e
    top = f"{model.manifest.name}-{model.manifest.version}"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zipped:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file() and not path.is_symlink() and ".trt-cache" not in path.parts:
                zipped.write(path, f"{top}/{path.relative_to(folder).as_posix()}")
    return buffer.getvalue(), model.manifest.name, model.manifest.version


def desired_patch(file_name: str, url: str, md5: str, sha256: str) -> dict[str, Any]:
    """The desired properties a module's updater reads (under `modelUpdate`)."""
    return {"modelUpdate": {"FileName": file_name, "DownloadUrl": url, "ContentMD5": md5, "ContentSHA256": sha256}}


def publish_model(  # pylint: disable=too-many-arguments,too-many-positional-arguments,too-many-locals
    folder: Path,
    device: str,
    module: str,
    storage_connection_string: str,
    hub_connection_string: str,
    container: str = "models",
    expiry_hours: float = 24.0,
) -> Published:
    """Package, upload, sign and request `folder` for `device`/`module`."""
    data, name, version = package_folder(folder)
    file_name = f"{name}-{version}.zip"
    md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
    sha256 = hashlib.sha256(data).hexdigest()
    expiry = datetime.now(timezone.utc) + timedelta(hours=expiry_hours)
    blob_url, url = _upload(storage_connection_string, container, file_name, data, expiry)
    _patch_twin(hub_connection_string, device, module, desired_patch(file_name, url, md5, sha256))
    return Published(file_name, redact_url(blob_url), md5, sha256, expiry.isoformat(timespec="seconds"), name, version)


def _upload(  # pylint: disable=too-many-locals
    connection_string: str, container: str, file_name: str, data: bytes, expiry: datetime
) -> tuple[str, str]:
    """Upload the package; its blob URL and its read-only SAS URL."""
    # pylint: disable=import-outside-toplevel
    from azure.core.exceptions import AzureError, ResourceExistsError
    from azure.storage.blob import BlobSasPermissions, BlobServiceClient, ContentSettings, generate_blob_sas

    try:
        service = BlobServiceClient.from_connection_string(connection_string)
        client = service.get_container_client(container)
        try:
            client.create_container()
        except ResourceExistsError:
            pass
        blob = client.get_blob_client(file_name)
        blob.upload_blob(data, overwrite=True, content_settings=ContentSettings(content_type="application/zip"))
        credential = service.credential
        sas = generate_blob_sas(
            account_name=credential.account_name,
            container_name=container,
            blob_name=file_name,
            account_key=credential.account_key,
            permission=BlobSasPermissions(read=True),
            expiry=expiry,
        )
    except (AzureError, ValueError, AttributeError) as e:
        raise PublishError(f"cannot upload {file_name} to container {container!r}: {e}") from e
    return blob.url, f"{blob.url}?{sas}"


def _patch_twin(hub_connection_string: str, device: str, module: str, desired: dict[str, Any]) -> None:
    try:
        # pylint: disable=import-outside-toplevel
        from azure.iot.hub import IoTHubRegistryManager
        from azure.iot.hub.models import Twin, TwinProperties
    except ImportError as e:
        raise PublishError("publish-model needs azure-iot-hub: pip install 'edgevision[publish]'") from e
    try:
        registry = IoTHubRegistryManager.from_connection_string(hub_connection_string)
        twin = registry.get_module_twin(device, module)
        registry.update_module_twin(device, module, Twin(properties=TwinProperties(desired=desired)), twin.etag)
    except Exception as e:  # the service SDK raises HttpOperationError, ValueError, requests' errors
        raise PublishError(f"cannot patch the twin of {device}/{module}: {e}") from e
