"""Typed settings of the front-end, read once from the environment. A bad value stops start-up with a message that
names the variable (the same pattern as the edge modules' settings in edgevision.config)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from frontend.errors import SettingsError

# The classifier's bundled model: its labels are the objects a user can enrol (iot-edge-solution/models).
BUNDLED_LABELS = Path(__file__).resolve().parents[3] / "models" / "efficientnet-lite0" / "1" / "labels.txt"
DEFAULT_CONTAINER = "iot-edge-object-classification-responses"
_BOOLS = {"true": True, "1": True, "false": False, "0": False}


class StoreSettings(BaseSettings):
    """What the user store needs: the `frontend users` commands read only these."""

    # env_ignore_empty: `NAME=` in a .env means "not set", so the default applies
    model_config = SettingsConfigDict(
        extra="forbid", case_sensitive=False, validate_default=True, env_ignore_empty=True
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", description="LOG_LEVEL: DEBUG, INFO, WARNING, ERROR or CRITICAL (any case)."
    )
    frontend_database: Path = Field(
        Path(".state/frontend/frontend.sqlite3"),
        description="FRONTEND_DATABASE: the SQLite file of users, sessions and failed sign-ins (created if missing).",
    )
    frontend_labels_file: Path = Field(
        BUNDLED_LABELS,
        description="FRONTEND_LABELS_FILE: the classifier model's labels.txt; enrolled objects must be one of them.",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("frontend_labels_file")
    @classmethod
    def _existing_file(cls, value: Path) -> Path:
        if not value.is_file():
            raise ValueError(f"{value} is not a file")
        return value


class FrontendSettings(StoreSettings):
    """Everything the web app needs."""

    iothub_connection_string: str = Field(
        min_length=1,
        description="IOTHUB_CONNECTION_STRING: IoT Hub service connection string (a policy with service connect); "
        "locally `edgehub-emulator env` prints the emulator's.",
    )
    storage_connection_string: str = Field(
        "UseDevelopmentStorage=true",
        min_length=1,
        description="STORAGE_CONNECTION_STRING: the Storage account the classifier writes results to.",
    )
    result_container: str = Field(
        DEFAULT_CONTAINER, min_length=3, description="RESULT_CONTAINER: the blob container of the results."
    )
    frontend_device_id: str = Field(
        "edge-device", min_length=1, description="FRONTEND_DEVICE_ID: the IoT Edge device that runs authrequest."
    )
    frontend_module_id: str = Field(
        "authrequest", min_length=1, description="FRONTEND_MODULE_ID: the module that answers ProcessRequest."
    )
    frontend_host: str = Field("127.0.0.1", min_length=1, description="FRONTEND_HOST: the address to listen on.")
    frontend_port: int = Field(8000, ge=1, le=65535, description="FRONTEND_PORT: the port to listen on.")
    frontend_secret_key: str = Field(
        "",
        description="FRONTEND_SECRET_KEY: signs the session cookie, at least 32 characters; empty = a new random "
        "key at each start (sessions end when the app restarts).",
    )
    frontend_cookie_secure: bool = Field(
        False, description="FRONTEND_COOKIE_SECURE: send the session cookie over HTTPS only (set True behind TLS)."
    )
    frontend_session_seconds: int = Field(
        3600, ge=60, description="FRONTEND_SESSION_SECONDS: a session ends after this long without a request."
    )
    frontend_request_seconds: int = Field(
        60, ge=5, le=3600, description="FRONTEND_REQUEST_SECONDS: how long the user has to show the object."
    )
    frontend_method_timeout_seconds: int = Field(
        15, ge=5, le=300, description="FRONTEND_METHOD_TIMEOUT_SECONDS: how long to wait for ProcessRequest's answer."
    )
    frontend_max_failures: int = Field(
        5, ge=1, description="FRONTEND_MAX_FAILURES: failed sign-ins of one user name that lock it out."
    )
    frontend_failure_window_seconds: int = Field(
        900, ge=1, description="FRONTEND_FAILURE_WINDOW_SECONDS: failures older than this are not counted."
    )
    frontend_lockout_seconds: int = Field(
        300, ge=1, description="FRONTEND_LOCKOUT_SECONDS: how long a locked-out user name must wait."
    )
    frontend_retry_session_limit: int = Field(
        3,
        ge=1,
        description="FRONTEND_RETRY_SESSION_LIMIT: new device requests (Try again) one session may start within "
        "FRONTEND_RETRY_WINDOW_SECONDS.",
    )
    frontend_retry_user_limit: int = Field(
        6,
        ge=1,
        description="FRONTEND_RETRY_USER_LIMIT: new device requests (Try again) one user may start within "
        "FRONTEND_RETRY_WINDOW_SECONDS, all sessions together.",
    )
    frontend_retry_window_seconds: int = Field(
        300, ge=1, description="FRONTEND_RETRY_WINDOW_SECONDS: Try again requests older than this are not counted."
    )

    @field_validator("frontend_cookie_secure", mode="before")
    @classmethod
    def _strict_bool(cls, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text not in _BOOLS:
            raise ValueError("accepted values are True or False (any case), 1 or 0")
        return _BOOLS[text]

    @field_validator("frontend_secret_key")
    @classmethod
    def _long_enough(cls, value: str) -> str:
        if value and len(value) < 32:
            raise ValueError("must be at least 32 characters (or empty for a random key per start)")
        return value


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def _describe(error: dict[str, Any]) -> str:
    name = "_".join(str(part) for part in error["loc"]).upper() or "(settings)"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "missing":
        return f"{name} is required but not set"
    value = error.get("input")
    secret = "CONNECTION_STRING" in name or "SECRET" in name
    shown = f"={value!r}" if isinstance(value, (str, int, float)) and not secret else ""
    return f"{name}{shown}: {message}"


def load_settings(settings_class: type[SettingsT], **overrides: Any) -> SettingsT:
    """Read `settings_class` from the environment; raise SettingsError naming every bad variable (never a
    secret's value)."""
    try:
        return settings_class(**overrides)
    except ValidationError as e:
        problems = "; ".join(_describe(err) for err in e.errors())
        raise SettingsError(f"invalid configuration: {problems}") from e
