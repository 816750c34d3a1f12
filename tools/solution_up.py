"""Run a command (normally `edgehub-emulator up ...`) with the local parts the solution needs beside the hub:

- Azurite, the local Azure Storage, on its default ports (blob 10000, queue 10001, table 10002), keeping its data
  in STATE/azurite, so `STORAGE_CONNECTION_STRING=UseDevelopmentStorage=true` works; an Azurite already listening
  there is used as it is.
- A MODULE_KEY for authrequest and the classifier when the solution's .env (or, without one, .env_template) sets
  none: made once into STATE/module-key (mode 600, git-ignored with the state folder) and handed to the command
  through STATE/up.env and `--env-file`.

Module settings (`make run NAME=value`): .env_template, then .env, then the local state folder (--local-state,
`make run`'s STATE, default .state) for the paths a device keeps in its images' volumes (MODEL_STORE,
ENGINE_CACHE_DIR, ALERT_QUEUE_DIR, FRONTEND_DATABASE), then the shell's environment and make's command line for
every variable .env_template documents or the manifest's modules use; the result goes to STATE/up.env and
`--env-file`. Each override is printed with the modules that read it; one that no module gets, or a name that is
neither a setting nor an option of make, is a warning.

Ctrl-C or SIGTERM go to the command; Azurite stops after it. SIGINT sent to make alone (not to its process group,
as a terminal does) is noticed too: see watch_parent.

    python tools/solution_up.py --state .state/edgehub-emulator -- \
        edgehub-emulator up iot-edge-solution/deployment.template.json --state .state/edgehub-emulator

With --frontend (`make run`; the command must be `edgehub-emulator up`): once the hub is ready and authrequest
answers, the sign-in front-end (`frontend serve`) runs too, with the emulator's service connection string and CA,
the .env's (or .env_template's) settings under the shell's, and a demo user (`frontend users ensure-demo`); a
banner gives the URLs and the demo user. Ctrl-C or SIGTERM stop the front-end, then the command (its modules,
the hub), then Azurite; every child runs in its own process group, and what a child leaves there is killed.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Callable, Iterator, Sequence

from edgehub_emulator.azurite import DEFAULT_BLOB_PORT, DEFAULT_QUEUE_PORT, DEFAULT_TABLE_PORT, Azurite, AzuriteError

log = logging.getLogger("solution-up")
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HUB_READY = b"REQUESTS_CA_BUNDLE="
RECORD = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)")
# a module's line from an Azure SDK logger below WARNING: "classifier  | 2026-... INFO azure.iot.device...: ..."
SDK_CHATTER = re.compile(rb"^[\w-]+ +\| \S+ \S+ (?:DEBUG|INFO) azure\.")
SERVICE_VARS = ("IOTHUB_CONNECTION_STRING", "REQUESTS_CA_BUNDLE")
HUB_TIMEOUT_S = 120.0
DEVICE_TIMEOUT_S = 180.0
FRONTEND_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = {"frontend": 20.0, "hub": 90.0}
# the banner again once the modules' start-up lines have passed
BANNER_AGAIN_S = 20.0


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def env_file_values(path: Path) -> dict[str, str]:
    """NAME=value lines (comments, blanks and `export ` allowed; surrounding quotes removed)."""
    values: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip().removeprefix("export ").strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name.strip()] = value
    return values


def local_module_key(state: Path) -> str:
    """STATE/module-key, made on first use: 32 random bytes, base64."""
    path = state / "module-key"
    if not path.is_file() or not path.read_text(encoding="utf-8").strip():
        state.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(base64.b64encode(secrets.token_bytes(32)).decode("ascii") + "\n", encoding="utf-8")
        log.info("made a local MODULE_KEY in %s (for this machine only)", path)
    return path.read_text(encoding="utf-8").strip()


# Local state of a module that a device keeps in a volume of its image (.env_template holds the image's path):
# `make run` points it into the local state folder instead, so the user's runs and the tests never share it.
LOCAL_STATE_PATHS = {
    "MODEL_STORE": "classifier/model-store",
    "ENGINE_CACHE_DIR": "classifier/engine-cache",
    "ALERT_QUEUE_DIR": "alert/alert-queue",
    "AUTHREQUEST_STATE_DIR": "authrequest/state",
    "FRONTEND_DATABASE": "frontend/frontend.sqlite3",
}
# Of those, the ones a device's modules keep (the front-end is not on a device): in a fleet (`--device`, `--fleet`)
# each device gets its own, under LOCAL_STATE/devices/<device-id>/ (edgehub-emulator up --device-state).
DEVICE_STATE_PATHS = {
    name: LOCAL_STATE_PATHS[name]
    for name in ("MODEL_STORE", "ENGINE_CACHE_DIR", "ALERT_QUEUE_DIR", "AUTHREQUEST_STATE_DIR")
}


def fleet_state_options(command: Sequence[str], local_state: Path) -> list[str]:
    """`--device-state` and `--device-path` for `edgehub-emulator up` when the command runs a fleet; else none (the
    single default device of `make run` keeps LOCAL_STATE/classifier/..., LOCAL_STATE/alert/...)."""
    if not any(arg in ("--device", "--fleet") or arg.startswith(("--device=", "--fleet=")) for arg in command):
        return []
    options = ["--device-state", str(local_state / "devices")]
    for name, relative in DEVICE_STATE_PATHS.items():
        options += ["--device-path", f"{name}={relative}"]
    return options


# Names `make run VAR=value` may set that are options of make or of this script, not module settings.
RUN_OPTIONS = {"VERBOSE", "SDK_LOGS"}
PLACEHOLDER = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")
# settings whose values are secrets (keys, passwords, connection strings, signed URLs): never printed
SECRET_NAME = re.compile(r"KEY|PASSWORD|SECRET|TOKEN|CONNECTION_STRING|WEBHOOK_URL")


def shown(name: str, value: str) -> str:
    """`value` as it may be printed: a secret's only as set or empty."""
    if SECRET_NAME.search(name):
        return "(set, not shown)" if value else "(empty)"
    return value


