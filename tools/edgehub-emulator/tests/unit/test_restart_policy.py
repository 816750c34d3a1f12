"""Which exits the local edgeAgent restarts, per restartPolicy (IoT Edge's meanings; no health checks locally)."""

from __future__ import annotations

import pytest

from edgehub_emulator.agent import LocalEdgeAgent


@pytest.mark.parametrize(
    ("policy", "code", "restarts"),
    [
        ("always", 0, True),
        ("always", 1, True),
        ("on-failure", 0, False),
        ("on-failure", 3, True),
        ("on-unhealthy", 0, False),
        ("on-unhealthy", -9, True),  # a crash (killed) is unhealthy
        ("never", 0, False),
        ("never", 1, False),
    ],
)
def test_restart_policy(policy: str, code: int, restarts: bool) -> None:
    assert LocalEdgeAgent._should_restart(policy, code) is restarts  # pylint: disable=protected-access
