"""`make run` as a user runs it: the whole solution (Azurite, the edgeHub emulator with every module of
deployment.template.json, the sign-in front-end) on its fixed ports; the demo user from the banner signs in
through a real headless Chromium with the object the demo video shows; Ctrl-C (SIGINT to the process group, as a
terminal sends it) must leave no process behind.

It needs the solution's fixed ports (MQTT 8883, Azurite 10000-10002, the front-end 8000, ...): run it in a
private network namespace, `unshare --net bash -c 'ip link set lo up; .venv/bin/python -m pytest
tests/e2e/test_make_run.py'`. Locally it skips when a port is taken; in CI (CI=true) it fails. The screenshot of
the signed-in page goes to test-output/make-run/ (git-ignored).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from solution_testkit import port_free, require_part, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "test-output" / "make-run"
# MQTT (fixed by the SDK), Azurite, the emulator's service and workload APIs, the front-end, scoring, preview
FIXED_PORTS = (8883, 10000, 10001, 10002, 8443, 15580, 8000, 8080, 5012)
FRONTEND = "http://127.0.0.1:8000"
BANNER = "The solution is up"


def image_loaded(page: Any, selector: str) -> bool:
    """The image is decoded and has pixels."""
    return bool(page.eval_on_selector(selector, "img => img.complete && img.naturalWidth > 0"))


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (children in their own sessions included), read from /proc."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text(encoding="utf-8").rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Running (a zombie that nobody reaped counts as left behind too)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()[0] != "X"
    except OSError:
        return False


def describe(pid: int) -> str:
    """The command line of `pid`, for messages."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


