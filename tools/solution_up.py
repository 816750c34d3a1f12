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
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path

from edgehub_emulator.azurite import DEFAULT_BLOB_PORT, DEFAULT_QUEUE_PORT, DEFAULT_TABLE_PORT, Azurite, AzuriteError

log = logging.getLogger("solution-up")
ROOT = Path(__file__).resolve().parents[1]


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


def main(argv: list[str] | None = None) -> int:
    """Start Azurite, run the command with the env file, stop Azurite; the command's exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--state", default=".edgehub-emulator", help="the emulator's state folder")
    parser.add_argument("--env-source", help="the .env to start from (default: .env, else .env_template)")
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
    try:
        azurite = start_azurite(state)
    except AzuriteError as e:
        print(f"solution-up: {e}", file=sys.stderr)
        return 1
    child = subprocess.Popen(command)  # pylint: disable=consider-using-with  # runs until Ctrl-C

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    try:
        return child.wait()
    finally:
        if azurite is not None:
            azurite.stop()
            log.info("Azurite stopped")


if __name__ == "__main__":
    sys.exit(main())
