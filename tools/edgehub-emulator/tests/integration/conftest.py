"""One emulator process for the integration tests, driven through the CLI and the unmodified SDK clients."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests
from azure.iot.device import IoTHubModuleClient
from azure.iot.device.exceptions import ClientError, CredentialError
from azure.iot.hub import IoTHubRegistryManager

from edgehub_emulator import mqtt
from edgehub_emulator.identity import generate_sas, parse_connection_string
from edgehub_emulator.process import EmulatorProcess, cli_options, free_port
from solution_testkit import wait_for

FIXTURES = Path(__file__).parents[1] / "fixtures"
EDGE_VARS = (
    "EdgeHubConnectionString",
    "EdgeModuleCACertificateFile",
    "IOTEDGE_IOTHUBHOSTNAME",
    "IOTEDGE_GATEWAYHOSTNAME",
    "IOTEDGE_MODULEGENERATIONID",
    "IOTEDGE_WORKLOADURI",
    "IOTEDGE_APIVERSION",
    "IOTEDGE_DEVICEID",
    "IOTEDGE_MODULEID",
    "IOTEDGE_AUTHSCHEME",
)
MAX_MESSAGE_BYTES = 8192


def emulator_process(root: Path) -> EmulatorProcess:
    """The emulator on the fixture manifest, with a small message limit and debug logging (the tests read it)."""
    return EmulatorProcess(
        root / "state",
        FIXTURES / "deployment.json",
        options=("--max-message-bytes", str(MAX_MESSAGE_BYTES)),
        start_options=("--log-level", "DEBUG"),
        start_timeout=30,
        stop_timeout=15,
    )


SOLUTION = FIXTURES / "solution"
CONSOLE_SCRIPT = Path(sys.executable).with_name("edgehub-emulator")
MODULE_LINE = re.compile(r"^(?P<name>[\w-]+)( *) \| (?P<text>.*)$")
# What the test shell exports, what the solution's .env holds (written here: .env files are git-ignored).
SHELL_ENV = {
    "FROM_SHELL": "shell",
    "SHELL_ONLY": "shell placeholder",
    "DOTENV_OVER_SHELL": "shell",
    "EdgeHubConnectionString": "stale value a module must not see",
}
DOTENV = """# the solution's .env
FROM_DOTENV=dotenv
export DOTENV_OVER_SHELL="dotenv"
OVERRIDDEN=dotenv
DOTENV_ONLY='dotenv placeholder'
"""


class UpProcess:
    """`edgehub-emulator up deployment.template.json` (the console script) on a copy of the fixture solution."""

    def __init__(self, root: Path) -> None:
        self.solution = root / "solution"
        shutil.copytree(SOLUTION, self.solution)
        (self.solution / ".env").write_text(DOTENV, encoding="utf-8")
        self.manifest = self.solution / "deployment.template.json"
        self.state = root / "state"
        self.out = root / "up.out"
        self.err = root / "up.err"
        self.service_port = free_port()
        self.workload_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.up_args: list[str] = []  # options of `up` only (a fleet, ...)

    @property
    def args(self) -> list[str]:
        """Options every CLI call shares (no module-to-module method port: nothing here needs 443)."""
        return cli_options(self.state, self.service_port, self.workload_port, "--module-method-port", "0")

    def start(self) -> None:
        """Start in a new session (as a terminal runs a foreground job); wait until the hub listens."""
        env = {**os.environ, **SHELL_ENV}
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.process = subprocess.Popen(  # pylint: disable=consider-using-with
                [str(CONSOLE_SCRIPT), "up", str(self.manifest), *self.args, *self.up_args],
                stdout=out,
                stderr=err,
                env=env,
                start_new_session=True,
            )
        try:
            wait_for(lambda: "REQUESTS_CA_BUNDLE=" in self.stdout() or self.process.poll() is not None, 60)
        finally:
            if self.process.poll() is not None:
                raise RuntimeError(f"up exited with {self.process.returncode}:\n{self.stderr()}")

    def stdout(self) -> str:
        """What `up` printed so far: the hub's two lines, then every module's output."""
        return self.out.read_text(encoding="utf-8", errors="replace")

    def stderr(self) -> str:
        """What `up` logged so far."""
        return self.err.read_text(encoding="utf-8", errors="replace")

    def lines(self, module: str) -> list[str]:
        """The output lines of one module, without the prefix."""
        found = []
        for line in self.stdout().splitlines():
            match = MODULE_LINE.match(line)
            if match and match["name"] == module:
                found.append(match["text"])
        return found

    def line(self, module: str, prefix: str, timeout: float = 60) -> str:
        """Wait for the module's first line starting with prefix; return the rest of it."""
        return wait_for(
            lambda: next((t[len(prefix) :] for t in self.lines(module) if t.startswith(prefix)), None),
            timeout,
        )

    def cli(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Another console-script command against this instance."""
        return subprocess.run(
            [str(CONSOLE_SCRIPT), *argv, *self.args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def kill_leftovers(self) -> None:
        """Cleanup after a failed test: SIGKILL `up` and anything still running in the solution folder."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pid in processes_in(self.solution):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def processes_in(folder: Path) -> list[int]:
    """Live (not zombie) processes whose working directory is in folder (Linux /proc)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cwd = Path(os.readlink(proc / "cwd"))
            state = (proc / "stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and cwd.is_relative_to(folder.resolve()):
            found.append(int(proc.name))
    return found


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    """The emulator of one test module (port 8883 is fixed by the SDK, so there is one at a time: pytest tears
    a module's fixtures down before the next module's start)."""
    root = tmp_path_factory.mktemp("emulator")
    proc = emulator_process(root)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def registry(emulator: EmulatorProcess) -> IoTHubRegistryManager:  # pylint: disable=redefined-outer-name
    """The service SDK client with the emulator's CA trusted."""
    env = emulator.env("receiver")
    os.environ["REQUESTS_CA_BUNDLE"] = env["REQUESTS_CA_BUNDLE"]
    return IoTHubRegistryManager.from_connection_string(env["IOTHUB_CONNECTION_STRING"])


@pytest.fixture
def module_client(
    emulator: EmulatorProcess,  # pylint: disable=redefined-outer-name
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., IoTHubModuleClient]]:
    """A factory of connected-later module clients: how='simulator' | 'workload' | 'connection_string'."""
    clients: list[IoTHubModuleClient] = []

    def make(module: str, how: str = "simulator", **kwargs: Any) -> IoTHubModuleClient:
        env = emulator.env(module, workload=how == "workload")
        kwargs.setdefault("connection_retry_interval", 1)
        if how == "connection_string":
            ca = Path(env["REQUESTS_CA_BUNDLE"]).read_text(encoding="utf-8")
            client = IoTHubModuleClient.create_from_connection_string(
                env["EdgeHubConnectionString"], server_verification_cert=ca, **kwargs
            )
        else:
            for name in EDGE_VARS:
                monkeypatch.delenv(name, raising=False)
            for name, value in env.items():
                monkeypatch.setenv(name, value)
            client = IoTHubModuleClient.create_from_edge_environment(**kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        try:
            client.shutdown()
        except Exception:  # pylint: disable=broad-exception-caught
            pass


def service_token(emulator: EmulatorProcess) -> str:
    """A SAS token for the service API, signed with the policy of the service connection string."""
    cs = parse_connection_string(emulator.env("receiver")["IOTHUB_CONNECTION_STRING"])
    return generate_sas(cs["HostName"], cs["SharedAccessKey"], policy=cs["SharedAccessKeyName"])


def call_service_api(
    emulator: EmulatorProcess, method: str, path: str, body: bytes, token: str | None = None
) -> requests.Response:
    """A raw HTTPS request to the service API (for bodies the SDK would never send), signed by default."""
    env = emulator.env("receiver")
    host = parse_connection_string(env["IOTHUB_CONNECTION_STRING"])["HostName"]
    return requests.request(
        method,
        f"https://{host}{path}",
        data=body,
        headers={"Authorization": token or service_token(emulator)},
        verify=env["REQUESTS_CA_BUNDLE"],
        timeout=10,
    )


def assert_key_refused(emulator: EmulatorProcess, connection_string: str) -> None:
    """A module client with this connection string cannot connect, and the emulator says why."""
    ca = Path(emulator.env("receiver")["REQUESTS_CA_BUNDLE"]).read_text(encoding="utf-8")
    client = IoTHubModuleClient.create_from_connection_string(
        connection_string, server_verification_cert=ca, connection_retry=False
    )
    try:
        with pytest.raises((CredentialError, ClientError)):
            client.connect()
    finally:
        client.shutdown()
    cs = parse_connection_string(connection_string)
    client_id = f"{cs['DeviceId']}/{cs['ModuleId']}"
    assert f"refused MQTT client '{client_id}': SAS signature does not match" in emulator.log_text()


class DesiredPatches:
    """Collects the desired-property patches a module client receives; `wait(key, value)` returns the first match."""

    def __init__(self, client: IoTHubModuleClient) -> None:
        self.received: list[dict[str, Any]] = []
        client.on_twin_desired_properties_patch_received = self.received.append

    def wait(self, key: str, value: Any, timeout: float = 10.0) -> dict[str, Any]:
        """The first patch whose `key` equals `value`, waiting up to `timeout` seconds for it."""
        return wait_for(lambda: [p for p in self.received if p.get(key) == value], timeout)[0]


# A raw MQTT 3.1.1 client over TLS, written by hand (packets from the emulator's own codec where it has one).
def tls_socket(emulator: EmulatorProcess, timeout: float = 5) -> ssl.SSLSocket:
    """A TLS connection to the MQTT port that trusts the emulator's CA."""
    context = ssl.create_default_context(cafile=emulator.env("sender")["REQUESTS_CA_BUNDLE"])
    return context.wrap_socket(
        socket.create_connection(("127.0.0.1", 8883), timeout=timeout), server_hostname="localhost"
    )


def connect_packet(emulator: EmulatorProcess, module: str, keepalive: int = 60) -> bytes:
    """CONNECT as the SDK sends it: client id `device/module`, IoT Hub username, a valid SAS password."""
    cs = parse_connection_string(emulator.env(module)["EdgeHubConnectionString"])
    client_id = f"{cs['DeviceId']}/{module}"
    password = generate_sas(f"{cs['HostName']}/devices/{cs['DeviceId']}/modules/{module}", cs["SharedAccessKey"])

    def field(text: str) -> bytes:
        data = text.encode()
        return len(data).to_bytes(2, "big") + data

    body = (
        field("MQTT")
        + bytes([4, 0xC0])
        + keepalive.to_bytes(2, "big")
        + field(client_id)
        + field(f"{cs['HostName']}/{client_id}/?api-version=2019-10-01")
        + field(password)
    )
    return bytes([0x10]) + mqtt.encode_remaining_length(len(body)) + body


def read_all(sock: ssl.SSLSocket) -> bytes:
    """Everything until the server closes the connection (or the socket's timeout passes)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, socket.timeout, ConnectionError, ssl.SSLError):
        pass
    return data