def make_command_line_variables(makeflags: str) -> dict[str, str]:
    """The `NAME=value` definitions of make's command line, as make hands them down in MAKEFLAGS (after ` -- `,
    spaces inside a value escaped with a backslash)."""
    _, sep, definitions = f" {makeflags}".partition(" -- ")
    if not sep:
        return {}
    found: dict[str, str] = {}
    for word in re.split(r"(?<!\\) ", definitions):
        name, eq, value = word.partition("=")
        if eq and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            found[name] = value.replace("\\ ", " ")
    return found


def makefile_variables(makefile: Path) -> set[str]:
    """The variables the Makefile itself defines (its own options: PYTHON, VENV, PYTEST_ARGS, ...)."""
    if not makefile.is_file():
        return set()
    return set(re.findall(r"^([A-Z][A-Z0-9_]*)\s*[?:+]?=", makefile.read_text(encoding="utf-8"), re.MULTILINE))


def manifest_module_variables(manifest: Path | None) -> dict[str, set[str]]:
    """Per module of the deployment manifest, the $VARIABLES its `env` is made of (what a module gets)."""
    if manifest is None or not manifest.is_file():
        return {}
    content = json.loads(manifest.read_text(encoding="utf-8"))
    modules = content.get("modulesContent", {}).get("$edgeAgent", {}).get("properties.desired", {}).get("modules", {})
    found: dict[str, set[str]] = {}
    for name, spec in modules.items():
        names: set[str] = set()
        for holder in (spec.get("env") or {}).values():
            names.update(PLACEHOLDER.findall(str(holder.get("value", ""))))
        found[name] = names
    return found


