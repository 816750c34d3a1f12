"""A rollback (`modelVersion`) to a version nobody has: the error names the versions the model store and the
bundled repository do have, not only the place looked at last."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgevision.models import ModelNotFoundError
from edgevision.updates import ModelStore, find_version

BUNDLED = Path(__file__).resolve().parents[4] / "models"


def install(store: Path, version: str) -> None:
    """A copy of the bundled efficientnet-lite0 installed in `store` as `version`."""
    target = store / "efficientnet-lite0" / version
    shutil.copytree(BUNDLED / "efficientnet-lite0" / "1", target)
    manifest = json.loads((target / "model.json").read_text(encoding="utf-8"))
    manifest["version"] = version
    (target / "model.json").write_text(json.dumps(manifest), encoding="utf-8")


@pytest.mark.parametrize(
    ("installed", "bundled", "message"),
    [
        (["2"], True, "no version '7' (installed in MODEL_STORE: 2; bundled: 1)"),
        (["2", "3"], True, "no version '7' (installed in MODEL_STORE: 2, 3; bundled: 1)"),
        ([], True, "no version '7' (installed in MODEL_STORE: none; bundled: 1)"),
        (["2"], False, "no version '7' (installed in MODEL_STORE: 2)"),
    ],
)
def test_the_error_names_the_versions_of_both_places(
    tmp_path: Path, installed: list[str], bundled: bool, message: str
) -> None:
    for version in installed:
        install(tmp_path / "store", version)
    with pytest.raises(ModelNotFoundError) as error:
        find_version(ModelStore(tmp_path / "store"), BUNDLED if bundled else None, "efficientnet-lite0", "7")
    assert message in str(error.value)


def test_a_version_is_found_in_the_store_then_in_the_bundled_models(tmp_path: Path) -> None:
    install(tmp_path / "store", "2")
    store = ModelStore(tmp_path / "store")
    assert find_version(store, BUNDLED, "efficientnet-lite0", "2").manifest.version == "2"
    assert find_version(store, BUNDLED, "efficientnet-lite0", "1").manifest.version == "1"
