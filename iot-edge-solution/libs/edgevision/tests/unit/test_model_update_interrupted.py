"""A classifier killed during an over-the-air update (tools/chaos.py's `corrupt classifier` fault: a partial
package and a half-unpacked model of the next version left in MODEL_STORE/.incoming-*): at its next start the
leftovers are removed with a warning and the update is applied again. Before, the request was marked handled
before it began, so the restarted module never tried it again and reported the old model `active`: the update
was dropped without a word. A `modelVersion` switch (a rollback) killed while its engine is built had the same
defect, and is applied again the same way."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgevision import updates
from edgevision.models import PackageError
from edgevision.updates import MAX_INTERRUPTED_ATTEMPTS, ModelStore, ModelUpdater

DESIRED = {"modelUpdate": {"FileName": "m.zip", "DownloadUrl": "http://127.0.0.1:9/m.zip", "ContentMD5": None}}


class Killed(BaseException):
    """SIGKILL in the middle of the download: nothing after it runs (not even `except Exception`)."""


class FakeConnection:
    """What the updater reports and sends."""

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []

    def report(self, patch: dict[str, Any]) -> None:
        """Keep the reported patch."""
        self.reports.append(patch)

    def send_output(self, *_args: Any, **_kwargs: Any) -> None:
        """Not needed: no update activates here."""


class FakeManager:  # pylint: disable=too-few-public-methods
    """No model in service: the reports carry no version."""

    current = None


def start(store: Path) -> tuple[ModelUpdater, FakeConnection]:
    """A module (re)started on `store`, as main.py builds its updater."""
    connection = FakeConnection()
    updater = ModelUpdater(FakeManager(), connection, store)  # type: ignore[arg-type]
    updater.store.discard_leftovers()  # initial_model does this first at start
    return updater, connection


def test_an_update_cut_short_by_a_kill_is_applied_again_at_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fetched: list[str] = []

    def killed_mid_download(url: str, store: Path, *_args: Any, **_kwargs: Any) -> Any:
        fetched.append(url)
        scratch = store / ".incoming-abc123"  # what fetch_package's scratch folder holds when the kill comes
        (scratch / "unpacked" / "model").mkdir(parents=True)
        (scratch / "package.zip").write_bytes(b"PK\x03\x04 half a package")
        (scratch / "unpacked" / "model" / "model.onnx").write_bytes(b"\x08\x07 half a model")
        raise Killed

    monkeypatch.setattr(updates, "fetch_package", killed_mid_download)
    updater, _ = start(tmp_path)
    with pytest.raises(Killed):
        updater.handle(DESIRED)

    def fails_cleanly(url: str, *_args: Any, **_kwargs: Any) -> Any:
        fetched.append(url)
        raise PackageError("downloading", "cannot reach the package")

    monkeypatch.setattr(updates, "fetch_package", fails_cleanly)
    with caplog.at_level(logging.WARNING, logger="edgevision.updates"):
        updater, connection = start(tmp_path)  # the restart: the same desired properties come again
        updater.handle(DESIRED)
    assert len(fetched) == 2, "the update cut short was never tried again"
    assert not list(tmp_path.glob(".incoming-*"))
    messages = [r.getMessage() for r in caplog.records]
    assert any(".incoming-abc123" in m and "cut short" in m for m in messages), messages
    assert any("m.zip was cut short 1 time" in m for m in messages), messages
    assert connection.reports[-1]["model"]["status"] == "failed"  # the outcome is reported, not a silent `active`
    updater.handle(DESIRED)  # handled now: the same request again is a no-op
    assert len(fetched) == 2


def test_an_update_that_kills_the_module_every_time_is_given_up_and_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def killed(*_args: Any, **_kwargs: Any) -> Any:
        raise Killed

    monkeypatch.setattr(updates, "fetch_package", killed)
    for _ in range(MAX_INTERRUPTED_ATTEMPTS):
        updater, _ = start(tmp_path)
        with pytest.raises(Killed):
            updater.handle(DESIRED)
    updater, connection = start(tmp_path)
    updater.handle(DESIRED)  # no Killed: not tried again
    model = connection.reports[-1]["model"]
    assert model["status"] == "failed" and "m.zip: the module stopped during it 3 times" in model["error"]
    assert ModelStore(tmp_path).state()["lastError"] == model["error"]


@dataclass
class Served:
    """A model in service, as far as the updater's reports look at it."""

    name: str
    version: str
    sha256: str = "0" * 64
    task: Any = None


