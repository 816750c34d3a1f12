"""The commands of README.md and getting-started/ as a reader types them, checked without running what needs a
device, a GPU or Azure: every `make` target exists and each NAME=value is an option of make or a module setting;
every command of the project's own CLIs (`edgehub-emulator`, `edgevision`, `frontend`) parses with its real
argument parser; every script, file and relative link named exists. Commands that run here end to end are run by
their own tests (`make run`: tests/e2e/test_make_run.py; `make setup` then offline: tests/static/test_makefile.py).
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path
from typing import Callable, Iterator

import pytest

from edgehub_emulator.cli import build_parser as emulator_parser
from edgevision.cli import build_parser as edgevision_parser
from frontend.cli import build_parser as frontend_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "getting-started").glob("*.md"))]
PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "edgehub-emulator": emulator_parser,
    "edgevision": edgevision_parser,
    "frontend": frontend_parser,
}
# Commands of other tools (Azure CLI, Docker, the OS): not this project's to check.
FOREIGN = {
    "az", "docker", "curl", "sudo", "apt-get", "brew", "git", "cd", "export", "set", "eval", "mkdir", "cp", "sed",
    "ssh", "scp", "code", "npm", "node", "cat", "source", "echo", "ffmpeg", "gst-launch-1.0", "unshare", "bash",
    "python3", "pip", "jtop", "nvidia-smi", "sh", "ls", "open", "wsl", "chmod", "tegrastats", "v4l2-ctl",
    "STORAGE_CONNECTION_STRING=UseDevelopmentStorage=true",
}  # fmt: skip


def makefile_targets() -> set[str]:
    """Targets the Makefile defines."""
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([a-z][a-z0-9-]*)\s*:(?!=)", text, re.MULTILINE))


def make_variables() -> set[str]:
    """NAME=value a reader may give make: the Makefile's own variables and every module setting."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    own = set(re.findall(r"^([A-Z][A-Z0-9_]*)\s*[?:+]?=", makefile, re.MULTILINE)) | {"VERBOSE", "SDK_LOGS"}
    template = (ROOT / ".env_template").read_text(encoding="utf-8")
    return own | set(re.findall(r"^([A-Z][A-Z0-9_]*)=", template, re.MULTILINE))


def shell_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, command) of every fenced bash block, continuation lines joined, comments dropped; plus each
    inline `make ...` / `.venv/bin/...` / `edgehub-emulator ...` code span of the prose."""
    lines = path.read_text(encoding="utf-8").splitlines()
    in_block, pending, start = False, "", 0
    for number, line in enumerate(lines, start=1):
        if line.startswith("```"):
            in_block = line.strip() in ("```bash", "```sh", "```shell")
            continue
        if in_block:
            text = line.split("  #", 1)[0].rstrip() if "  #" in line else line.rstrip()
            if text.lstrip().startswith("#") or not text.strip():
                continue
            if not pending:
                start = number
            pending += text.rstrip("\\").strip() + " "
            if not text.endswith("\\"):
                yield start, pending.strip()
                pending = ""
        else:
            for span in re.findall(r"`([^`]+)`", line):
                if re.match(r"(make [a-z]|\.venv/bin/|edgehub-emulator [a-z])", span):
                    yield number, span


def commands_of(line: str) -> Iterator[list[str]]:
    """The simple commands of a shell line (split at ; && || | and a trailing &), as words."""
    for part in re.split(r"\s*(?:&&|\|\||;|\|)\s*|\s&\s*$", line):
        part = part.strip().rstrip("&").strip()
        if not part:
            continue
        try:
            words = shlex.split(part)
        except ValueError:
            continue  # a quote that spans a heredoc or a placeholder: not a command to check
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]) and words[0] not in FOREIGN:
            words = words[1:]  # NAME=value before the command
        if words:
            yield words


def every_command() -> list[tuple[str, Path, list[str]]]:
    """(where, the folder it runs in, words) of every command of the docs; a `cd DIR` in a line moves the rest of
    that line to DIR."""
    found = []
    for doc in DOCS:
        for number, line in shell_lines(doc):
            folder = ROOT
            for words in commands_of(line):
                if words[0] == "cd" and len(words) == 2:
                    folder = folder / words[1]
                found.append((f"{doc.relative_to(ROOT)}:{number}", folder, words))
    return found


COMMANDS = every_command()


def check_command(words: list[str], folder: Path = ROOT) -> str | None:  # pylint: disable=too-many-return-statements
    """What is wrong with one documented command (run in `folder`), or None."""
    program = words[0]
    if program == "make":
        targets = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
        unknown = [t for t in targets if t not in makefile_targets()]
        if unknown:
            return f"no make target {unknown}"
        names = [w.split("=", 1)[0] for w in words[1:] if "=" in w and not w.startswith("-")]
        stray = [n for n in names if n not in make_variables()]
        return f"make ignores {stray}: neither a Makefile option nor a module setting" if stray else None
    name = Path(program).name
    if name in PARSERS:
        if program != f".venv/bin/{name}" and not (folder / program).is_file():
            return f"{program} is not on PATH after make setup: write .venv/bin/{name}"
        if name == "edgehub-emulator" and words[1:3] == ["up", "iot-edge-solution/deployment.template.json"]:
            return "a bare `up` of the solution gives the modules no MODULE_KEY and no Azurite: write make emulator-up"
        try:
            PARSERS[name]().parse_args(words[1:])
        except SystemExit as e:
            return f"{name} refuses {words[1:]} (exit status {e.code})"
        return None
    if program.endswith(("/python", "python3")) and len(words) > 1 and words[1].endswith(".py"):
        return None if (folder / words[1]).is_file() else f"no script {words[1]}"
    if "/" in program and not program.startswith(("/", "$")):
        return None if (folder / program).exists() else f"no file {program}"
    return None


@pytest.mark.parametrize(("where", "folder", "words"), COMMANDS, ids=[where for where, _, _ in COMMANDS])
def test_a_documented_command_is_one_this_repository_has(where: str, folder: Path, words: list[str]) -> None:
    if words[0] in FOREIGN:
        pytest.skip(f"{words[0]} is another tool's command")
    problem = check_command(words, folder)
    assert problem is None, f"{where}: {' '.join(words)}: {problem}"


def test_the_docs_hold_commands_to_check() -> None:
    programs = {words[0] for _, _, words in COMMANDS}
    assert {"make", ".venv/bin/edgehub-emulator"} <= programs, programs


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_files_that_exist(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    missing = [
        target
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
        if "://" not in target and not (doc.parent / target).exists()
    ]
    assert not missing, f"{doc.name} links to {missing}"


def test_the_checker_catches_what_a_stale_doc_holds() -> None:
    """The checks above can fail: commands that an older README held are refused."""
    assert check_command(["make", "run-the-thing"]) is not None
    assert check_command(["make", "run", "CAMRA_PATH=/dev/video0"]) is not None
    assert check_command(["edgehub-emulator", "monitor"]) is not None, "not on PATH"
    up = [".venv/bin/edgehub-emulator", "up", "iot-edge-solution/deployment.template.json"]
    assert check_command(up) is not None
    assert check_command([".venv/bin/edgehub-emulator", "monitor", "--no-such-option"]) is not None
    assert check_command([".venv/bin/python", "bench/no_such_bench.py"]) is not None
    assert check_command(["make", "run", "CAMERA_PATH=/dev/video0"]) is None
