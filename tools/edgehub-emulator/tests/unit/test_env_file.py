"""Which .env file `up` reads when none is named: the nearest .env, else the nearest .env_template."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edgehub_emulator.agent import find_env_file, read_env_file


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    """A repository root (with .git) holding solution/deployment.template.json."""
    (tmp_path / ".git").mkdir()
    (tmp_path / "solution").mkdir()
    manifest = tmp_path / "solution" / "deployment.template.json"
    manifest.write_text("{}")
    return tmp_path


def test_env_beside_the_manifest_wins(repo: Path) -> None:
    (repo / ".env").write_text("A=root\n")
    (repo / "solution" / ".env").write_text("A=solution\n")
    assert find_env_file(repo / "solution" / "deployment.template.json") == repo / "solution" / ".env"


def test_env_at_the_repository_root(repo: Path) -> None:
    (repo / ".env").write_text("A=root\n")
    (repo / ".env_template").write_text("A=template\n")
    found = find_env_file(repo / "solution" / "deployment.template.json")
    assert found == repo / ".env" and read_env_file(found) == {"A": "root"}


def test_template_when_there_is_no_env(repo: Path, caplog: pytest.LogCaptureFixture) -> None:
    (repo / ".env_template").write_text("# comment\nA=template\n")
    with caplog.at_level(logging.WARNING):
        found = find_env_file(repo / "solution" / "deployment.template.json")
    assert found == repo / ".env_template"
    assert "copy it to .env" in caplog.text


def test_search_stops_at_the_repository_root(repo: Path) -> None:
    (repo.parent / ".env").write_text("A=outside\n")
    try:
        assert find_env_file(repo / "solution" / "deployment.template.json") is None
    finally:
        (repo.parent / ".env").unlink()
