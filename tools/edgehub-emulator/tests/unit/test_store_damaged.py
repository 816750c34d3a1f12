"""A damaged state database (a crash or a full disk while it was written, a file overwritten) is refused with a
clear error naming the file and what to do, and left as it is; it was a traceback before."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from edgehub_emulator.errors import EmulatorError, StateError
from edgehub_emulator.store import Store

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _filled(path: Path) -> bytes:
    """A real database with some content (a few pages), closed; its bytes."""
    store = Store(path)
    for index in range(200):
        store.add_upstream("edge-device", "classifier", "verification", {"i": str(index)}, os.urandom(200))
    store.close()
    for suffix in ("-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    return path.read_bytes()


DAMAGES: list[tuple[str, Callable[[bytes], bytes]]] = [
    ("random bytes", lambda data: os.urandom(len(data))),
    ("cut in half", lambda data: data[: len(data) // 2]),
    ("a page overwritten", lambda data: data[:4096] + b"\xff" * 4096 + data[8192:]),
]


@pytest.mark.parametrize(("what", "damage"), DAMAGES, ids=[d[0] for d in DAMAGES])
def test_a_damaged_database_is_refused_with_what_to_do_and_left_unchanged(
    tmp_path: Path, what: str, damage: Callable[[bytes], bytes]
) -> None:
    path = tmp_path / "state" / "state.sqlite3"
    damaged = damage(_filled(path))
    path.write_bytes(damaged)
    with pytest.raises(StateError) as raised:
        Store(path)
    message = str(raised.value)
    assert str(path) in message and "is damaged" in message and "edgehub-emulator reset" in message, what
    assert isinstance(raised.value, EmulatorError)
    assert path.read_bytes() == damaged  # kept for whoever wants to look at it


def test_an_intact_database_opens_with_its_content(tmp_path: Path) -> None:
    path = tmp_path / "state" / "state.sqlite3"
    _filled(path)
    store = Store(path)
    assert store.upstream_count() == 200
    store.close()


def test_the_cli_says_it_in_one_line_and_exits_2(tmp_path: Path) -> None:
    state = tmp_path / "state"
    path = state / "state.sqlite3"
    path.parent.mkdir()
    path.write_bytes(os.urandom(8192))
    run = subprocess.run(
        [sys.executable, "-m", "edgehub_emulator.cli", "start", "--manifest", str(FIXTURES / "deployment.json"),
         "--state", str(state)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("edgehub-emulator start: the state database") and "Traceback" not in run.stderr
