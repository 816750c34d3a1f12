"""Azurite, the local Azure Storage, as a child process: found in the repository's node_modules (installed by
`npm ci` from the pinned package-lock.json), started on chosen ports with a persistent folder, stopped cleanly."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

log = logging.getLogger(__name__)

# Azurite's well-known development account (documented by Microsoft for the storage emulators; not a secret).
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
DEFAULT_BLOB_PORT = 10000
DEFAULT_QUEUE_PORT = 10001
DEFAULT_TABLE_PORT = 10002


class AzuriteError(RuntimeError):
    """Azurite is not installed, or did not start."""


def find_azurite(start: Path | None = None) -> Path | None:
    """The azurite executable: $AZURITE_BIN, else node_modules/.bin/azurite in `start` or a folder above it
    (default: the current folder, then this file's), else `azurite` on PATH."""
    explicit = os.environ.get("AZURITE_BIN")
    if explicit:
        return Path(explicit) if Path(explicit).is_file() else None
    for base in [start or Path.cwd(), Path(__file__).resolve().parent]:
        for folder in [base.resolve(), *base.resolve().parents]:
            candidate = folder / "node_modules" / ".bin" / "azurite"
            if candidate.is_file():
                return candidate
    found = shutil.which("azurite")
    return Path(found) if found else None


def connection_string(
    blob_port: int = DEFAULT_BLOB_PORT, queue_port: int = DEFAULT_QUEUE_PORT, host: str = "127.0.0.1"
) -> str:
    """The explicit connection string of an Azurite on these ports (what UseDevelopmentStorage=true means for
    the default ports)."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://{host}:{blob_port}/{ACCOUNT_NAME};"
        f"QueueEndpoint=http://{host}:{queue_port}/{ACCOUNT_NAME};"
    )


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Azurite:
    """One Azurite process (blob, queue and table services) keeping its data in `location`."""

    def __init__(
        self,
        location: Path,
        blob_port: int = DEFAULT_BLOB_PORT,
        queue_port: int = DEFAULT_QUEUE_PORT,
        table_port: int = DEFAULT_TABLE_PORT,
        host: str = "127.0.0.1",
        executable: Path | None = None,
        log_file: Path | None = None,
    ) -> None:
        self.location = Path(location)
        self.blob_port = blob_port
        self.queue_port = queue_port
        self.table_port = table_port
        self.host = host
        self.executable = executable or find_azurite()
        self.log_file = log_file or self.location / "azurite.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        """The explicit connection string for this instance."""
        return connection_string(self.blob_port, self.queue_port, self.host)

    def start(self, timeout: float = 30.0) -> Azurite:
        """Start and wait until the blob and queue ports accept connections; returns self."""
        if self.executable is None:
            raise AzuriteError(
                "Azurite is not installed: run `make setup` (it runs `npm ci` in the repository root; Node.js >= 18 "
                "and npm are needed: on Debian/Ubuntu `sudo apt-get install nodejs npm`, elsewhere nodejs.org)"
            )
        for port in (self.blob_port, self.queue_port):
            if _listening(self.host, port):
                raise AzuriteError(f"port {port} on {self.host} is already in use (another Azurite?)")
        self.location.mkdir(parents=True, exist_ok=True)
        command = [
            str(self.executable),
            "--silent",
            "--skipApiVersionCheck",
            "--loose",
            "--location",
            str(self.location),
            "--blobHost",
            self.host,
            "--blobPort",
            str(self.blob_port),
            "--queueHost",
            self.host,
            "--queuePort",
            str(self.queue_port),
            "--tableHost",
            self.host,
            "--tablePort",
            str(self.table_port),
        ]
        with self.log_file.open("ab") as output:
            self.process = subprocess.Popen(  # pylint: disable=consider-using-with
                command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AzuriteError(f"Azurite exited with status {self.process.returncode}; see {self.log_file}")
            if _listening(self.host, self.blob_port) and _listening(self.host, self.queue_port):
                log.info(
                    "Azurite listening on blob %d, queue %d (data in %s)",
                    self.blob_port,
                    self.queue_port,
                    self.location,
                )
                return self
            time.sleep(0.1)
        self.stop()
        raise AzuriteError(f"Azurite did not listen within {timeout:.0f} s; see {self.log_file}")

    @property
    def running(self) -> bool:
        """True while the process lives."""
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL after `timeout`."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)
        except ProcessLookupError:
            pass

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
