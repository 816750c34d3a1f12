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


# Where a user's runs keep local state (`make run`, `make run-classifier`, `make emulator-up`; and where earlier
# versions kept it). No test may read or write there: tests give every module and tool folders of their own.
USER_STATE = (
    ".state",
    ".edgehub-emulator",
    ".model-store",
    "iot-edge-solution/modules/classifier/.model-store",
    "iot-edge-solution/modules/alert/alert-queue",
    "iot-edge-solution/modules/alert/.model-store",
    "iot-edge-solution/modules/authrequest/.model-store",
    "iot-edge-solution/model-store",
    "iot-edge-solution/engine-cache",
    "iot-edge-solution/alert-queue",
)


def user_state_listing(root: Path = REPO_ROOT) -> dict[str, tuple[int, int]]:
    """Every file under the user-state folders: path -> (size, modification time in ns)."""
    listing: dict[str, tuple[int, int]] = {}
    for name in USER_STATE:
        for path in sorted((root / name).rglob("*")) if (root / name).is_dir() else []:
            try:
                info = path.stat()
            except OSError:
                continue
            if path.is_file():
                listing[str(path.relative_to(root))] = (info.st_size, info.st_mtime_ns)
        if (root / name).exists() and not (root / name).is_dir():
            listing[name] = (0, 0)
    return listing


def pytest_sessionstart(session: pytest.Session) -> None:
    """Note the user's local state before the tests."""
    session.config.stash[_USER_STATE_KEY] = user_state_listing()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when a test changed the user's local state (a module run without a folder of its own)."""
    before = session.config.stash.get(_USER_STATE_KEY, None)
    if before is None:
        return
    after = user_state_listing()
    changed = sorted(name for name in set(before) | set(after) if before.get(name) != after.get(name))
    if changed:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = "tests changed the user's local state (a module ran without a folder of its own): " + ", ".join(
            changed[:20]
        )
        if reporter is not None:
            reporter.write_line(message, red=True)
        if exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


_USER_STATE_KEY = pytest.StashKey[dict]()
