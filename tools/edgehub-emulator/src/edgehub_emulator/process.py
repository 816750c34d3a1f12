"""`edgehub-emulator start` in a subprocess, for tests, benchmarks and tools that need a running hub: its own state
folder, free service and workload ports, the CLI (`env`, `monitor`, ...) against the same instance.

MQTT is always on port 8883 (fixed by the device SDK): one instance per network namespace."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Sequence

READY_PREFIX = "REQUESTS_CA_BUNDLE="
MQTT_PORT = 8883
SERVICE_VARIABLES = ("IOTHUB_CONNECTION_STRING", "REQUESTS_CA_BUNDLE")


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:`port`. Bound as servers bind (SO_REUSEADDR), so connections of a
    server that just stopped, still in TIME_WAIT, do not count."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cli_options(state: Path, service_port: int, workload_port: int, *extra: str) -> list[str]:
    """The state folder and ports every CLI call of one emulator shares, plus `extra` options."""
    return ["--state", str(state), "--service-port", str(service_port), "--workload-port", str(workload_port), *extra]


class EmulatorCliError(RuntimeError):
    """An `edgehub-emulator` command exited with an error; the message holds its stderr."""


class EmulatorProcess:  # pylint: disable=too-many-instance-attributes  # settings of one process
    """`edgehub-emulator start --manifest MANIFEST` in a subprocess, on free service/workload ports (unless given),
    restartable on the same state folder and ports.

    `options` go to every CLI call (default: no module-to-module method port, which would need 443);
    `start_options` only to `start` (e.g. `--log-level DEBUG`). The emulator's log goes to `log` (default
    `emulator.log` next to the state folder), appended to on each start."""

    def __init__(  # pylint: disable=too-many-arguments
        self,
        state: Path,
        manifest: Path,
        *,
        options: Sequence[str] = ("--module-method-port", "0"),
        start_options: Sequence[str] = (),
        log: Path | None = None,
        start_timeout: float = 60.0,
        stop_timeout: float = 20.0,
    ) -> None:
        self.state = state
        self.manifest = manifest
        self.options = list(options)
        self.start_options = list(start_options)
        self.log = log if log is not None else state.parent / "emulator.log"
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.service_port = free_port()
        self.workload_port = free_port()
        self.process: subprocess.Popen[str] | None = None

    @property
    def args(self) -> list[str]:
        """The options every CLI call of this instance shares."""
        return cli_options(self.state, self.service_port, self.workload_port, *self.options)

    def start(self) -> EmulatorProcess:
        """Start and return once it prints its CA line (every server listens then); RuntimeError with the log
        when it exits or stays silent for `start_timeout` seconds."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("a", encoding="utf-8") as log:
            self.process = subprocess.Popen(  # pylint: disable=consider-using-with  # stopped by stop()
                [
                    sys.executable,
                    "-m",
                    "edgehub_emulator.cli",
                    "start",
                    "--manifest",
                    str(self.manifest),
                    *self.start_options,
                    *self.args,
                ],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        assert self.process.stdout is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if line.startswith(READY_PREFIX):
                return self
            if not line and self.process.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"the emulator did not start; its log:\n{self.log_text()}")

    def stop(self) -> None:
        """SIGTERM and wait; after `stop_timeout` seconds SIGKILL, then subprocess.TimeoutExpired (a hub that
        does not stop on SIGTERM is a fault)."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise
        if self.process and self.process.stdout:
            self.process.stdout.close()

    def restart(self) -> EmulatorProcess:
        """Stop, then start again on the same state folder and ports."""
        self.stop()
        return self.start()

    def running(self) -> bool:
        """True while the process runs."""
        return self.process is not None and self.process.poll() is None

    def cli(self, *argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run an `edgehub-emulator` command against this instance; EmulatorCliError when `check` and it fails."""
        result = subprocess.run(
            [sys.executable, "-m", "edgehub_emulator.cli", *argv, *self.args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise EmulatorCliError(f"edgehub-emulator {' '.join(argv)} failed: {result.stderr}")
        return result

    def env(self, module: str, workload: bool = False) -> dict[str, str]:
        """`edgehub-emulator env MODULE --format json`: the module's variables (simulator's or, with `workload`,
        the workload API's), IOTHUB_CONNECTION_STRING and REQUESTS_CA_BUNDLE."""
        return json.loads(self.cli("env", module, "--format", "json", *(["--workload"] if workload else [])).stdout)

    def service_env(self, module: str) -> dict[str, str]:
        """What a service-side client needs: IOTHUB_CONNECTION_STRING and REQUESTS_CA_BUNDLE."""
        env = self.env(module)
        return {name: env[name] for name in SERVICE_VARIABLES}

    def monitor_lines(self) -> list[str]:
        """The $upstream messages so far, one JSON text each (`monitor --from-start --once`)."""
        return [line for line in self.cli("monitor", "--from-start", "--once", "--raw").stdout.splitlines() if line]

    def upstream(self) -> list[dict[str, Any]]:
        """The $upstream messages so far."""
        return [json.loads(line) for line in self.monitor_lines()]

    def log_text(self) -> str:
        """What the emulator logged so far."""
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
