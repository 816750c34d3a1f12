"""Test helpers every test folder of the repository shares: real parts or a clear skip, free ports, polling."""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import pytest

from edgehub_emulator.process import free_port, port_free

__all__ = ["free_port", "in_ci", "load_script", "port_free", "require_part", "wait_for"]


def in_ci() -> bool:
    """True on CI (CI=true), where a missing real part fails instead of skipping."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_part(available: bool, reason: str) -> None:
    """Skip locally when a real part is missing, but fail in CI (CI=true), where every part must be there."""
    if available:
        return
    if in_ci():
        pytest.fail(f"required part missing in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def wait_for(
    condition: Callable[[], Any], timeout: float = 10.0, what: str = "the condition", interval: float = 0.05
) -> Any:
    """Poll `condition` every `interval` s until it returns something true, and return that; AssertionError naming
    `what` when `timeout` s pass first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def load_script(path: Path, name: str) -> ModuleType:
    """A script that is no package's module (tools/*.py, bench/*.py) loaded as module `name`, to test its
    functions."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, f"cannot load {path}"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