class ModuleSettingsPlan:  # pylint: disable=too-few-public-methods  # the result of one computation, printed
    """The settings `make run` gives the modules and the front-end, in this order of precedence (last wins):
    .env_template (the documented defaults), .env, the local state folder for the paths a device keeps in volumes,
    then the shell's environment and `make run NAME=value` for every documented setting."""

    def __init__(  # pylint: disable=too-many-arguments,too-many-locals
        self,
        template: Path | None,
        dotenv: Path | None,
        local_state: Path,
        manifest: Path | None,
        environ: dict[str, str],
        makefile: Path | None = None,
    ) -> None:
        defaults = env_file_values(template) if template and template.is_file() else {}
        chosen = env_file_values(dotenv) if dotenv and dotenv.is_file() else {}
        self.readers: dict[str, list[str]] = {}
        for module, names in sorted(manifest_module_variables(manifest).items()):
            for name in names:
                self.readers.setdefault(name, []).append(module)
        known = set(defaults) | set(self.readers)
        self.values: dict[str, str] = {**defaults, **chosen}
        self.lines: list[str] = []
        self.warnings: list[str] = []
        for name, relative in LOCAL_STATE_PATHS.items():
            if name in known and chosen.get(name, defaults.get(name, "")) == defaults.get(name, ""):
                self.values[name] = str(local_state / relative)
        command_line = make_command_line_variables(environ.get("MAKEFLAGS", ""))
        self.overrides: dict[str, str] = {}
        for name in sorted(known):
            if name in environ and name != "MODULE_KEY":
                value = environ[name]
                # a path given relative to where make runs (the repository root): the modules run in their folders
                if value and not value.startswith("/") and "://" not in value and Path(value).exists():
                    value = str(Path(value).resolve())
                self.values[name] = value
                self.overrides[name] = value
                origin = "make's command line" if name in command_line else "the environment"
                used = ", ".join(self.readers.get(name, [])) or (
                    "the front-end" if name.startswith("FRONTEND_") else ""
                )
                if used:
                    self.lines.append(f"{name}={shown(name, value)} from {origin} (read by {used})")
                elif name in command_line:  # the shell's other variables may be meant for other tools (genconfig)
                    self.warnings.append(
                        f"{name}={shown(name, value)} from {origin}: no module of the deployment manifest gets {name} "
                        "in its env, so it changes nothing here (add it to the module's env in the manifest, as on "
                        "a device)"
                    )
        options = RUN_OPTIONS | (makefile_variables(makefile) if makefile else set())
        for name, value in sorted(command_line.items()):
            if name not in known and name not in options:
                self.warnings.append(
                    f"{name}={shown(name, value)} on make's command line: neither a module setting (see "
                    ".env_template) nor an option of make run; ignored"
                )
        self.source = dotenv if dotenv and dotenv.is_file() else template

    def precedence(self) -> str:
        """One line that says where the settings come from."""
        files = ".env_template, then .env" if self.source and self.source.name == ".env" else ".env_template (no .env)"
        return (
            f"module settings: {files}, then the local state folder for MODEL_STORE, ALERT_QUEUE_DIR, "
            "ENGINE_CACHE_DIR, FRONTEND_DATABASE, then the shell's environment and make's command line (last wins)"
        )

    def write(self, state: Path) -> Path:
        """STATE/up.env (mode 600): the values, with a local MODULE_KEY when none is set."""
        values = dict(self.values)
        if not values.get("MODULE_KEY"):
            key = os.environ.get("MODULE_KEY", "")
            origin = "the shell's MODULE_KEY"
            if not key:
                key, origin = local_module_key(state), f"the local key in {state / 'module-key'}"
            log.info("MODULE_KEY is empty in %s: the modules get %s", self.source or "the environment", origin)
            values["MODULE_KEY"] = key
        target = state / "up.env"
        state.mkdir(parents=True, exist_ok=True)
        target.touch(mode=0o600)
        target.write_text(
            "# written by tools/solution_up.py for this run: "
            + self.precedence()
            + "\n"
            + "".join(f"{name}={value}\n" for name, value in values.items()),
            encoding="utf-8",
        )
        return target


def start_azurite(state: Path) -> Azurite | None:
    """Azurite on the default ports with its data in STATE/azurite, or None when one listens there already."""
    if _listening(DEFAULT_BLOB_PORT) and _listening(DEFAULT_QUEUE_PORT):
        log.info("Azurite (or Storage) already listens on %d/%d: using it", DEFAULT_BLOB_PORT, DEFAULT_QUEUE_PORT)
        return None
    azurite = Azurite(state / "azurite", DEFAULT_BLOB_PORT, DEFAULT_QUEUE_PORT, DEFAULT_TABLE_PORT)
    return azurite.start()