class MakeRun:
    """`make run` in its own process group, output to a file."""

    def __init__(self, root: Path, *overrides: str) -> None:
        self.log = root / "make-run.log"
        env = {**os.environ, "FRONTEND_DATABASE": str(root / "frontend.sqlite3")}
        env.pop("MAKEFLAGS", None)
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(  # pylint: disable=consider-using-with
                ["make", "--no-print-directory", "run", f"STATE={root / 'state'}", *overrides],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        """What make run printed so far."""
        return self.log.read_text(encoding="utf-8", errors="replace")

    def banner(self) -> dict[str, str]:
        """The banner's rows once it is printed (fails if make exits first)."""

        def printed() -> str | None:
            assert self.process.poll() is None, f"make run exited early:\n{self.output()[-4000:]}"
            text = self.output()
            return text[text.index(BANNER) :] if BANNER in text else None

        text = wait_for(printed, 240, "the banner of make run")
        rows = dict(re.findall(r"^  (front-end \(sign in\)|demo user|its object|its password)\s+(\S+)", text, re.M))
        assert len(rows) == 4, text
        return rows

    def interrupt(self) -> None:
        """Ctrl-C as a terminal sends it: SIGINT to the foreground process group."""
        os.killpg(self.process.pid, signal.SIGINT)

    def kill(self) -> None:
        """SIGKILL every process group under make (a failed test must not leave the solution running)."""
        for pid in descendants(self.process.pid) | {self.process.pid}:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@pytest.fixture
def make_run(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[MakeRun]:
    """`make run` with its state and user database in tmp_path, once the fixed ports are free; a test's
    `overrides` mark adds NAME=value arguments."""
    # the previous test module's hub and modules may still be on their way out
    try:
        wait_for(lambda: all(port_free(port) for port in FIXED_PORTS), 30, "the fixed ports to be free", 0.5)
    except AssertionError:
        pass
    taken = [port for port in FIXED_PORTS if not port_free(port)]
    require_part(
        not taken,
        f"ports {taken} are taken: run this in a private network namespace "
        "(unshare --net bash -c 'ip link set lo up; ...')",
    )
    marker = request.node.get_closest_marker("overrides")
    run = MakeRun(tmp_path, *(marker.args if marker else ()))
    try:
        yield run
    finally:
        if run.process.poll() is None:
            run.kill()
            run.process.wait(30)


def test_make_run_signs_the_demo_user_in_and_ctrl_c_leaves_nothing(make_run: MakeRun, browser: Any) -> None:
    rows = make_run.banner()
    assert rows["front-end (sign in)"] == f"{FRONTEND}/"
    assert rows["its object"] == "espresso"
    children = descendants(make_run.process.pid)
    commands = " ".join(describe(pid) for pid in children)
    for part in ("solution_up.py", "azurite", "edgehub-emulator up", "classifier/main.py", "authrequest/main.py",
                 "alert/main.py", "frontend serve"):  # fmt: skip
        assert part in commands, f"{part} is not running under make run: {commands}"

    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{FRONTEND}/login")
        page.fill("#username", rows["demo user"])
        page.fill("#password", rows["its password"])
        with page.expect_navigation():
            page.click("#sign-in")
        # /verify waits for the object; the server sends straight on to /account when the device already found it
        assert page.url in (f"{FRONTEND}/verify", f"{FRONTEND}/account"), page.inner_text("body")
        if page.url == f"{FRONTEND}/verify":
            assert "show your espresso to the camera" in page.inner_text("h1")
            page.wait_for_selector("#captured-image", state="visible", timeout=70_000)
            wait_for(lambda: image_loaded(page, "#captured-image"), 10, "captured image shown")
            page.click("#continue")
            page.wait_for_url(f"{FRONTEND}/account")
        assert page.inner_text("#welcome") == f"Welcome, {rows['demo user']}"
        wait_for(lambda: image_loaded(page, "#account-image"), 10, "account image shown")
        OUTPUT.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(OUTPUT / "signed_in_account_page.png"), full_page=True)
    finally:
        context.close()

    children = descendants(make_run.process.pid)
    started = time.monotonic()
    make_run.interrupt()
    make_run.process.wait(150)
    left = [f"{pid} {describe(pid)}" for pid in children if alive(pid)]
    assert not left, f"left behind after Ctrl-C ({time.monotonic() - started:.0f} s):\n" + "\n".join(left)
    output = make_run.output()
    assert "Azurite stopped" in output
    assert "stopped: the front-end, the modules and the hub" in output


@pytest.mark.overrides("VIDEO_REALTIME=True", "CAMRA_PATH=/dev/video0")
def test_make_run_is_calm_takes_overrides_and_stops_on_sigint_to_make_alone(make_run: MakeRun) -> None:
    """Once up, the console prints a few lines a second at most (status lines and events, not a line per frame);
    a module setting on make's command line is reported with the module that reads it, a misspelt one is a
    warning; SIGINT to the make process alone (not its group, as `kill -INT` sends it) stops everything."""
    make_run.banner()
    output = make_run.output()
    assert "VIDEO_REALTIME=True from make's command line (read by classifier)" in output
    assert "warning: CAMRA_PATH=/dev/video0 on make's command line" in output
    window_s = 20.0
    before = len(make_run.output().splitlines())
    time.sleep(window_s)  # a window to count lines over: the count, not the time, is what is checked
    lines = make_run.output().splitlines()[before:]
    assert len(lines) / window_s < 3, "\n".join(lines[-40:])
    assert not [line for line in lines if re.search(r"\| frame +\d+ \|", line)], "a line per frame"
    # the banner again once start-up has settled, and the classifier's status line
    wait_for(lambda: make_run.output().count(BANNER) >= 2, 60, "the banner printed again")
    wait_for(lambda: "classifier  | status |" in make_run.output(), 60, "the classifier's status line")
    children = descendants(make_run.process.pid)
    os.kill(make_run.process.pid, signal.SIGINT)
    make_run.process.wait(150)
    left = [f"{pid} {describe(pid)}" for pid in children if alive(pid)]
    assert not left, "left behind after SIGINT to make:\n" + "\n".join(left)
    assert "stopped: the front-end, the modules and the hub" in make_run.output()
