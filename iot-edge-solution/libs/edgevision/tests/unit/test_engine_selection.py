"""Backend selection from USE_TENSOR_RT / TENSORRT_FALLBACK, and the registry's answer to unknown names."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edgevision.engines import BACKENDS, EngineConfig, EngineError, EngineUnavailableError, create_engine
from edgevision.engines.registry import available_backends
from edgevision.engines.selection import check_backend, choose_backend
from edgevision.engines.tensorrt_engine import TensorRTEngine


def tensorrt_runs_here() -> bool:
    """Whether the real TensorRT backend can run on this machine (it cannot without a GPU)."""
    try:
        TensorRTEngine.check_available()
    except EngineUnavailableError:
        return False
    return True


@pytest.fixture(name="tensorrt_unavailable")
def tensorrt_unavailable_fixture(monkeypatch: pytest.MonkeyPatch) -> str:
    """Make TensorRT unavailable whatever the machine; returns the reason it gives."""
    reason = "the tensorrt backend needs an NVIDIA GPU, and no CUDA device is present."

    def unavailable() -> None:
        raise EngineUnavailableError(reason)

    monkeypatch.setattr(TensorRTEngine, "check_available", staticmethod(unavailable))
    return reason


@pytest.fixture(name="tensorrt_available")
def tensorrt_available_fixture(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make TensorRT available whatever the machine (selection only checks; it loads nothing)."""
    monkeypatch.setattr(TensorRTEngine, "check_available", staticmethod(lambda: None))


@pytest.mark.usefixtures("tensorrt_available")
@pytest.mark.parametrize("fallback", [False, True])
def test_use_tensor_rt_false_selects_onnxruntime(fallback: bool) -> None:
    """USE_TENSOR_RT=False means ONNX Runtime even where TensorRT could run."""
    assert choose_backend(use_tensor_rt=False, fallback_to_onnxruntime=fallback) == "onnxruntime"


@pytest.mark.usefixtures("tensorrt_available")
@pytest.mark.parametrize("fallback", [False, True])
def test_use_tensor_rt_true_selects_tensorrt_where_it_runs(fallback: bool) -> None:
    """USE_TENSOR_RT=True selects TensorRT when it can run, fallback or not."""
    assert choose_backend(use_tensor_rt=True, fallback_to_onnxruntime=fallback) == "tensorrt"


def test_unavailable_tensorrt_without_fallback_is_an_error(tensorrt_unavailable: str) -> None:
    """The error gives the reason and says how to enable the fallback."""
    with pytest.raises(EngineUnavailableError) as raised:
        choose_backend(use_tensor_rt=True, fallback_to_onnxruntime=False)
    message = str(raised.value)
    assert tensorrt_unavailable in message
    assert "TENSORRT_FALLBACK=True" in message
    assert "USE_TENSOR_RT=False" in message


def test_unavailable_tensorrt_with_fallback_warns_and_selects_onnxruntime(
    tensorrt_unavailable: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With the fallback configured, a warning carries the reason and ONNX Runtime is selected."""
    with caplog.at_level(logging.WARNING, logger="edgevision.engines.selection"):
        assert choose_backend(use_tensor_rt=True, fallback_to_onnxruntime=True) == "onnxruntime"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert tensorrt_unavailable in warnings[0] and "falling back to ONNX Runtime" in warnings[0]


def test_selection_on_this_machine_without_any_stand_in(caplog: pytest.LogCaptureFixture) -> None:
    """The real check: without a GPU it is the error / the fallback; where a GPU is lent, TensorRT."""
    if tensorrt_runs_here():
        assert choose_backend(use_tensor_rt=True, fallback_to_onnxruntime=False) == "tensorrt"
        return
    with pytest.raises(EngineUnavailableError, match="TENSORRT_FALLBACK=True") as raised:
        choose_backend(use_tensor_rt=True, fallback_to_onnxruntime=False)
    assert "pip install tensorrt pycuda" in str(raised.value) or "GPU" in str(raised.value)
    with caplog.at_level(logging.WARNING, logger="edgevision.engines.selection"):
        assert choose_backend(use_tensor_rt=True, fallback_to_onnxruntime=True) == "onnxruntime"
    assert any("TENSORRT_FALLBACK=True" in r.getMessage() for r in caplog.records)


def test_onnxruntime_is_always_available() -> None:
    """ONNX Runtime is a hard dependency, so it is always among the available backends."""
    check_backend("onnxruntime")
    assert "onnxruntime" in available_backends()
    assert ("tensorrt" in available_backends()) is tensorrt_runs_here()


@pytest.mark.parametrize("call", ["create_engine", "check_backend"])
def test_unknown_backend_name_lists_the_known_ones(call: str, tmp_path: Path) -> None:
    """A misspelt backend is an EngineError naming every registered backend."""
    with pytest.raises(EngineError) as raised:
        if call == "create_engine":
            create_engine("tensor-rt", EngineConfig(model_path=tmp_path / "model.onnx"))
        else:
            check_backend("tensor-rt")
    message = str(raised.value)
    assert "'tensor-rt'" in message
    assert all(name in message for name in BACKENDS)
    assert not isinstance(raised.value, EngineUnavailableError)


def test_registry_keeps_both_backends() -> None:
    """Both backends stay registered under their names, as "module:class"."""
    assert BACKENDS["onnxruntime"] == "edgevision.engines.onnxruntime_engine:OnnxRuntimeEngine"
    assert BACKENDS["tensorrt"] == "edgevision.engines.tensorrt_engine:TensorRTEngine"
