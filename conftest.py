"""Fixtures every test folder of the repository can use: real local parts (Azurite) started on free ports."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from edgehub_emulator.azurite import Azurite, find_azurite
from solution_testkit import free_port, require_part

REPO_ROOT = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def azurite_executable() -> Path:
    """The pinned Azurite from node_modules (installed by `make setup`)."""
    executable = find_azurite(REPO_ROOT)
    require_part(executable is not None, "Azurite is not installed (run `make setup`, which runs `npm ci`)")
    assert executable is not None
    return executable


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory, azurite_executable: Path) -> Iterator[Azurite]:
    """One real Azurite for the session on free ports, data in a temporary folder."""
    location = tmp_path_factory.mktemp("azurite")
    instance = Azurite(location, free_port(), free_port(), free_port(), executable=azurite_executable)
    instance.start()
    yield instance
    instance.stop()
