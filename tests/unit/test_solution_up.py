"""tools/solution_up.py: the local MODULE_KEY that `make emulator-up` gives the modules when .env sets none."""

from __future__ import annotations

import base64
import importlib.util
import stat
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "solution_up.py"


def load() -> ModuleType:
    """The script as a module."""
    spec = importlib.util.spec_from_file_location("solution_up", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_dotenv_with_a_key_is_used_as_it_is(tmp_path: Path) -> None:
    source = tmp_path / ".env"
    source.write_text("CAMERA_PATH=x.mp4\nMODULE_KEY='abc'\n", encoding="utf-8")
    assert load().env_file_with_key(tmp_path / "state", source) is None
    assert not (tmp_path / "state" / "module-key").exists()


def test_an_empty_key_gets_a_local_one_made_once_and_kept_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODULE_KEY", raising=False)
    source = tmp_path / ".env_template"
    source.write_text("# defaults\nMODULE_KEY=\nREQUEST_QUEUE=q\n", encoding="utf-8")
    state = tmp_path / "state"
    state.mkdir()
    script = load()
    first = script.env_file_with_key(state, source)
    assert first == state / "up.env"
    values = script.env_file_values(first)
    assert values["REQUEST_QUEUE"] == "q"
    key = values["MODULE_KEY"]
    assert len(base64.b64decode(key)) == 32
    assert stat.S_IMODE((state / "module-key").stat().st_mode) == 0o600
    assert stat.S_IMODE(first.stat().st_mode) == 0o600
    assert script.env_file_values(script.env_file_with_key(state, source))["MODULE_KEY"] == key, "made once"


def test_the_shells_key_wins_over_an_empty_dotenv_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODULE_KEY", "from-the-shell")
    source = tmp_path / ".env"
    source.write_text("MODULE_KEY=\n", encoding="utf-8")
    (tmp_path / "state").mkdir()
    script = load()
    made = script.env_file_with_key(tmp_path / "state", source)
    assert script.env_file_values(made)["MODULE_KEY"] == "from-the-shell"
    assert not (tmp_path / "state" / "module-key").exists()
