"""tools/solution_up.py: the local MODULE_KEY that `make emulator-up` gives the modules when .env sets none; the
children of `make run` (--frontend), their stop, and its banner."""

from __future__ import annotations

import base64
import json
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
from solution_testkit import load_script, wait_for

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "solution_up.py"


def load() -> ModuleType:
    """The script as a module."""
    return load_script(SCRIPT, "solution_up")


MANIFEST = {
    "modulesContent": {
        "$edgeAgent": {
            "properties.desired": {
                "modules": {
                    "classifier": {
                        "env": {n: {"value": f"${n}"} for n in ("CAMERA_PATH", "MODEL_STORE", "MODULE_KEY")}
                    },
                    "alert": {"env": {"ALERT_QUEUE_DIR": {"value": "$ALERT_QUEUE_DIR"}}},
                }
            }
        }
    }
}
TEMPLATE = (
    "# defaults\nCAMERA_PATH=../../media/demo.mp4\nMODULE_KEY=\nMODEL_STORE=/app/model-store\n"
    "ALERT_QUEUE_DIR=/app/alert-queue\nSCORING_PORT=\nREQUEST_QUEUE=q\n"
)


def plan_for(tmp_path: Path, environ: dict[str, str], dotenv: str | None = None) -> object:
    """A ModuleSettingsPlan over a template, an optional .env and the manifest above."""
    (tmp_path / ".env_template").write_text(TEMPLATE, encoding="utf-8")
    (tmp_path / "manifest.json").write_text(json.dumps(MANIFEST), encoding="utf-8")
    (tmp_path / "Makefile").write_text("PYTHON ?= python3\nPYTEST_ARGS ?=\n", encoding="utf-8")
    if dotenv is not None:
        (tmp_path / ".env").write_text(dotenv, encoding="utf-8")
    return load().ModuleSettingsPlan(
        tmp_path / ".env_template",
        tmp_path / ".env" if dotenv is not None else None,
        tmp_path / "state",
        tmp_path / "manifest.json",
        environ,
        tmp_path / "Makefile",
    )


def test_make_run_overrides_reach_the_settings_and_say_where_they_came_from(tmp_path: Path) -> None:
    environ = {"CAMERA_PATH": "/dev/video0", "MAKEFLAGS": " -- CAMERA_PATH=/dev/video0", "HOME": "/root"}
    plan = plan_for(tmp_path, environ, dotenv="CAMERA_PATH=/from/dotenv.mp4\nREQUEST_QUEUE=mine\n")
    assert plan.values["CAMERA_PATH"] == "/dev/video0", "the command line wins over .env"
    assert plan.values["REQUEST_QUEUE"] == "mine", ".env wins over .env_template"
    assert plan.lines == ["CAMERA_PATH=/dev/video0 from make's command line (read by classifier)"]
    assert not plan.warnings
    assert "then the shell's environment and make's command line (last wins)" in plan.precedence()


def test_device_volume_paths_go_into_the_local_state_unless_chosen(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, {})
    assert plan.values["MODEL_STORE"] == str(tmp_path / "state" / "classifier" / "model-store")
    assert plan.values["ALERT_QUEUE_DIR"] == str(tmp_path / "state" / "alert" / "alert-queue")
    chosen = plan_for(tmp_path, {"MODEL_STORE": "/tmp/elsewhere"})
    assert chosen.values["MODEL_STORE"] == "/tmp/elsewhere"


def test_overrides_no_module_reads_are_warned_about(tmp_path: Path) -> None:
    environ = {
        "SCORING_PORT": "9000",
        "CAMRA_PATH": "/dev/video0",
        "PYTEST_ARGS": "-x",
        "MAKEFLAGS": "s -- SCORING_PORT=9000 CAMRA_PATH=/dev/video0 PYTEST_ARGS=-x VERBOSE=1",
    }
    plan = plan_for(tmp_path, environ)
    assert len(plan.warnings) == 2, plan.warnings
    assert plan.warnings[0].startswith("SCORING_PORT=9000 from make's command line: no module of the deployment")
    assert plan.warnings[1].startswith("CAMRA_PATH=/dev/video0 on make's command line: neither a module setting")


def test_a_relative_path_on_the_command_line_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "clip.mp4").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    plan = plan_for(tmp_path, {"CAMERA_PATH": "clip.mp4"})
    assert plan.values["CAMERA_PATH"] == str(tmp_path / "clip.mp4")


