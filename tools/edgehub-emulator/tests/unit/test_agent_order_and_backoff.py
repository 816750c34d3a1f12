"""The local edgeAgent's start order and restart back-off, with real module processes (the fixture solution's
`steady` and `crashy` scripts) and the agent driven here, poll by poll:

- modules start in ascending `startupOrder` (a module without one last), whatever their names;
- a crashing module restarts after `unit * 2^n` seconds (n: the restarts so far, at most 300 s) and stays failed
  after MAX_RESTARTS restarts."""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from edgehub_emulator.agent import MAX_BACKOFF_SECS, MAX_RESTARTS, LocalEdgeAgent, ModuleProcess
from edgehub_emulator.config import EmulatorConfig
from edgehub_emulator.manifest import Manifest, ModuleSpec
from edgehub_emulator.store import Store, Twin

SOLUTION = Path(__file__).parents[1] / "fixtures" / "solution"
DEVICE = "edge-device"
STARTED = re.compile(r"^module (\S+) started \(pid (\d+)\)$")


def module(image: str, order: int | None = None, policy: str = "always", **env: str) -> dict[str, Any]:
    """A module of `$edgeAgent` desired properties running the fixture script `image`."""
    spec: dict[str, Any] = {
        "version": "1.0",
        "type": "docker",
        "status": "running",
        "restartPolicy": policy,
        "settings": {"image": f"${{MODULES.{image}}}"},
        "env": {name: {"value": value} for name, value in env.items()},
    }
    if order is not None:
        spec["startupOrder"] = order
    return spec


class RecordingAgent(LocalEdgeAgent):
    """The agent, recording when each start happened, when each exit was seen and the delay it scheduled."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.starts: list[float] = []
        self.restart_at: list[tuple[float, float]] = []  # (exit seen, delay scheduled)
        super().__init__(*args, **kwargs)

    def _start(self, module: ModuleProcess) -> None:  # pylint: disable=redefined-outer-name
        super()._start(module)
        self.starts.append(time.monotonic())

    def _exited(self, module: ModuleProcess, code: int, now: float) -> None:  # pylint: disable=redefined-outer-name
        before = module.restarts
        super()._exited(module, code, now)
        if module.restarts > before:
            self.restart_at.append((now, module.next_start - now))


@pytest.fixture
def make_agent(tmp_path: Path) -> Iterator[Any]:
    """A factory of agents for one device whose `$edgeAgent` twin desires `modules`; stopped afterwards."""
    agents: list[LocalEdgeAgent] = []
    store = Store(tmp_path / "state.sqlite3")

    def make(modules: dict[str, Any], backoff_unit: float = 10.0) -> RecordingAgent:
        store.put_twin(DEVICE, "$edgeAgent", Twin(desired={"modules": modules}, desired_version=2))
        manifest = Manifest(SOLUTION / "deployment.template.json", {}, [], {}, 7200)
        config = EmulatorConfig(state_dir=tmp_path / "state", device_id=DEVICE)
        agent = RecordingAgent(manifest, config, store, output=io.StringIO(), backoff_unit=backoff_unit)
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        agent.stop()
    store.close()


def test_modules_start_in_ascending_startup_order(make_agent: Any, caplog: pytest.LogCaptureFixture) -> None:
    agent = make_agent(
        {
            "alpha": module("steady", 30),
            "bravo": module("steady", 10),
            "charlie": module("steady", 20),
            "delta": module("steady"),  # none: IoT Edge's default is the largest, so it starts last
            "echo": module("steady", 0),
        }
    )
    with caplog.at_level(logging.INFO, logger="edgehub_emulator.agent"):
        agent.poll()
    started = [m[1] for m in (STARTED.match(r.getMessage()) for r in caplog.records) if m]
    assert started == ["echo", "bravo", "charlie", "alpha", "delta"]
    # the agent's own record says the same: start times in that order, and processes started in it
    times = [agent.modules[name].last_start for name in started]
    assert times == sorted(times)  # type: ignore[type-var]
    assert all(agent.modules[name].process is not None for name in started)
    assert agent.starts == sorted(agent.starts)


def test_a_crashing_module_backs_off_unit_times_two_to_the_n_then_fails(make_agent: Any) -> None:
    unit = 1e-6  # 20 restarts take about a second of back-off in all (the last one 0.52 s)
    agent = make_agent({"crashy": module("crashy", policy="on-failure", EXIT_CODE="3")}, backoff_unit=unit)
    crashy = agent.modules["crashy"]
    deadline = time.monotonic() + 120
    while not crashy.finished and time.monotonic() < deadline:
        agent.poll()
        time.sleep(0.002)
    assert crashy.finished, f"still restarting after 120 s: {crashy.restarts} restarts"
    delays = [delay for _seen, delay in agent.restart_at]
    # a delay is read back as next_start - now on the monotonic clock, whose float spacing grows with the
    # machine's uptime (about 1e-10 s after two weeks): an absolute tolerance far under the unit allows for that
    assert delays == pytest.approx([unit * 2**n for n in range(MAX_RESTARTS)], rel=1e-6, abs=1e-8)
    assert len(agent.starts) == MAX_RESTARTS + 1  # the first run and 20 restarts
    for n, (seen, delay) in enumerate(agent.restart_at):
        assert agent.starts[n + 1] - seen >= delay, f"restart {n + 1} came before its back-off"
    assert crashy.runtime_status == "failed" and crashy.restarts == MAX_RESTARTS
    assert crashy.exit_code == 3
    assert crashy.status_description == f"exited with 3 after {MAX_RESTARTS} restarts"
    for _ in range(5):  # failed: never started again
        agent.poll()
    assert len(agent.starts) == MAX_RESTARTS + 1 and crashy.process is None


@pytest.mark.parametrize(
    ("unit", "restarts", "ran", "delay"),
    [
        (10.0, 0, 1.0, 10.0),
        (10.0, 1, 1.0, 20.0),
        (10.0, 4, 1.0, 160.0),
        (10.0, 5, 1.0, MAX_BACKOFF_SECS),  # 320 s capped
        (10.0, 19, 1.0, MAX_BACKOFF_SECS),
        (0.5, 3, 1.0, 4.0),
        (10.0, 7, 600.0, 10.0),  # ran 10 minutes: healthy, the count starts again
    ],
)
def test_the_back_off_is_capped_at_300_seconds(
    make_agent: Any, unit: float, restarts: int, ran: float, delay: float
) -> None:
    agent = make_agent({}, backoff_unit=unit)
    with subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"], start_new_session=True) as crashed:
        crashed.wait(30)
    state = ModuleProcess(ModuleSpec("crashy", restart_policy="always"), SOLUTION / "modules" / "crashy" / "main.py")
    state.process, state.restarts, state.started_at = crashed, restarts, 1000.0 - ran  # type: ignore[assignment]
    agent._exited(state, 1, 1000.0)  # pylint: disable=protected-access
    assert state.next_start - 1000.0 == pytest.approx(delay)
    assert state.runtime_status == "backoff"
