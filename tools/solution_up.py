"""Run a command (normally `edgehub-emulator up ...`) with the local parts the solution needs beside the hub:

- Azurite, the local Azure Storage, on its default ports (blob 10000, queue 10001, table 10002), keeping its data
  in STATE/azurite, so `STORAGE_CONNECTION_STRING=UseDevelopmentStorage=true` works; an Azurite already listening
  there is used as it is.
- A MODULE_KEY for authrequest and the classifier when the solution's .env (or, without one, .env_template) sets
  none: made once into STATE/module-key (mode 600, git-ignored with the state folder) and handed to the command
  through STATE/up.env (a copy of the .env with the key) and `--env-file`.

Ctrl-C or SIGTERM go to the command; Azurite stops after it.

    python tools/solution_up.py --state .edgehub-emulator -- \
        edgehub-emulator up iot-edge-solution/deployment.template.json --state .edgehub-emulator

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


def env_file_with_key(state: Path, source: Path | None) -> Path | None:
    """STATE/up.env with a local MODULE_KEY when `source` sets none; None when it sets one."""
    values = env_file_values(source) if source else {}
    if values.get("MODULE_KEY"):
        return None
    # the shell's MODULE_KEY, else the local one: the .env's empty value would win over the shell's otherwise
    key, origin = os.environ.get("MODULE_KEY", ""), "the shell's MODULE_KEY"
    if not key:
        key, origin = local_module_key(state), f"the local key in {state / 'module-key'}"
    target = state / "up.env"
    text = source.read_text(encoding="utf-8") if source else ""
    target.touch(mode=0o600)
    target.write_text(
        f"{text.rstrip()}\n# added by tools/solution_up.py: {source or 'no .env'} sets no MODULE_KEY\n"
        f"MODULE_KEY={key}\n",
        encoding="utf-8",
    )
    log.info("MODULE_KEY is empty in %s: the modules get %s", source or "the environment", origin)
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
    """True once `module` answers a direct method: a request without fields gets its 400 (IoT Hub says 404 while
    the module is not connected)."""
    try:
        return (
            _emulator(state, "invoke", device, module, "ProcessRequest", "--payload", "{}", "--timeout", "5").returncode
            == 0
        )
    except subprocess.TimeoutExpired:
        return False


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:  # noqa: S310  # a local http URL
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _frontend_env(state: Path, source: Path | None) -> dict[str, str]:
    """The front-end's environment: the env file's values under the shell's, then the emulator's service lines."""
    service = _emulator(state, "env", "authrequest", "--format", "json")
    if service.returncode != 0:
        raise SolutionError(f"edgehub-emulator env authrequest: {service.stderr.strip()}")
    lines = json.loads(service.stdout)
    missing = [name for name in SERVICE_VARS if not lines.get(name)]
    if missing:
        raise SolutionError(f"edgehub-emulator env authrequest gave no {', '.join(missing)}")
    values = {k: v for k, v in (env_file_values(source) if source else {}).items() if v != ""}
    return {**values, **os.environ, **{name: lines[name] for name in SERVICE_VARS}}


def _local_url(host: str, port: int | str) -> str:
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{port}"  # noqa: S104  # printed only


def banner(frontend_url: str, module_env: dict[str, str], demo: dict[str, str]) -> str:
    """What `make run` prints once everything is up: where to go and whom to sign in as."""
    scoring = module_env.get("SCORING_PORT") or "8080"
    preview = module_env.get("PREVIEW_PORT") or "0"
    rows = [
        ("front-end (sign in)", f"{frontend_url}/"),
        ("classifier scoring API", f"http://127.0.0.1:{scoring}/score  (also /healthz, /readyz, /metrics)"),
        ("live preview", f"http://127.0.0.1:{preview}/" if preview != "0" else "off (PREVIEW_PORT=0)"),
        ("demo user", demo.get("DEMO_USER", "?")),
        ("its object", f"{demo.get('DEMO_OBJECT', '?')} (the demo video shows one)"),
        ("its password", f"{demo.get('DEMO_PASSWORD', '?')} (local use only; new at each start)"),
    ]
    width = max(len(label) for label, _ in rows)
    rule = "=" * 78
    body = "\n".join(f"  {label.ljust(width)}  {value}" for label, value in rows)
    return f"\n{rule}\n  The solution is up. Ctrl-C stops everything.\n{body}\n{rule}\n"


def run_with_frontend(
    children: Children, command: list[str], state: Path, source: Path | None, sdk_logs: bool = False
) -> int:
    """Start the hub (`command`), wait for it and authrequest, start the front-end; run until a signal or a child
    exits. Raises SolutionError when a part does not come up."""
    ready = threading.Event()
    hub = children.start("hub", command, stdout=subprocess.PIPE)
    assert hub.stdout is not None
    threading.Thread(target=_copy_output, args=(hub.stdout, ready, sdk_logs), daemon=True).start()
    _wait(children, ready.is_set, HUB_TIMEOUT_S, "the hub's ready line")
    env = _frontend_env(state, source)
    device, module = env.get("FRONTEND_DEVICE_ID", "edge-device"), env.get("FRONTEND_MODULE_ID", "authrequest")
    log.info("hub up; waiting for %s to connect", module)
    _wait(children, lambda: _answers(state, device, module), DEVICE_TIMEOUT_S, f"{module} to connect")
    demo_run = subprocess.run(
        [str(BIN / "frontend"), "users", "ensure-demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if demo_run.returncode != 0:
        raise SolutionError(f"frontend users ensure-demo: {demo_run.stderr.strip()}")
    demo = dict(line.split("=", 1) for line in demo_run.stdout.splitlines() if "=" in line)
    url = _local_url(env.get("FRONTEND_HOST", "127.0.0.1"), env.get("FRONTEND_PORT", "8000"))
    children.start("frontend", [str(BIN / "frontend"), "serve"], env=env)
    _wait(children, lambda: _healthy(url), FRONTEND_TIMEOUT_S, f"the front-end at {url}")
    module_env = {**os.environ, **(env_file_values(source) if source else {})}
    print(banner(url, module_env, demo), flush=True)
    while not children.stopping.is_set():
        gone = children.exited()
        if gone:
            raise SolutionError(f"{gone} exited with status {children.processes[gone].returncode}")
        time.sleep(0.5)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Start Azurite, run the command with the env file (and the front-end), stop everything; the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--state", default=".edgehub-emulator", help="the emulator's state folder")
    parser.add_argument("--env-source", help="the .env to start from (default: .env, else .env_template)")
    parser.add_argument(
        "--frontend",
        action="store_true",
        help="also run the sign-in front-end once the hub and authrequest are up; print the URLs and a demo user",
    )
    parser.add_argument(
        "--sdk-logs", action="store_true", help="with --frontend: keep the Azure SDKs' INFO lines in the output"
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --")
    logging.basicConfig(level=logging.INFO, format="solution-up: %(message)s")
    state = Path(args.state).resolve()
    state.mkdir(parents=True, exist_ok=True)
    source = (
        Path(args.env_source)
        if args.env_source
        else next((p for p in (ROOT / ".env", ROOT / ".env_template") if p.is_file()), None)
    )
    env_file = env_file_with_key(state, source)
    if env_file is not None:
        command = [*command, "--env-file", str(env_file)]
    children = Children()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, children.forward)
    try:
        azurite = start_azurite(state)
    except AzuriteError as e:
        print(f"solution-up: {e}", file=sys.stderr)
        return 1
    status = 0
    try:
        if args.frontend:
            status = run_with_frontend(children, command, state, source, args.sdk_logs)
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
