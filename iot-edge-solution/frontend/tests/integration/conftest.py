"""The real edgeHub emulator (its console script, in a subprocess) and the stand-in device for the front-end's
integration tests. MQTT is always on port 8883 (fixed by the SDK): run these alone or in a private network
namespace (`unshare --net`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from edgehub_emulator.azurite import Azurite
from edgehub_emulator.process import EmulatorProcess

TESTS = Path(__file__).resolve().parents[1]
MANIFEST = TESTS / "fixtures" / "deployment.json"
STANDIN_DEVICE = TESTS / "standin_device.py"
MEDIA = TESTS.parents[1] / "media"


class StandIn:
    """The stand-in device process (tests/standin_device.py), connected as the authrequest module."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("w", encoding="utf-8") as out:
            self.process = subprocess.Popen(  # pylint: disable=consider-using-with
                [sys.executable, str(STANDIN_DEVICE)], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while "STANDIN_READY" not in self.output():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the stand-in device did not connect:\n{self.output()}")
            time.sleep(0.1)

    def output(self) -> str:
        """What it printed so far."""
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        """SIGTERM and wait."""
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    """One emulator per test module, its CA trusted by this process's requests (the service SDK)."""
    instance = EmulatorProcess(tmp_path_factory.mktemp("hub") / "state", MANIFEST).start()
    previous = os.environ.get("REQUESTS_CA_BUNDLE")
    os.environ["REQUESTS_CA_BUNDLE"] = instance.env("authrequest")["REQUESTS_CA_BUNDLE"]
    yield instance
    instance.stop()
    if previous is None:
        os.environ.pop("REQUESTS_CA_BUNDLE", None)
    else:
        os.environ["REQUESTS_CA_BUNDLE"] = previous


@pytest.fixture
def standin_device(hub: EmulatorProcess, azurite: Azurite, tmp_path: Path) -> Iterator[Callable[..., StandIn]]:
    """Starts the stand-in device: `standin_device(visible="coffee mug", delay=1, silent=False)`; stops it after
    the test."""
    started: list[StandIn] = []

    def start(visible: str = "coffee mug", delay: float = 1.0, silent: bool = False) -> StandIn:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("IOTEDGE_", "EdgeHub", "EdgeModule"))},
            **hub.env("authrequest"),
            "STORAGE_CONNECTION_STRING": azurite.connection_string,
            "STANDIN_VISIBLE_OBJECTS": visible,
            "STANDIN_DELAY_SECONDS": str(delay),
            "STANDIN_SILENT": "1" if silent else "0",
            "STANDIN_IMAGE": str(MEDIA / "coffee.png"),
        }
        device = StandIn(env, tmp_path / f"standin-{len(started)}.log")
        started.append(device)
        return device

    yield start
    for device in started:
        device.stop()
