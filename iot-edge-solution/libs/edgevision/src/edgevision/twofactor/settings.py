"""Settings of the two-factor flow, shared by `authrequest` (which signs and enqueues requests) and the
classifier's request service (which serves them). Each module adds the class as a base of its own settings."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from edgevision.config import ModuleSettings
from edgevision.security import ModuleKey, ModuleKeyError

DEFAULT_REQUEST_QUEUE = "iot-edge-object-classification-requests"
DEFAULT_RESULT_CONTAINER = "iot-edge-object-classification-responses"
# Storage's rule for queue and container names; the poison queue adds "-poison" (7 characters) to the queue's.
_STORAGE_NAME = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")


def _storage_name(value: str, longest: int) -> str:
    value = value.strip()
    if not _STORAGE_NAME.match(value) or len(value) > longest:
        raise ValueError(
            f"must be 3..{longest} lower-case letters, digits and single hyphens, starting and ending with a letter "
            "or digit (Azure Storage's naming rule)"
        )
    return value


class TwoFactorSettings(ModuleSettings):
    """Where requests and results live, and how requests are signed and held."""

    storage_connection_string: SecretStr | None = Field(
        None,
        description="STORAGE_CONNECTION_STRING: Azure Storage connection string; UseDevelopmentStorage=true means "
        "Azurite on its default ports. Secret.",
    )
    module_key: SecretStr | None = Field(
        None,
        description="MODULE_KEY: base64 key (at least 32 bytes) authrequest signs requests with and the classifier "
        "verifies them with; the same value in both modules. Secret.",
    )
    request_queue: str = Field(DEFAULT_REQUEST_QUEUE, description="REQUEST_QUEUE: the queue of signed requests.")
    result_container: str = Field(
        DEFAULT_RESULT_CONTAINER, description="RESULT_CONTAINER: the blob container of the results."
    )
    request_ttl_seconds: int = Field(
        120, ge=5, le=86400, description="REQUEST_TTL_SECONDS: how long a request waits for its class by default."
    )
    request_visibility_seconds: int = Field(
        30,
        ge=2,
        le=3600,
        description="REQUEST_VISIBILITY_SECONDS: how long a received request stays hidden from other readers; "
        "renewed while it is pending, so this is how soon a crashed classifier's requests come back.",
    )
    max_dequeue_count: int = Field(
        5,
        ge=1,
        le=100,
        description="MAX_DEQUEUE_COUNT: a request received more often than this goes to <REQUEST_QUEUE>-poison.",
    )
    request_poll_seconds: float = Field(
        0.25, gt=0, le=60, description="REQUEST_POLL_SECONDS: the wait between receives while the queue is empty."
    )

    @field_validator("request_queue")
    @classmethod
    def _queue_name(cls, value: str) -> str:
        return _storage_name(value, 63 - 7)

    @field_validator("result_container")
    @classmethod
    def _container_name(cls, value: str) -> str:
        return _storage_name(value, 63)

    @field_validator("module_key")
    @classmethod
    def _usable_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                ModuleKey.from_base64(value.get_secret_value())
            except ModuleKeyError as e:
                raise ValueError(str(e)) from None
        return value

    @field_validator("storage_connection_string")
    @classmethod
    def _connection_string(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return value
        text = value.get_secret_value().strip()
        parts = [part for part in text.split(";") if part.strip()]
        if not parts or any("=" not in part for part in parts):
            raise ValueError("must be Key=Value pairs separated by ';' (or UseDevelopmentStorage=true)")
        return SecretStr(text)

    @property
    def key(self) -> ModuleKey | None:
        """The module key, or None when MODULE_KEY is not set."""
        return None if self.module_key is None else ModuleKey.from_base64(self.module_key.get_secret_value())

    @property
    def connection_string(self) -> str | None:
        """STORAGE_CONNECTION_STRING's value, or None."""
        return None if self.storage_connection_string is None else self.storage_connection_string.get_secret_value()


class AuthRequestSettings(TwoFactorSettings):
    """authrequest needs the key and the Storage account: it cannot do anything without them."""

    storage_connection_string: SecretStr = Field(  # type: ignore[assignment]
        description="STORAGE_CONNECTION_STRING: Azure Storage connection string (required). Secret."
    )
    module_key: SecretStr = Field(  # type: ignore[assignment]
        description="MODULE_KEY: base64 key, at least 32 bytes, shared with the classifier (required). Secret."
    )

    authrequest_state_dir: Path | None = Field(
        None,
        description="AUTHREQUEST_STATE_DIR: folder where authrequest keeps the queued requests whose result it has "
        "not seen yet, so that it still follows them up after a restart (empty: in memory only).",
    )
    enqueue_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=120,
        description="ENQUEUE_TIMEOUT_SECONDS: how long ProcessRequest tries to reach the queue before it answers "
        "503; keep it below the caller's method response timeout.",
    )
