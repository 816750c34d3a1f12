"""A manifest's desired properties apply like a deployment: to a new twin or when the module's section changed."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from edgehub_emulator.config import EmulatorConfig
from edgehub_emulator.hub import Hub
from edgehub_emulator.manifest import parse_manifest
from edgehub_emulator.store import Store


def _manifest(desired: dict[str, Any]) -> Any:
    return parse_manifest(
        {
            "modulesContent": {
                "$edgeAgent": {"properties.desired": {"modules": {"m": {}}}},
                "$edgeHub": {"properties.desired": {"routes": {}}},
                "m": {"properties.desired": desired},
            }
        }
    )


def test_restarts_keep_service_changes_until_the_section_changes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = EmulatorConfig(state_dir=tmp_path)
    store = Store(tmp_path / "state.sqlite3")
    try:
        with caplog.at_level(logging.INFO):
            hub = Hub(config, store, _manifest({"a": 1}))
            assert "m: applying the manifest's desired properties (new twin)" in caplog.text
            hub.update_twin("edge-device", "m", {"properties": {"desired": {"b": 2}}}, None, replace=False)
            caplog.clear()
            Hub(config, store, _manifest({"a": 1}))  # a restart with the same manifest
            assert "m: manifest desired properties unchanged since applied" in caplog.text
            assert store.get_twin("edge-device", "m").desired == {"a": 1, "b": 2}
            caplog.clear()
            Hub(config, store, _manifest({"a": 3}))
            assert "m: applying the manifest's desired properties (its manifest section changed)" in caplog.text
            twin = store.get_twin("edge-device", "m")
            assert twin.desired == {"a": 3} and twin.desired_version == 4
    finally:
        store.close()
