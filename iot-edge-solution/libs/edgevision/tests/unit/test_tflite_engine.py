"""The LiteRT engine beyond the shared contract: quantised tensors, operators LiteRT lacks, corrupt files,
shapes that do not fit, the delegate fallback, threads, and a clear error when ai-edge-litert is missing.

The models are real `.tflite` files written with the schema LiteRT ships (`solution_testkit.tflite_models`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgevision.engines import EngineConfig, EngineError, EngineLoadError, create_engine

if not os.environ.get("CI"):
    pytest.importorskip("ai_edge_litert", reason="the tflite extra (ai-edge-litert) is not installed")

# pylint: disable=wrong-import-position
from solution_testkit import tflite_models  # noqa: E402


def engine_for(path: Path, **settings):
    """A tflite engine for `path` (not loaded)."""
    return create_engine("tflite", EngineConfig(model_path=path, **settings))


def test_quantised_input_and_outputs_are_converted_with_their_parameters(tmp_path: Path) -> None:
    """Floats fed to a uint8 input are quantised with its scale/zero point; uint8 outputs come back as floats."""
    model = tflite_models.quantised_model(tmp_path / "quantised.tflite")
    x = np.array([[-3.0, 0.0, 1.5, 20.0]], dtype=np.float32)
    with engine_for(model) as engine:
        real, requantised = engine.infer({"q": x})
        raw_real = engine.infer({"q": np.array([[122, 128, 131, 168]], dtype=np.uint8)})[0]
    # q = round(x / 0.5) + 128 -> dequantised exactly; requantised at scale 0.25 then read back as float
    np.testing.assert_allclose(real, x, atol=1e-6)
    np.testing.assert_allclose(requantised, x, atol=0.125)
    assert requantised.dtype == np.float32
    np.testing.assert_allclose(raw_real, x, atol=1e-6)  # uint8 fed as is


def test_an_operator_litert_lacks_is_a_load_error_naming_it(tmp_path: Path) -> None:
    """A model with an unknown custom operator fails to load, and the error names the operator."""
    model = tflite_models.unsupported_op_model(tmp_path / "custom.tflite", "EdgevisionNoSuchOp")
    with pytest.raises(EngineLoadError, match="cannot run.*EdgevisionNoSuchOp"):
        engine_for(model).load()


@pytest.mark.parametrize("damage", ["truncated", "not-a-flatbuffer", "empty"])
def test_corrupt_tflite_file_is_a_load_error(tmp_path: Path, damage: str) -> None:
    """A truncated model, another file format, or an empty file: EngineLoadError naming the file."""
    good = tflite_models.contract_model(tmp_path / "good.tflite", np.ones((4, 3), np.float32), np.zeros(3, np.float32))
    data = good.read_bytes()
    bad = tmp_path / f"{damage}.tflite"
    bad.write_bytes({"truncated": data[: len(data) // 2], "not-a-flatbuffer": b"PK\x03\x04" * 64, "empty": b""}[damage])
    with pytest.raises(EngineLoadError, match=f"{damage}.tflite"):
        engine_for(bad).load()


def test_manifest_shape_that_does_not_fit_is_a_load_error(tmp_path: Path) -> None:
    """model.json's input shape is checked against the model's at load time."""
    model = tflite_models.classifier_model(tmp_path / "cls.tflite", side=8)
    with pytest.raises(EngineLoadError, match=r"\[1, 16, 16, 3\].*\[1, 8, 8, 3\]"):
        engine_for(model, input_shapes={"image": (1, 16, 16, 3)}).load()
    with pytest.raises(EngineLoadError, match="no input 'input'"):
        engine_for(model, input_shapes={"input": (1, 8, 8, 3)}).load()


def test_input_of_the_wrong_shape_is_an_engine_error_and_the_engine_still_works(tmp_path: Path) -> None:
    """A fixed axis of another size is refused with the shapes in the message; the next good call works."""
    model = tflite_models.classifier_model(tmp_path / "cls.tflite", side=8)
    with engine_for(model) as engine:
        with pytest.raises(EngineError, match=r"\[1, 9, 8, 3\].*\[1, 8, 8, 3\]"):
            engine.infer({"image": np.zeros((1, 9, 8, 3), np.float32)})
        image = np.zeros((1, 8, 8, 3), np.float32)
        image[..., 1] = 1.0
        (probabilities,) = engine.infer({"image": image})
    assert int(np.argmax(probabilities)) == 1


def test_a_delegate_refusal_is_retried_without_the_default_delegate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When building with the default delegate fails, the engine loads with LiteRT's built-in kernels
    (BUILTIN_WITHOUT_DEFAULT_DELEGATES) and says so. The refusal is simulated (XNNPACK takes every operator a
    test model can hold); the second build is real."""
    from edgevision.engines import tflite_engine  # pylint: disable=import-outside-toplevel

    real = tflite_engine.TFLiteEngine._interpreter_for  # pylint: disable=protected-access
    calls: list[bool] = []

    def refuse_default(self, litert, default_delegates):
        calls.append(default_delegates)
        if default_delegates:
            raise RuntimeError("Failed to apply the default delegate")
        return real(self, litert, default_delegates)

    monkeypatch.setattr(tflite_engine.TFLiteEngine, "_interpreter_for", refuse_default)
    model = tflite_models.classifier_model(tmp_path / "cls.tflite")
    with engine_for(model) as engine:
        assert "built-in" in engine.describe()["delegate"]
        assert engine.infer({"image": np.zeros((1, 8, 8, 3), np.float32)})[0].shape == (1, 3)
    assert calls == [True, False]


def test_threads_come_from_the_engine_setting(tmp_path: Path) -> None:
    """intra_op_threads reaches the interpreter (the same setting ONNX Runtime takes); results do not change."""
    model = tflite_models.classifier_model(tmp_path / "cls.tflite")
    image = np.random.default_rng(3).random((1, 8, 8, 3), dtype=np.float32)
    outputs = []
    for threads in (0, 1, 2):
        with engine_for(model, intra_op_threads=threads) as engine:
            outputs.append(engine.infer({"image": image})[0])
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-6)
    np.testing.assert_allclose(outputs[2], outputs[0], rtol=1e-6)


def test_missing_ai_edge_litert_is_a_clear_error_naming_the_package() -> None:
    """Without the package (blocked in a fresh interpreter), selecting the backend names what to install."""
    code = (
        "import sys; sys.modules['ai_edge_litert'] = None\n"
        "from pathlib import Path\n"
        "from edgevision.engines import EngineConfig, EngineUnavailableError, create_engine\n"
        "try:\n"
        "    create_engine('tflite', EngineConfig(model_path=Path('m.tflite')))\n"
        "except EngineUnavailableError as e:\n"
        "    print('UNAVAILABLE', e)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert "UNAVAILABLE" in result.stdout
    assert "ai-edge-litert" in result.stdout and "edgevision[tflite]" in result.stdout
    assert "glibc" in result.stdout


def test_onnx_model_given_to_the_tflite_engine_is_a_load_error() -> None:
    """A file of another format says it is not a TensorFlow Lite model."""
    onnx_file = Path(__file__).resolve().parents[4] / "models" / "nanodet-m-416" / "1" / "model.onnx"
    with pytest.raises(EngineLoadError, match="not a TensorFlow Lite model"):
        engine_for(onnx_file).load()