class SwitchingManager:
    """Serves `detector` 2; building version 1 is killed `kills` times, then succeeds."""

    def __init__(self, kills: int) -> None:
        self.current: Served | None = Served("detector", "2")
        self.kills = kills
        self.builds: list[str] = []

    def build(self, model: Served) -> Served:
        """The engine build of the switch: the long step a kill can land in."""
        self.builds.append(model.version)
        if self.kills:
            self.kills -= 1
            raise Killed
        return model

    def swap(self, served: Served) -> None:
        """Put `served` in service."""
        self.current = served


class SwitchingUpdater(ModelUpdater):
    """The updater, finding any version asked for (no model files here)."""

    def _find(self, name: str, version: str) -> Any:
        return Served(name, version)


def start_switching(store: Path, manager: SwitchingManager) -> tuple[ModelUpdater, FakeConnection]:
    """A module (re)started on `store` with `manager`."""
    connection = FakeConnection()
    updater = SwitchingUpdater(manager, connection, store)  # type: ignore[arg-type]
    manager.current = Served("detector", ModelStore(store).state().get("version", "2"))  # initial_model's pick
    return updater, connection


def engine_report(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The last `model` report."""
    return [r["model"] for r in reports if "model" in r][-1]


@pytest.fixture(name="short_reports")
def fixture_short_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    """`model` reports of the status, the error and the version in service (no engine to describe here)."""

    def report(self: ModelUpdater, status: str, error: str | None) -> dict[str, Any]:
        current = self.manager.current
        return {"status": status, "error": error, "version": current.version if current else None}

    monkeypatch.setattr(updates.ModelUpdater, "_model_report", report)


@pytest.mark.usefixtures("short_reports")
def test_a_version_switch_cut_short_by_a_kill_is_applied_again_at_the_next_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manager = SwitchingManager(kills=1)
    updater, _ = start_switching(tmp_path, manager)
    with pytest.raises(Killed):
        updater.handle({"modelVersion": "1"})
    with caplog.at_level(logging.WARNING, logger="edgevision.updates"):
        updater, connection = start_switching(tmp_path, manager)  # the restart: still version 2 in service
        updater.handle({"modelVersion": "1"})
    assert manager.builds == ["1", "1"], "the switch cut short was never tried again"
    assert manager.current is not None and manager.current.version == "1"
    assert engine_report(connection.reports) == {"status": "active", "error": None, "version": "1"}
    assert ModelStore(tmp_path).state()["version"] == "1"
    assert any("version 1 was cut short 1 time" in r.getMessage() for r in caplog.records)
    updater.handle({"modelVersion": "1"})  # handled now: the same request again is a no-op
    assert manager.builds == ["1", "1"]


@pytest.mark.usefixtures("short_reports")
def test_a_version_switch_that_kills_the_module_every_time_is_given_up_and_reported(tmp_path: Path) -> None:
    manager = SwitchingManager(kills=MAX_INTERRUPTED_ATTEMPTS + 1)
    for _ in range(MAX_INTERRUPTED_ATTEMPTS):
        updater, _ = start_switching(tmp_path, manager)
        with pytest.raises(Killed):
            updater.handle({"modelVersion": "1"})
    updater, connection = start_switching(tmp_path, manager)
    updater.handle({"modelVersion": "1"})  # no Killed: not tried again
    report = engine_report(connection.reports)
    assert report["status"] == "failed" and report["version"] == "2"
    assert "switch to version 1: the module stopped during it 3 times" in report["error"]
    assert len(manager.builds) == MAX_INTERRUPTED_ATTEMPTS
