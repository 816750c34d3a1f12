"""`frontend users ...` through the console script, as a person runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).with_name("frontend")


def run(tmp_path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run the console script with a database in tmp_path."""
    env = {**os.environ, "FRONTEND_DATABASE": str(tmp_path / "users.sqlite3")}
    return subprocess.run(
        [str(SCRIPT), *args], input=stdin, capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_add_list_remove(tmp_path: Path) -> None:
    added = run(
        tmp_path,
        "users",
        "add",
        "Alice",
        "--object",
        "Coffee Mug",
        "--threshold",
        "80",
        "--password-stdin",
        stdin="correct horse\n",
    )
    assert added.returncode == 0, added.stderr
    assert added.stdout == "added alice: object 'coffee mug', threshold 80 %\n"
    run(tmp_path, "users", "add", "bob", "--object", "banana", "--password-stdin", stdin="battery staple\n")
    assert run(tmp_path, "users", "list").stdout == "alice\tcoffee mug\t80\nbob\tbanana\t70\n"
    assert run(tmp_path, "users", "remove", "BOB").returncode == 0
    assert run(tmp_path, "users", "list").stdout == "alice\tcoffee mug\t80\n"
    assert "correct horse" not in (tmp_path / "users.sqlite3").read_bytes().decode("latin-1")


@pytest.mark.parametrize(
    ("args", "stdin", "code", "error"),
    [
        (
            ["users", "add", "alice", "--object", "unicorn", "--password-stdin"],
            "correct horse\n",
            2,
            "error: unknown object 'unicorn': the classifier's model",
        ),
        (
            ["users", "add", "alice", "--object", "coffe mug", "--password-stdin"],
            "correct horse\n",
            2,
            "did you mean 'coffee mug'",
        ),
        (["users", "add", "alice", "--object", "banana", "--password-stdin"], "short\n", 2, "at least 8 characters"),
        (["users", "add", "alice", "--object", "banana", "--threshold", "150"], "", 2, "150 is not from 1 to 100"),
        (["users", "add", "alice", "--object", "banana", "--threshold", "high"], "", 2, "'high' is not a whole number"),
        (["users", "add", "alice"], "", 2, "--object"),
        (["users", "remove", "nobody"], "", 2, "error: no user 'nobody'"),
    ],
)
def test_bad_input(tmp_path: Path, args: list[str], stdin: str, code: int, error: str) -> None:
    result = run(tmp_path, *args, stdin=stdin)
    assert result.returncode == code
    assert error in result.stderr
    assert run(tmp_path, "users", "list").stdout == ""


def test_bad_settings_name_the_variable(tmp_path: Path) -> None:
    env = {**os.environ, "FRONTEND_LABELS_FILE": str(tmp_path / "missing.txt")}
    result = subprocess.run(
        [str(SCRIPT), "users", "list"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "FRONTEND_LABELS_FILE=" in result.stderr and "is not a file" in result.stderr


def test_ensure_demo_creates_then_resets(tmp_path: Path) -> None:
    first = run(tmp_path, "users", "ensure-demo")
    assert first.returncode == 0, first.stderr
    values = dict(line.split("=", 1) for line in first.stdout.splitlines())
    assert (values["DEMO_USER"], values["DEMO_OBJECT"], values["DEMO_THRESHOLD"]) == ("demo", "espresso", "70")
    assert len(values["DEMO_PASSWORD"]) >= 12
    second = dict(line.split("=", 1) for line in run(tmp_path, "users", "ensure-demo").stdout.splitlines())
    assert second["DEMO_PASSWORD"] != values["DEMO_PASSWORD"]
    assert run(tmp_path, "users", "list").stdout == "demo\tespresso\t70\n"


def test_unlock_ends_a_lock_out(tmp_path: Path) -> None:
    from frontend.users import LoginGuard  # pylint: disable=import-outside-toplevel

    guard = LoginGuard(tmp_path / "users.sqlite3", max_failures=3, lockout=300)
    for _ in range(3):
        guard.record_failure("Carol")
    assert guard.wait_seconds("carol") > 0, "locked out"
    unlocked = run(tmp_path, "users", "unlock", "CAROL")
    assert unlocked.returncode == 0, unlocked.stderr
    assert unlocked.stdout == "unlocked carol: 3 failed sign-in(s) cleared\n"
    assert guard.wait_seconds("carol") == 0
    again = run(tmp_path, "users", "unlock", "carol")
    assert again.stdout == "carol has no failed sign-ins: nothing to unlock\n"
    bad = run(tmp_path, "users", "unlock", "no spaces allowed")
    assert bad.returncode == 2 and "invalid user name" in bad.stderr
