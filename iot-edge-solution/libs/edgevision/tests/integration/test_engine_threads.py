"""ONNX Runtime sessions get the thread settings the module chose: the thread count and no spinning."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgevision.models import ModelRepository
from edgevision.vision import build_task


@pytest.mark.parametrize("threads, spinning", [(1, False), (2, False), (2, True)])
def test_session_has_the_requested_threads_and_spinning(models_dir: Path, threads: int, spinning: bool) -> None:
    model = ModelRepository(models_dir).load("efficientnet-lite0")
    task = build_task(model, "onnxruntime", threads, spinning=spinning)
    try:
        options = task.engine._require_session().get_session_options()  # pylint: disable=protected-access
        assert options.intra_op_num_threads == threads
        expected = "1" if spinning else "0"
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == expected
        assert options.get_session_config_entry("session.inter_op.allow_spinning") == expected
    finally:
        task.engine.close()


def test_spinning_is_off_by_default(models_dir: Path) -> None:
    """Idle engine threads sleep by default, so they leave the cores to capture and pre-processing."""
    task = build_task(ModelRepository(models_dir).load("efficientnet-lite0"), "onnxruntime", 2)
    try:
        options = task.engine._require_session().get_session_options()  # pylint: disable=protected-access
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    finally:
        task.engine.close()
