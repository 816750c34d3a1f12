"""Fixtures of the front-end's tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from frontend.config import FrontendSettings, load_settings


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., FrontendSettings]:
    """Settings with a fresh database in tmp_path; keyword arguments override fields."""

    def make(**overrides: Any) -> FrontendSettings:
        values: dict[str, Any] = {
            "iothub_connection_string": "HostName=localhost:1;SharedAccessKeyName=service;SharedAccessKey=a2V5",
            "frontend_database": tmp_path / "frontend.sqlite3",
            "frontend_secret_key": "k" * 40,
        }
        values.update(overrides)
        return load_settings(FrontendSettings, **values)

    return make
