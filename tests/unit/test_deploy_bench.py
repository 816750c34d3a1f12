"""bench/deploy_bench.py: --help, and --json writing the figures it prints to a file (the benchmark itself needs a
fleet and minutes, so it is not run here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from solution_testkit import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "deploy_bench.py"


def load() -> ModuleType:
    """The script as a module."""
    return load_script(SCRIPT, "deploy_bench")


def test_help_names_the_json_option() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "--json" in result.stdout and "--rounds" in result.stdout


def test_json_writes_what_is_printed(tmp_path: Path) -> None:
    figures = {"light_fleet": {"devices": 3, "deploy_to_all_applied_s_median": 2.0}}
    target = tmp_path / "results" / "2026-12-05-quiet" / "deploy.json"  # its folders made
    text = load().write_figures(figures, target)
    assert json.loads(text) == figures
    assert json.loads(target.read_text(encoding="utf-8")) == figures
    assert load().write_figures(figures, None) == text  # without --json: printed only


def test_zero_rounds_is_refused_before_anything_starts(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        load().main(["--rounds", "0", "--json", "/nonexistent/never-written.json"])
    assert stopped.value.code == 2
    assert "--rounds must be at least 1" in capsys.readouterr().err