class SolutionError(Exception):
    """A part of the solution did not start: the message says which and why."""


class Children:
    """The processes this script started, each in its own process group; signals are forwarded to all of them."""

    def __init__(self) -> None:
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.stopping = threading.Event()

    def start(self, name: str, command: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        """Start `command` in a new session (Ctrl-C in the terminal reaches only this script, which forwards it)."""
        if self.stopping.is_set():
            raise SolutionError("stopping")
        process = subprocess.Popen(command, start_new_session=True, **kwargs)  # type: ignore[call-overload]  # pylint: disable=consider-using-with
        self.processes[name] = process
        return process

    def forward(self, signum: int, _frame: object = None) -> None:
        """Signal handler: pass the signal on to every running child; the main thread then stops the rest."""
        self.stopping.set()
        for process in self.processes.values():
            if process.poll() is None:
                try:
                    process.send_signal(signal.SIGTERM if signum == signal.SIGHUP else signum)
                except ProcessLookupError:
                    pass

    def exited(self) -> str | None:
        """The name of a child that has exited, if any."""
        return next((name for name, process in self.processes.items() if process.poll() is not None), None)

    def stop(self, name: str, timeout: float) -> int | None:
        """SIGTERM `name` (unless a signal was forwarded already), wait, then SIGKILL whatever is left in its group."""
        process = self.processes.get(name)
        if process is None:
            return None
        if process.poll() is None and not self.stopping.is_set():
            process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s: killing its process group", name, timeout)
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass  # the group is gone: nothing left behind
        return process.wait()


def _records(stream: IO[bytes]) -> Iterator[bytes]:
    """The stream's output as records ending in a newline or a carriage return (a progress line); the rest at
    the end."""
    pending = b""
    while chunk := os.read(stream.fileno(), 65536):
        pending += chunk
        end = max(pending.rfind(b"\n"), pending.rfind(b"\r")) + 1
        if end:
            yield from RECORD.findall(pending[:end])
            pending = pending[end:]
    if pending:
        yield pending


def _copy_output(stream: IO[bytes], ready: threading.Event, sdk_logs: bool) -> None:
    """Copy the hub's output to ours; set `ready` at its 'ready' line. Without `sdk_logs` the Azure SDKs' INFO
    and DEBUG lines (several per message) are left out, so the modules' own lines and the banner stay readable."""
    out = sys.stdout.buffer
    for record in _records(stream):
        if record.startswith(HUB_READY):
            ready.set()
        if not sdk_logs and SDK_CHATTER.search(record):
            continue
        out.write(record)
        out.flush()


def _wait(children: Children, condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll `condition()` until true; a child's exit, a stop signal or the timeout raise."""
    deadline = time.monotonic() + timeout
    while not condition():
        if children.stopping.is_set():
            raise SolutionError("stopped before the solution was up")
        gone = children.exited()
        if gone:
            raise SolutionError(f"{gone} exited with status {children.processes[gone].returncode} before {what}")
        if time.monotonic() > deadline:
            raise SolutionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


def _emulator(state: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "edgehub-emulator"), *argv, "--state", str(state)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _answers(state: Path, device: str, module: str) -> bool:
    """True once `module` answers a direct method: a request without fields gets its 400 (exit status 1: the
    method answered, not 2xx); IoT Hub says 404 while the module is not connected (exit status 2)."""
    try:
        answer = _emulator(state, "invoke", device, module, "ProcessRequest", "--payload", "{}", "--timeout", "5")
    except subprocess.TimeoutExpired:
        return False
    return answer.returncode in (0, 1)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:  # noqa: S310  # a local http URL
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _frontend_env(state: Path, settings: dict[str, str]) -> dict[str, str]:
    """The front-end's environment: this process's, the run's settings (empty ones left out), then the emulator's
    service lines."""
    service = _emulator(state, "env", "authrequest", "--format", "json")
    if service.returncode != 0:
        raise SolutionError(f"edgehub-emulator env authrequest: {service.stderr.strip()}")
    lines = json.loads(service.stdout)
    missing = [name for name in SERVICE_VARS if not lines.get(name)]
    if missing:
        raise SolutionError(f"edgehub-emulator env authrequest gave no {', '.join(missing)}")
    values = {k: v for k, v in settings.items() if v != ""}
    return {**os.environ, **values, **{name: lines[name] for name in SERVICE_VARS}}


def _local_url(host: str, port: int | str) -> str:
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{port}"  # noqa: S104  # printed only


# Objects the demo video shows (it is made of coffee.png and chelsea.png), as the bundled models name them: the
# demo user gets the first one the model in use can output.
DEMO_VIDEO = ROOT / "iot-edge-solution" / "media" / "demo.mp4"
DEMO_OBJECTS = ("espresso", "cup", "tabby, tabby cat", "cat")


def model_labels(settings: dict[str, str], module_dir: Path) -> Path | None:
    """labels.txt of the model the classifier serves at start (MODEL_NAME, MODEL_VERSION or the newest, in
    MODEL_REPOSITORY or the bundled models); None when that model has no labels."""
    repository = Path(settings.get("MODEL_REPOSITORY") or ROOT / "iot-edge-solution" / "models")
    if not repository.is_absolute():
        repository = (module_dir / repository).resolve()
    folder = repository / (settings.get("MODEL_NAME") or "efficientnet-lite0")
    if settings.get("MODEL_VERSION"):
        versions = [folder / settings["MODEL_VERSION"]]
    else:
        found = [p for p in folder.glob("*") if p.is_dir()]
        versions = sorted(found, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))
        versions = versions[-1:]
    labels = [v / "labels.txt" for v in versions if (v / "labels.txt").is_file()]
    return labels[0] if labels else None


def demo_object(labels: Path | None) -> str | None:
    """The first of DEMO_OBJECTS that `labels` holds (a line, or a name of a line's comma-separated synonyms)."""
    if labels is None:
        return None
    lines = [line.strip().lower() for line in labels.read_text(encoding="utf-8").splitlines() if line.strip()]
    names = set(lines) | {name.strip() for line in lines for name in line.split(",")}
    return next((candidate for candidate in DEMO_OBJECTS if candidate in names), None)


def shows_demo_video(settings: dict[str, str], module_dir: Path) -> bool:
    """True when the classifier reads the bundled demo video."""
    camera = settings.get("CAMERA_PATH", "")
    return bool(camera) and (module_dir / camera).resolve() == DEMO_VIDEO.resolve()


def banner(frontend_url: str, module_env: dict[str, str], demo: dict[str, str], on_demo_video: bool = True) -> str:
    """What `make run` prints once everything is up: where to go and whom to sign in as."""
    scoring = module_env.get("SCORING_PORT") or "8080"
    preview = module_env.get("PREVIEW_PORT") or "0"
    model = module_env.get("MODEL_NAME") or "efficientnet-lite0"
    seen = "the demo video shows one" if on_demo_video else f"show one to {module_env.get('CAMERA_PATH', 'the camera')}"
    rows = [
        ("front-end (sign in)", f"{frontend_url}/"),
        ("classifier scoring API", f"http://127.0.0.1:{scoring}/score  (also /healthz, /readyz, /metrics)"),
        ("live preview", f"http://127.0.0.1:{preview}/" if preview != "0" else "off (PREVIEW_PORT=0)"),
        ("demo user", demo.get("DEMO_USER", "?")),
        ("its object", f"{demo.get('DEMO_OBJECT', '?')} ({seen}; a class of {model})"),
        ("its password", f"{demo.get('DEMO_PASSWORD', '?')} (local use only; new at each start)"),
    ]
    width = max(len(label) for label, _ in rows)
    rule = "=" * 78
    body = "\n".join(f"  {label.ljust(width)}  {value}" for label, value in rows)
    return f"\n{rule}\n  The solution is up. Ctrl-C stops everything.\n{body}\n{rule}\n"


def _ensure_demo(env: dict[str, str]) -> dict[str, str]:
    """`frontend users ensure-demo` with an object of the model in use; its DEMO_* lines."""
    module_dir = ROOT / "iot-edge-solution" / "modules" / "classifier"
    labels = model_labels(env, module_dir)
    command = [str(BIN / "frontend"), "users", "ensure-demo"]
    if labels is not None:
        env = {**env, "FRONTEND_LABELS_FILE": str(labels)}
        chosen = demo_object(labels)
        if chosen is not None:
            command += ["--object", chosen]
    demo_run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    if demo_run.returncode != 0:
        raise SolutionError(f"frontend users ensure-demo: {demo_run.stderr.strip()}")
    return dict(line.split("=", 1) for line in demo_run.stdout.splitlines() if "=" in line)


def run_with_frontend(  # pylint: disable=too-many-locals  # the steps of the start, in order
    children: Children, command: list[str], state: Path, settings: dict[str, str], sdk_logs: bool = False
) -> int:
    """Start the hub (`command`), wait for it and authrequest, start the front-end; run until a signal or a child
    exits. The banner is printed once everything is up and again once start-up has settled (the modules' first
    lines may have pushed it off the screen). Raises SolutionError when a part does not come up."""
    ready = threading.Event()
    hub = children.start("hub", command, stdout=subprocess.PIPE)
    assert hub.stdout is not None
    threading.Thread(target=_copy_output, args=(hub.stdout, ready, sdk_logs), daemon=True).start()
    _wait(children, ready.is_set, HUB_TIMEOUT_S, "the hub's ready line")
    env = _frontend_env(state, settings)
    device, module = env.get("FRONTEND_DEVICE_ID", "edge-device"), env.get("FRONTEND_MODULE_ID", "authrequest")
    log.info("hub up; waiting for %s to connect", module)
    _wait(children, lambda: _answers(state, device, module), DEVICE_TIMEOUT_S, f"{module} to connect")
    demo = _ensure_demo(env)
    url = _local_url(env.get("FRONTEND_HOST", "127.0.0.1"), env.get("FRONTEND_PORT", "8000"))
    children.start("frontend", [str(BIN / "frontend"), "serve"], env=env)
    _wait(children, lambda: _healthy(url), FRONTEND_TIMEOUT_S, f"the front-end at {url}")
    on_demo = shows_demo_video(settings, ROOT / "iot-edge-solution" / "modules" / "classifier")
    text = banner(url, settings, demo, on_demo)
    print(text, flush=True)
    again_at: float | None = time.monotonic() + BANNER_AGAIN_S
    while not children.stopping.is_set():
        gone = children.exited()
        if gone:
            raise SolutionError(f"{gone} exited with status {children.processes[gone].returncode}")
        if again_at is not None and time.monotonic() >= again_at:
            print(text, flush=True)
            again_at = None
        time.sleep(0.5)
    return 0


SIGNALS_MAKE_HANDLES = (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


def caught_signals(pid: int) -> set[int] | None:
    """The signals process `pid` has handlers for (Linux: SigCgt of /proc/PID/status); None elsewhere."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    except OSError:
        return None
    match = re.search(r"^SigCgt:\s*([0-9a-fA-F]+)", status, re.MULTILINE)
    if match is None:
        return None
    mask = int(match.group(1), 16)
    return {number for number in range(1, 65) if mask & (1 << (number - 1))}


def watch_parent(children: Children, interval: float = 0.3) -> threading.Thread | None:
    """Stop when make, our parent, is told to stop. GNU make hands SIGTERM on to its children, but on SIGINT,
    SIGHUP or SIGQUIT it only resets the signal to its default and waits for them (a terminal's Ctrl-C reaches
    the whole process group; `kill -INT <make>` reaches make alone). The reset shows in /proc: a signal make
    caught at the start and no longer catches was received, and is passed on here. A parent that goes away
    (its children are handed to another process) stops everything too."""
    parent = os.getppid()
    try:
        name = Path(f"/proc/{parent}/comm").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    at_start = caught_signals(parent)
    if at_start is None or name not in ("make", "gmake"):
        return None  # only make's way of handling signals is known here (a shell changes its handlers at will)
    watched = [number for number in SIGNALS_MAKE_HANDLES if number in at_start]

    def watch() -> None:
        while not children.stopping.wait(interval):
            if os.getppid() != parent:
                children.forward(signal.SIGTERM)
                return
            now = caught_signals(parent)
            received = [number for number in watched if now is not None and number not in now]
            if received:
                log.info("make received %s: stopping", signal.Signals(received[0]).name)
                children.forward(received[0])
                return

    thread = threading.Thread(target=watch, name="watch-make", daemon=True)
    thread.start()
    return thread


def settings_plan(args: argparse.Namespace, command: list[str], state: Path) -> ModuleSettingsPlan:
    """The run's module settings from the options; their precedence, overrides and warnings logged."""
    local_state = Path(args.local_state).resolve() if args.local_state else state.parent
    manifest = Path(args.manifest) if args.manifest else next((Path(a) for a in command if a.endswith(".json")), None)
    template = ROOT / ".env_template"
    dotenv: Path | None = Path(args.env_source) if args.env_source else ROOT / ".env"
    if dotenv is not None and dotenv.resolve() == template.resolve():
        dotenv = None
    environ = dict(os.environ)
    if args.verbose:
        environ["LOG_EVERY_FRAME"] = "True"
    plan = ModuleSettingsPlan(template, dotenv, local_state, manifest, environ, ROOT / "Makefile")
    log.info("%s", plan.precedence())
    for line in plan.lines:
        log.info("  %s", line)
    for warning in plan.warnings:
        log.warning("warning: %s", warning)
    return plan


def main(argv: list[str] | None = None) -> int:
    """Start Azurite, run the command with the run's settings (and the front-end), stop everything; the exit
    status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--state", default=".state/edgehub-emulator", help="the emulator's state folder")
    parser.add_argument(
        "--local-state",
        help="the folder of the modules' and the front-end's local state (default: the parent of --state)",
    )
    parser.add_argument("--env-source", help="the .env to start from (default: .env, else .env_template)")
    parser.add_argument("--manifest", help="the deployment manifest (default: the one the command names)")
    parser.add_argument(
        "--frontend",
        action="store_true",
        help="also run the sign-in front-end once the hub and authrequest are up; print the URLs and a demo user",
    )
    parser.add_argument(
        "--sdk-logs", action="store_true", help="with --frontend: keep the Azure SDKs' INFO lines in the output"
    )
    parser.add_argument(
        "--verbose", action="store_true", help="a line per frame from the classifier (LOG_EVERY_FRAME) and SDK logs"
    )
    parser.add_argument(
        "--no-azurite",
        action="store_true",
        help="never start Azurite: Storage is run by someone else (while it is down the modules wait for it)",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --")
    logging.basicConfig(level=logging.INFO, format="solution-up: %(message)s")
    state = Path(args.state).resolve()
    state.mkdir(parents=True, exist_ok=True)
    plan = settings_plan(args, command, state)
    local_state = Path(args.local_state).resolve() if args.local_state else state.parent
    command = [*command, "--env-file", str(plan.write(state)), *fleet_state_options(command, local_state)]
    children = Children()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, children.forward)
    watch_parent(children)
    try:
        azurite = None if args.no_azurite else start_azurite(state)
    except AzuriteError as e:
        print(f"solution-up: {e}", file=sys.stderr)
        return 1
    status = 0
    try:
        if args.frontend:
            status = run_with_frontend(children, command, state, plan.values, args.sdk_logs or args.verbose)
        else:
            children.start("hub", command)
            status = children.processes["hub"].wait()
    except SolutionError as e:
        if not children.stopping.is_set():
            print(f"solution-up: {e}", file=sys.stderr)
            status = 1
    finally:
        children.stop("frontend", STOP_TIMEOUT_S["frontend"])
        hub_status = children.stop("hub", STOP_TIMEOUT_S["hub"])
        if azurite is not None:
            azurite.stop()
            log.info("Azurite stopped")
    if not args.frontend and hub_status is not None:
        return hub_status
    log.info("stopped: the front-end, the modules and the hub")
    return status


if __name__ == "__main__":
    sys.exit(main())
