"""Shared fixtures: where the bundled models and media are, and real images loaded from them."""

from __future__ import annotations

import json
import shutil
from collections.abc import Generator
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[4]
SOLUTION = REPO_ROOT / "iot-edge-solution"
MODELS = SOLUTION / "models"
MEDIA = SOLUTION / "media"


class Media:
    """The bundled media; a missing file fails the test (never skips), so CI notices."""

    root = MEDIA

    def path(self, name: str) -> Path:
        """A bundled media file."""
        path = MEDIA / name
        assert path.is_file(), f"bundled media file {path} is missing (see tools/models/README.md)"
        return path

    def image(self, name: str) -> np.ndarray:
        """A bundled photo as a BGR array."""
        image = cv2.imread(str(self.path(name)), cv2.IMREAD_COLOR)
        assert image is not None, f"{name} did not decode"
        return image


@pytest.fixture(scope="session")
def media() -> Media:
    """Access to the bundled photos and videos."""
    return Media()


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The bundled model repository."""
    return MODELS


@pytest.fixture()
def model_copy(tmp_path: Path):
    """Copy one bundled model version into a scratch repository, to break it on purpose."""

    def copy(name: str = "efficientnet-lite0", version: str = "1") -> Path:
        target = tmp_path / "repo" / name / version
        shutil.copytree(MODELS / name / version, target)
        return target

    return copy


@pytest.fixture()
def make_video(tmp_path: Path):
    """Write an MJPG .avi of the given BGR frames (all the same size) into tmp_path."""
    return lambda frames, name="clip.avi", fps=10.0: write_video(tmp_path / name, frames, fps)


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    """An MJPG .avi of the given BGR frames (all the same size)."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened(), "OpenCV cannot write MJPG here"
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """`tensorrt` tests skip for one reason where TensorRT cannot run: report that reason once per file, not once
    per test (`-ra` folds skips that share a file, no line and a reason into one line)."""
    del call
    report = yield
    if report.skipped and item.get_closest_marker("tensorrt") and isinstance(report.longrepr, tuple):
        path, _, reason = report.longrepr
        report.longrepr = (path, None, reason)
    return report


def copy_model_version(
    target_root: Path, version: str, label_prefix: str = "", name: str = "efficientnet-lite0", source_version: str = "1"
) -> Path:
    """A new version of a bundled model under `target_root/<name>/<version>`: the same real model file, the
    manifest's version changed and each label prefixed with `label_prefix` (so results show which version ran)."""
    target = target_root / name / version
    shutil.copytree(MODELS / name / source_version, target)
    manifest = json.loads((target / "model.json").read_text(encoding="utf-8"))
    manifest["version"] = version
    (target / "model.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    if label_prefix and manifest.get("labels"):
        labels = (target / manifest["labels"]).read_text(encoding="utf-8").splitlines()
        (target / manifest["labels"]).write_text(
            "\n".join(f"{label_prefix}{label}" for label in labels if label.strip()) + "\n", encoding="utf-8"
        )
    return target


@pytest.fixture()
def model_version(tmp_path: Path):
    """`model_version(version, label_prefix)`: a re-labelled copy of efficientnet-lite0 in tmp_path/versions."""
    return lambda version, label_prefix="": copy_model_version(tmp_path / "versions", version, label_prefix)
