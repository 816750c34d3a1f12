"""Each device of a local fleet gets its own folder for the state its modules keep (`--device-path`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgehub_emulator.errors import ConfigError
from edgehub_emulator.fleet import parse_device_paths, state_environment
from edgehub_emulator.manifest import ModuleSpec


def test_each_device_gets_its_own_folder_for_the_variables_its_modules_have(tmp_path: Path) -> None:
    paths = parse_device_paths(["MODEL_STORE=classifier/model-store", "ALERT_QUEUE_DIR=alert/alert-queue"])
    classifier = ModuleSpec("classifier", env={"MODEL_STORE": "../../model-store", "CAMERA_PATH": "a.mp4"})
    lobby = state_environment(classifier, "lobby", tmp_path, paths)
    garage = state_environment(classifier, "garage", tmp_path, paths)
    assert lobby == {"MODEL_STORE": str(tmp_path.resolve() / "lobby" / "classifier" / "model-store")}
    assert garage == {"MODEL_STORE": str(tmp_path.resolve() / "garage" / "classifier" / "model-store")}
    # a module without the variable does not get it; without --device-state nothing changes
    assert not state_environment(ModuleSpec("other", env={"X": "1"}), "lobby", tmp_path, paths)
    assert not state_environment(classifier, "lobby", None, paths)


@pytest.mark.parametrize("item", ["MODEL_STORE", "=a", "MODEL_STORE=", "MODEL_STORE=/abs", "MODEL_STORE=../up"])
def test_a_bad_device_path_is_a_clear_error(item: str) -> None:
    with pytest.raises(ConfigError, match="expected NAME=RELATIVE/PATH"):
        parse_device_paths([item])
