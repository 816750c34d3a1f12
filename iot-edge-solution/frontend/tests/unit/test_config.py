"""Settings: defaults, and bad values that name the variable (never a secret's value)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from frontend.config import BUNDLED_LABELS, FrontendSettings, StoreSettings, load_settings
from frontend.errors import SettingsError


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTHUB_CONNECTION_STRING", "HostName=h;SharedAccessKeyName=s;SharedAccessKey=k")
    settings = load_settings(FrontendSettings)
    assert settings.storage_connection_string == "UseDevelopmentStorage=true"
    assert settings.result_container == "iot-edge-object-classification-responses"
    assert (settings.frontend_device_id, settings.frontend_module_id) == ("edge-device", "authrequest")
    assert settings.frontend_labels_file == BUNDLED_LABELS and BUNDLED_LABELS.is_file()
    assert settings.frontend_port == 8000


@pytest.mark.parametrize(
    ("variable", "value", "error"),
    [
        ("IOTHUB_CONNECTION_STRING", None, "IOTHUB_CONNECTION_STRING is required but not set"),
        ("FRONTEND_PORT", "0", "FRONTEND_PORT='0': Input should be greater than or equal to 1"),
        ("FRONTEND_PORT", "http", "FRONTEND_PORT='http'"),
        ("FRONTEND_COOKIE_SECURE", "yes", "FRONTEND_COOKIE_SECURE='yes': accepted values are True or False"),
        ("FRONTEND_SECRET_KEY", "short", "FRONTEND_SECRET_KEY: must be at least 32 characters"),
        ("FRONTEND_LABELS_FILE", "/nonexistent/labels.txt", "FRONTEND_LABELS_FILE='/nonexistent/labels.txt'"),
        ("FRONTEND_REQUEST_SECONDS", "1", "FRONTEND_REQUEST_SECONDS='1'"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL='LOUD'"),
    ],
)
def test_bad_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str | None, error: str
) -> None:
    monkeypatch.setenv("IOTHUB_CONNECTION_STRING", "HostName=h;SharedAccessKeyName=s;SharedAccessKey=k")
    if value is None:
        monkeypatch.delenv(variable)
    else:
        monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=error.replace("(", r"\(")):
        load_settings(FrontendSettings)


def test_secrets_are_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRONTEND_SECRET_KEY", "tooshort-secret")
    monkeypatch.setenv("IOTHUB_CONNECTION_STRING", "HostName=h;SharedAccessKey=s3cr3t")
    monkeypatch.setenv("FRONTEND_PORT", "-1")
    with pytest.raises(SettingsError) as caught:
        load_settings(FrontendSettings)
    assert "tooshort-secret" not in str(caught.value) and "s3cr3t" not in str(caught.value)
    assert "FRONTEND_SECRET_KEY" in str(caught.value) and "FRONTEND_PORT='-1'" in str(caught.value)


def test_store_settings_need_no_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("IOTHUB_CONNECTION_STRING", raising=False)
    monkeypatch.setenv("FRONTEND_DATABASE", str(tmp_path / "x.sqlite3"))
    assert load_settings(StoreSettings).frontend_database == tmp_path / "x.sqlite3"


def test_env_template_documents_every_setting() -> None:
    template = BUNDLED_LABELS.parents[4] / ".env_template"
    listed = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", template.read_text(encoding="utf-8"), re.MULTILINE))
    fields = dict(FrontendSettings.model_fields)
    missing = sorted(name.upper() for name in fields if name.upper() not in listed)
    assert not missing, f".env_template does not document {missing}"


def test_env_template_values_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented defaults load as they are (empty values mean the default)."""
    template = BUNDLED_LABELS.parents[4] / ".env_template"
    for name, value in re.findall(
        r"^(FRONTEND_[A-Z_]+|RESULT_CONTAINER)=(.*)$", template.read_text(encoding="utf-8"), re.MULTILINE
    ):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("IOTHUB_CONNECTION_STRING", "HostName=h;SharedAccessKeyName=s;SharedAccessKey=k")
    settings = load_settings(FrontendSettings)
    assert settings.frontend_labels_file == BUNDLED_LABELS and settings.frontend_port == 8000
