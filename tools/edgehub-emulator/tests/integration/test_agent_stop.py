"""Stopping `edgehub-emulator up`: SIGTERM or Ctrl-C stops every module (with SIGTERM) and the hub, exit 0."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

from .conftest import UpProcess, processes_in, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds orphans through /proc"),
]


def _to_up(sig: signal.Signals) -> Callable[[UpProcess], None]:
    def send(up: UpProcess) -> None:
        assert up.process is not None
        up.process.send_signal(sig)

    return send


def _ctrl_c(up: UpProcess) -> None:
    """What a terminal does on Ctrl-C: SIGINT to the whole foreground process group."""
    assert up.process is not None
    os.killpg(up.process.pid, signal.SIGINT)


@pytest.fixture
def agent_up(tmp_path: Path) -> Iterator[UpProcess]:
    """A started `up` of the fixture solution; leftovers are killed afterwards."""
    up = UpProcess(tmp_path)
    up.start()
    yield up
    up.kill_leftovers()


@pytest.mark.parametrize(
    "stop",
    [_to_up(signal.SIGTERM), _to_up(signal.SIGINT), _ctrl_c],
    ids=["SIGTERM", "SIGINT", "ctrl-c-to-the-process-group"],
)
def test_signal_stops_every_module_and_the_hub(agent_up: UpProcess, stop: Callable[[UpProcess], None]) -> None:
    echo_pid = int(agent_up.line("echo", "ready pid "))
    helper_pid = int(agent_up.line("echo", "helper pid "))
    assert {echo_pid, helper_pid} <= set(processes_in(agent_up.solution))
    stop(agent_up)
    assert agent_up.process is not None
    assert agent_up.process.wait(30) == 0, agent_up.stderr()
    # echo got SIGTERM (not a KeyboardInterrupt) and shut its client down; nothing ran past `up`
    assert "stopped on SIGTERM" in agent_up.lines("echo")
    assert "Traceback" not in agent_up.stdout()
    assert wait_for(lambda: not processes_in(agent_up.solution), 10)
    log = agent_up.stderr()
    assert f"stopping module echo (pid {echo_pid})" in log
    assert "ignored SIGTERM" not in log


def test_an_agent_started_after_a_kill_stops_the_modules_the_killed_one_left(agent_up: UpProcess) -> None:
    """SIGKILL of `up` cannot stop its modules: they run on without a hub. The next `up` on the same state stops
    them before it starts its own, so no module runs twice."""
    old_echo = int(agent_up.line("echo", "ready pid "))
    assert agent_up.process is not None
    agent_up.process.kill()
    agent_up.process.wait(10)
    assert old_echo in processes_in(agent_up.solution), "the killed agent's module runs on"
    agent_up.start()  # a service manager restarts it
    new_echo = int(agent_up.line("echo", "ready pid "))
    assert new_echo != old_echo
    assert wait_for(lambda: old_echo not in processes_in(agent_up.solution), 30)
    assert "was left running by an agent that did not stop; stopped it" in agent_up.stderr()
    assert new_echo in processes_in(agent_up.solution)