@pytest.mark.parametrize(
    ("makeflags", "expected"),
    [
        ("", {}),
        ("s", {}),
        (" -- CAMERA_PATH=/dev/video0", {"CAMERA_PATH": "/dev/video0"}),
        ("s -- A=1 B=two\\ words", {"A": "1", "B": "two words"}),
    ],
)
def test_make_command_line_variables(makeflags: str, expected: dict[str, str]) -> None:
    assert load().make_command_line_variables(makeflags) == expected


def test_an_empty_key_gets_a_local_one_made_once_and_kept_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODULE_KEY", raising=False)
    state = tmp_path / "state"
    script = load()
    first = plan_for(tmp_path, {}).write(state)
    assert first == state / "up.env"
    values = script.env_file_values(first)
    assert values["REQUEST_QUEUE"] == "q"
    key = values["MODULE_KEY"]
    assert len(base64.b64decode(key)) == 32
    assert stat.S_IMODE((state / "module-key").stat().st_mode) == 0o600
    assert stat.S_IMODE(first.stat().st_mode) == 0o600
    assert script.env_file_values(plan_for(tmp_path, {}).write(state))["MODULE_KEY"] == key, "made once"


def test_a_dotenv_key_and_the_shells_key_are_used_as_they_are(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = load()
    monkeypatch.delenv("MODULE_KEY", raising=False)
    made = plan_for(tmp_path, {}, dotenv="MODULE_KEY='abc'\n").write(tmp_path / "state")
    assert script.env_file_values(made)["MODULE_KEY"] == "abc"
    monkeypatch.setenv("MODULE_KEY", "from-the-shell")
    made = plan_for(tmp_path, {}, dotenv="MODULE_KEY=\n").write(tmp_path / "state2")
    assert script.env_file_values(made)["MODULE_KEY"] == "from-the-shell"
    assert not (tmp_path / "state" / "module-key").exists() and not (tmp_path / "state2" / "module-key").exists()


@pytest.mark.parametrize(
    ("model", "expected"),
    [("efficientnet-lite0", "espresso"), ("nanodet-m-416", "cup"), ("ppocr-det", None)],
)
def test_the_demo_object_is_a_class_of_the_model_in_use(model: str, expected: str | None) -> None:
    script = load()
    labels = script.model_labels({"MODEL_NAME": model}, script.ROOT / "iot-edge-solution" / "modules" / "classifier")
    assert script.demo_object(labels) == expected


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_a_sigint_that_make_alone_gets_stops_the_children(tmp_path: Path) -> None:
    """GNU make does not pass SIGINT on to its children (only SIGTERM): the watcher sees make's handler reset and
    stops everything, as a terminal's Ctrl-C would."""
    (tmp_path / "Makefile").write_text(
        "run:\n\t" + sys.executable + " -c 'import sys; sys.path.insert(0, \"" + str(SCRIPT.parent) + '"); '
        "import signal, solution_up as s; c = s.Children(); s.watch_parent(c, 0.1); "
        'p = c.start("hub", ["sleep", "300"]); print(p.pid, flush=True); '
        'c.stopping.wait(60); print("stopping", flush=True); print(c.stop("hub", 10), flush=True)\'\n',
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    make = subprocess.Popen(  # pylint: disable=consider-using-with
        ["make", "--no-print-directory", "-C", str(tmp_path), "run"],
        stdout=subprocess.PIPE, text=True, env=env, start_new_session=True,
    )  # fmt: skip
    assert make.stdout is not None
    make.stdout.readline()  # the command line make echoes
    hub = int(make.stdout.readline())
    os.kill(make.pid, signal.SIGINT)  # make alone, not its process group
    rest = make.stdout.read()
    assert make.wait(30) != 0
    assert "stopping" in rest and str(-signal.SIGINT) in rest, rest
    assert gone(hub)


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
        script.run_with_frontend(children, [sys.executable, "-c", command], tmp_path, {})
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


def test_the_real_template_and_manifest_give_make_run_a_camera_like_video_and_local_state(tmp_path: Path) -> None:
    """With the repository's own .env_template and deployment manifest (no .env, no overrides): the demo video
    plays in real time, the classifier logs status lines, and every folder of state is under the state folder."""
    script = load()
    root = script.ROOT
    plan = script.ModuleSettingsPlan(
        root / ".env_template", None, tmp_path / "state", root / "iot-edge-solution" / "deployment.template.json",
        {}, root / "Makefile",
    )  # fmt: skip
    assert plan.values["VIDEO_REALTIME"] == "True" and "classifier" in plan.readers["VIDEO_REALTIME"]
    assert plan.values["LOG_EVERY_FRAME"] == "False" and "classifier" in plan.readers["LOG_EVERY_FRAME"]
    for name in ("MODEL_STORE", "ENGINE_CACHE_DIR", "ALERT_QUEUE_DIR", "FRONTEND_DATABASE"):
        assert Path(plan.values[name]).is_relative_to(tmp_path / "state"), name
    assert "classifier" in plan.readers["MODEL_STORE"] and "alert" in plan.readers["ALERT_QUEUE_DIR"]
    assert not plan.warnings and not plan.lines


def test_overridden_secrets_are_never_printed(tmp_path: Path) -> None:
    secret = "DefaultEndpointsProtocol=https;AccountKey=c2VjcmV0"
    environ = {
        "STORAGE_CONNECTION_STRING": secret,
        "MODULE_KEY": "a2V5",
        "ALERT_WEBHOOK_URL": "https://hook/x?sig=abc",
        "MAKEFLAGS": f" -- STORAGE_CONNECTION_STRING={secret} ALERT_WEBHOOK_URL=https://hook/x?sig=abc",
    }
    (tmp_path / ".env_template").write_text(
        "STORAGE_CONNECTION_STRING=\nMODULE_KEY=\nALERT_WEBHOOK_URL=\n", encoding="utf-8"
    )
    plan = load().ModuleSettingsPlan(tmp_path / ".env_template", None, tmp_path / "state", None, environ)
    printed = "\n".join(plan.lines + plan.warnings)
    assert "STORAGE_CONNECTION_STRING=(set, not shown)" in printed
    assert "c2VjcmV0" not in printed and "sig=abc" not in printed and "a2V5" not in printed
    assert plan.values["STORAGE_CONNECTION_STRING"] == secret, "the modules still get it"


def test_the_shells_variables_no_module_reads_are_left_alone(tmp_path: Path) -> None:
    """A dev container's shell may export TARGETARCH for other tools: only make's command line is warned about."""
    plan = plan_for(tmp_path, {"SCORING_PORT": "9000"})
    assert not plan.warnings and not plan.lines


@pytest.mark.parametrize(
    "command, fleet",
    [
        (["edgehub-emulator", "up", "m.json", "--state", "s"], False),
        (["edgehub-emulator", "up", "m.json", "--device", "lobby", "--device", "garage"], True),
        (["edgehub-emulator", "up", "m.json", "--fleet", "fleet.json"], True),
        (["edgehub-emulator", "up", "m.json", "--fleet=fleet.json"], True),
    ],
)
def test_a_fleet_gives_each_device_its_own_module_state(tmp_path: Path, command: list[str], fleet: bool) -> None:
    options = load().fleet_state_options(command, tmp_path)
    if not fleet:  # `make run`'s single default device keeps STATE/classifier/..., STATE/alert/...
        assert options == []
        return
    assert options[:2] == ["--device-state", str(tmp_path / "devices")]
    paths = dict(item.split("=", 1) for item in options[3::2])
    assert paths == {
        "MODEL_STORE": "classifier/model-store",
        "ENGINE_CACHE_DIR": "classifier/engine-cache",
        "ALERT_QUEUE_DIR": "alert/alert-queue",
        "AUTHREQUEST_STATE_DIR": "authrequest/state",
    }
    assert "FRONTEND_DATABASE" not in paths  # the front-end is not on a device


def test_no_azurite_never_starts_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A harness that runs Storage itself (tools/chaos.py) starts solution_up again while its own Azurite may be
    down: with --no-azurite solution_up must not start a second Azurite over another data folder (the results
    written there looked lost); without it, it does."""
    script = load()
    asked: list[Path] = []
    monkeypatch.setattr(script, "start_azurite", asked.append)
    monkeypatch.setattr(script, "watch_parent", lambda children: None)
    (tmp_path / "manifest.json").write_text(json.dumps(MANIFEST), encoding="utf-8")
    (tmp_path / ".env").write_text("", encoding="utf-8")
    mark = tmp_path / "ran"
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:

        def run(*options: str) -> int:
            return script.main(
                ["--state", str(tmp_path / "state"), "--env-source", str(tmp_path / ".env"),
                 "--manifest", str(tmp_path / "manifest.json"), *options,
                 "--", sys.executable, "-c", f"open({str(mark)!r}, 'a').write('x')"]
            )  # fmt: skip

        assert run("--no-azurite") == 0
        assert mark.read_text(encoding="utf-8") == "x" and not asked
        assert run() == 0
        assert mark.read_text(encoding="utf-8") == "xx" and asked == [(tmp_path / "state").resolve()]
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
