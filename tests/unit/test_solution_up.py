"""tools/solution_up.py: the local MODULE_KEY that `make emulator-up` gives the modules when .env sets none; the
children of `make run` (--frontend), their stop, and its banner."""

from __future__ import annotations

import base64
import importlib.util
import os
import re
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType

import pytest
from solution_testkit import wait_for

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


# --- `make run` (--frontend): the children, their stop, the banner ---------------------------------------------


def gone(pid: int) -> bool:
    """No such process (or only a zombie nobody reaps)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_stop_kills_a_child_that_ignores_sigterm_and_what_it_left_in_its_group() -> None:
    script = load()
    children = script.Children()
    child = children.start(
        "hub", ["bash", "-c", 'trap "" TERM; sleep 300 & echo $!; wait'], stdout=subprocess.PIPE, text=True
    )
    grandchild = int(child.stdout.readline())
    assert os.getpgid(child.pid) == child.pid != os.getpgid(0), "its own process group"
    status = children.stop("hub", timeout=0.5)
    assert status == -signal.SIGKILL
    assert gone(child.pid), "stop() reaped the child"
    # SIGKILL to the group is sent by then, but the grandchild dies when it is next scheduled: give it a moment.
    wait_for(lambda: gone(grandchild), timeout=5.0, what="the grandchild to die with its group")


def test_a_forwarded_signal_reaches_every_child_and_no_child_starts_after_it() -> None:
    script = load()
    children = script.Children()
    waiting = [sys.executable, "-c", "import time; time.sleep(60)"]
    first, second = children.start("frontend", waiting), children.start("hub", waiting)
    children.forward(signal.SIGHUP)  # a closed terminal: the children get SIGTERM
    assert first.wait(10) == -signal.SIGTERM and second.wait(10) == -signal.SIGTERM
    with pytest.raises(script.SolutionError, match="stopping"):
        children.start("late", waiting)


@pytest.mark.parametrize(
    ("command", "error"),
    [
        ("import sys; sys.exit(3)", "hub exited with status 3 before the hub's ready line"),
        ("print('other output', flush=True); import sys; sys.exit(0)", "hub exited with status 0 before"),
    ],
)
def test_a_hub_that_exits_before_it_is_ready_is_a_clear_error(tmp_path: Path, command: str, error: str) -> None:
    script = load()
    children = script.Children()
    with pytest.raises(script.SolutionError, match=re.escape(error)):
        script.run_with_frontend(children, [sys.executable, "-c", command], tmp_path, None)
    assert children.stop("hub", 5) is not None


@pytest.mark.parametrize(
    ("module_env", "scoring", "preview"),
    [
        ({}, "http://127.0.0.1:8080/score", "off (PREVIEW_PORT=0)"),
        ({"SCORING_PORT": "", "PREVIEW_PORT": "5012"}, "http://127.0.0.1:8080/score", "http://127.0.0.1:5012/"),
        ({"SCORING_PORT": "9090", "PREVIEW_PORT": "0"}, "http://127.0.0.1:9090/score", "off (PREVIEW_PORT=0)"),
    ],
)
def test_the_banner_gives_the_urls_and_the_demo_user(module_env: dict[str, str], scoring: str, preview: str) -> None:
    demo = {"DEMO_USER": "demo", "DEMO_OBJECT": "espresso", "DEMO_PASSWORD": "pw-123"}
    text = load().banner("http://127.0.0.1:8000", module_env, demo)
    rows = dict(re.findall(r"^  (\S.*?)  +(\S.*)$", text, re.MULTILINE))
    assert rows["front-end (sign in)"] == "http://127.0.0.1:8000/"
    assert rows["classifier scoring API"].startswith(scoring)
    assert rows["live preview"] == preview
    assert rows["demo user"] == "demo" and rows["its object"].startswith("espresso")
    assert rows["its password"].startswith("pw-123 ")


@pytest.mark.parametrize(
    ("host", "url"),
    [("127.0.0.1", "http://127.0.0.1:8000"), ("0.0.0.0", "http://127.0.0.1:8000"), ("myhost", "http://myhost:8000")],
)
def test_the_front_ends_local_url(host: str, url: str) -> None:
    assert load()._local_url(host, 8000) == url  # pylint: disable=protected-access


HUB_OUTPUT = (
    b"2026-12-01 22:26:40,001 INFO edgehub_emulator.cli: hub up\n"
    b"REQUESTS_CA_BUNDLE=/state/ca.pem\n"
    b"classifier  | 2026-12-01 22:27:01,334 INFO azure.iot.device.iothub.sync_clients: Sending message...\n"
    b"classifier  | frame      1 | classification: espresso 0.88\r"
    b"classifier  | frame      2 | classification: espresso 0.87\r"
    b"alert       | 2026-12-01 22:27:01,337 WARNING azure.iot.device.common: reconnecting\n"
    b"authrequest | 2026-12-01 22:27:01,338 INFO authrequest: serving ProcessRequest\n"
    b"no newline at the end"
)


@pytest.mark.parametrize("sdk_logs", [False, True])
def test_the_hubs_output_is_copied_with_progress_lines_and_without_the_sdks_info(
    capsysbinary: pytest.CaptureFixture[bytes], sdk_logs: bool
) -> None:
    read, write = os.pipe()
    with os.fdopen(write, "wb") as writer:
        for start in range(0, len(HUB_OUTPUT), 7):  # in pieces that split lines
            writer.write(HUB_OUTPUT[start : start + 7])
    ready = threading.Event()
    with os.fdopen(read, "rb") as reader:
        load()._copy_output(reader, ready, sdk_logs)  # pylint: disable=protected-access
    assert ready.is_set()
    out = capsysbinary.readouterr().out
    sdk_info = b"INFO azure.iot.device.iothub.sync_clients: Sending message...\n"
    expected = HUB_OUTPUT if sdk_logs else HUB_OUTPUT.replace(b"classifier  | 2026-12-01 22:27:01,334 " + sdk_info, b"")
    assert out == expected
    assert (sdk_info in out) is sdk_logs
