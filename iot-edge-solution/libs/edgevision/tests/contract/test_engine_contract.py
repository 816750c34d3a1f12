"""The contract every engine backend passes: one suite, parametrized over every name in `BACKENDS`.

A backend that cannot run here (`check_available()` raises) is skipped with its reason; the `tensorrt` case
carries the `tensorrt` marker and runs for real wherever a GPU with TensorRT is lent. ONNX Runtime is a hard
dependency of the library, so its case never skips: if it were unavailable, that is a failure.

The model is built in the test with the `onnx` helper API: x (batch, 4) -> y = relu(x @ W + b) (batch, 3) and
a second output scaled = 2 * x (batch, 4), with a dynamic batch axis. Its values are exactly representable in
FP16 and TF32, so every backend can be held to tight tolerances. The `tflite` backend runs the same model
written as a `.tflite` file (FULLY_CONNECTED with a fused ReLU, MUL; batch axis dynamic) with the FlatBuffer
schema LiteRT ships (`solution_testkit.tflite_models`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgevision.engines import (
    BACKENDS,
    Engine,
    EngineConfig,
    EngineError,
    EngineLoadError,
    EngineUnavailableError,
    create_engine,
)

# Backends whose absence is a broken install, not a missing optional SDK.
REQUIRED_BACKENDS = {"onnxruntime"}
# Optional backends the dev environment installs (`make setup`): missing in CI (CI=true) is a failure, not a skip.
REQUIRED_IN_CI = {"tflite"}
BACKEND_MARKS = {"tensorrt": [pytest.mark.tensorrt]}
# Relative tolerance per backend: TensorRT may pick TF32/FP16 kernels; the model's values keep them exact,
# but a reduced-precision accumulation order is allowed a little room.
RTOL = {"tensorrt": 1e-3}

W = (np.arange(12, dtype=np.float32).reshape(4, 3) - 5.0) / 2.0
B = np.array([0.5, -1.0, 0.25], dtype=np.float32)
BATCH_RANGE = ((1, 4), (4, 4), (16, 4))


def build_contract_model(path: Path) -> Path:
    """Write the contract model (ONNX opset 13, IR 7, readable by TensorRT 8.5 and any ONNX Runtime)."""
    onnx = pytest.importorskip("onnx", reason="the contract model is built with onnx: pip install onnx")
    helper, float32 = onnx.helper, onnx.TensorProto.FLOAT
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["xwb"]),
        helper.make_node("Relu", ["xwb"], ["y"]),
        helper.make_node("Mul", ["x", "two"], ["scaled"]),
    ]
    graph = helper.make_graph(
        nodes,
        "engine-contract",
        inputs=[helper.make_tensor_value_info("x", float32, ["batch", 4])],
        outputs=[
            helper.make_tensor_value_info("y", float32, ["batch", 3]),
            helper.make_tensor_value_info("scaled", float32, ["batch", 4]),
        ],
        initializer=[
            onnx.numpy_helper.from_array(W, "W"),
            onnx.numpy_helper.from_array(B, "b"),
            onnx.numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edgevision-contract")
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def expected(x: np.ndarray) -> dict[str, np.ndarray]:
    """The model's outputs, computed with numpy."""
    return {"y": np.maximum(x @ W + B, 0.0), "scaled": 2.0 * x}


def batch(n: int) -> np.ndarray:
    """n rows of quarter steps in [-2, 2): exact in FP16, so no backend has an excuse."""
    return ((np.arange(n * 4, dtype=np.float32) % 16) - 8.0).reshape(n, 4) / 4.0


@pytest.fixture(name="contract_model", scope="module")
def contract_model_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The contract model, built once per module."""
    return build_contract_model(tmp_path_factory.mktemp("contract") / "model.onnx")


@pytest.fixture(name="contract_tflite", scope="module")
def contract_tflite_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The contract model as a TensorFlow Lite file (needs ai-edge-litert, the `tflite` extra)."""
    pytest.importorskip("ai_edge_litert", reason="the tflite backend needs ai-edge-litert")
    from solution_testkit import tflite_models  # pylint: disable=import-outside-toplevel

    return tflite_models.contract_model(tmp_path_factory.mktemp("contract") / "model.tflite", W, B)


@pytest.fixture(name="backend", params=[pytest.param(name, marks=BACKEND_MARKS.get(name, [])) for name in BACKENDS])
def backend_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each registered backend; skipped (with the reason) where it cannot run, unless it is required."""
    name: str = request.param
    try:
        create_engine(name, EngineConfig(model_path=tmp_path / "unused.onnx"))
    except EngineUnavailableError as e:
        if name in REQUIRED_BACKENDS or (name in REQUIRED_IN_CI and os.environ.get("CI")):
            pytest.fail(f"the {name} backend must run everywhere, but: {e}")
        pytest.skip(f"{name} cannot run here: {e}")
    return name


@pytest.fixture(name="make_engine")
def make_engine_fixture(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Engine]:
    """Build (not load) an engine of the current backend for the contract model, with overrides."""
    model = request.getfixturevalue("contract_tflite" if backend == "tflite" else "contract_model")

    def make(**overrides: Any) -> Engine:
        settings: dict[str, Any] = {
            "model_path": model,
            "input_shapes": {"x": (-1, 4)},
            "dynamic_shapes": {"x": BATCH_RANGE},
            "precision": "fp32",
            "intra_op_threads": 1,
            "cache_dir": tmp_path / "engine-cache",
        }
        settings.update(overrides)
        return create_engine(backend, EngineConfig(**settings))

    return make


def assert_outputs(backend: str, got: list[np.ndarray], names: list[str], x: np.ndarray) -> None:
    """Outputs match numpy, in the order of `names`, with the right shapes and dtype."""
    want = expected(x)
    assert len(got) == len(names)
    for name, array in zip(names, got):
        assert array.shape == want[name].shape, name
        assert array.dtype == np.float32, name
        np.testing.assert_allclose(array, want[name], rtol=RTOL.get(backend, 1e-6), atol=1e-6, err_msg=name)


def test_infer_matches_numpy(backend: str, make_engine: Callable[..., Engine]) -> None:
    """Loaded without output_names, the engine returns every output, in the model's order, correctly."""
    engine = make_engine()
    engine.load()
    try:
        assert engine.input_names == ["x"]
        assert engine.output_names == ["y", "scaled"]
        assert_outputs(backend, engine.infer({"x": batch(4)}), ["y", "scaled"], batch(4))
    finally:
        engine.close()


def test_describe_names_the_backend_that_runs(backend: str, make_engine: Callable[..., Engine]) -> None:
    """describe() says which backend runs the model (what a module reports), with its device once loaded."""
    engine = make_engine()
    assert engine.describe()["backend"] == backend
    with engine:
        facts = engine.describe()
    assert facts["backend"] == backend and facts["device"]


def test_infer_from_another_thread_than_load(backend: str, make_engine: Callable[..., Engine]) -> None:
    """Loaded on one thread, inferred on another, closed on a third: what a pipeline and a model swap do."""
    engine = make_engine()
    engine.load()
    results: dict[str, Any] = {}

    def infer() -> None:
        try:
            results["outputs"] = engine.infer({"x": batch(3)})
        except Exception as e:  # pylint: disable=broad-exception-caught  # reported below
            results["error"] = e

    worker = threading.Thread(target=infer)
    worker.start()
    worker.join(timeout=120)
    closer = threading.Thread(target=engine.close)
    closer.start()
    closer.join(timeout=120)
    assert "error" not in results, results.get("error")
    assert_outputs(backend, results["outputs"], ["y", "scaled"], batch(3))


@pytest.mark.parametrize("order", [("scaled", "y"), ("y",), ("scaled",)])
def test_outputs_follow_output_names(backend: str, make_engine: Callable[..., Engine], order: tuple[str, ...]) -> None:
    """The outputs come back in the order of `output_names`, and only those."""
    with make_engine(output_names=order) as engine:
        assert engine.output_names == list(order)
        assert_outputs(backend, engine.infer({"x": batch(2)}), list(order), batch(2))


def test_batch_size_can_change_between_calls(backend: str, make_engine: Callable[..., Engine]) -> None:
    """The dynamic batch axis works for sizes across the range, growing and shrinking."""
    with make_engine() as engine:
        for n in (1, 7, 16, 3, 1):
            assert_outputs(backend, engine.infer({"x": batch(n)}), ["y", "scaled"], batch(n))


def test_close_twice_is_fine(make_engine: Callable[..., Engine]) -> None:
    """close() after close() (and before any load) raises nothing."""
    engine = make_engine()
    engine.close()
    engine.load()
    engine.close()
    engine.close()


def test_infer_before_load_is_an_engine_error(make_engine: Callable[..., Engine]) -> None:
    """An engine that was never loaded refuses to infer with an EngineError."""
    with pytest.raises(EngineError, match="not loaded"):
        make_engine().infer({"x": batch(1)})


def test_infer_after_close_is_an_engine_error(make_engine: Callable[..., Engine]) -> None:
    """A closed engine refuses to infer with an EngineError, not a crash."""
    engine = make_engine()
    engine.load()
    engine.close()
    with pytest.raises(EngineError):
        engine.infer({"x": batch(1)})


def test_missing_model_file_is_a_load_error(make_engine: Callable[..., Engine], tmp_path: Path) -> None:
    """A model path that does not exist fails load() with EngineLoadError naming the path."""
    missing = tmp_path / "no-such-model.onnx"
    with pytest.raises(EngineLoadError, match="no-such-model.onnx"):
        make_engine(model_path=missing).load()


def test_corrupt_model_file_is_a_load_error(make_engine: Callable[..., Engine], tmp_path: Path) -> None:
    """Random bytes in place of a model fail load() with EngineLoadError."""
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    engine = make_engine(model_path=corrupt)
    with pytest.raises(EngineLoadError):
        engine.load()
    engine.close()


def test_unknown_output_name_is_a_load_error(make_engine: Callable[..., Engine]) -> None:
    """Asking for an output the model does not have fails load() with EngineLoadError naming it."""
    with pytest.raises(EngineLoadError, match="logits"):
        make_engine(output_names=("y", "logits")).load()


@pytest.mark.parametrize(
    "inputs",
    [{"images": batch(1)}, {}, {"x": batch(1), "extra": batch(1)}],
    ids=["wrong-name", "no-inputs", "extra-input"],
)
def test_wrong_inputs_are_engine_errors(
    backend: str, make_engine: Callable[..., Engine], inputs: dict[str, np.ndarray]
) -> None:
    """Inputs that do not match the model's names raise EngineError; the engine then still works."""
    with make_engine() as engine:
        with pytest.raises(EngineError):
            engine.infer(inputs)
        assert_outputs(backend, engine.infer({"x": batch(2)}), ["y", "scaled"], batch(2))


def test_with_block_loads_and_closes(backend: str, make_engine: Callable[..., Engine]) -> None:
    """`with engine:` loads on entry and closes on exit, also when the block raises."""
    engine = make_engine()
    with engine as entered:
        assert entered is engine
        assert_outputs(backend, engine.infer({"x": batch(1)}), ["y", "scaled"], batch(1))
    with pytest.raises(EngineError):
        engine.infer({"x": batch(1)})

    with pytest.raises(RuntimeError, match="inside the block"):
        with engine:
            raise RuntimeError("inside the block")
    with pytest.raises(EngineError):
        engine.infer({"x": batch(1)})


def test_load_again_replaces_the_model(backend: str, make_engine: Callable[..., Engine]) -> None:
    """A second load() on a loaded engine leaves a working engine (the hot-swap manager reloads)."""
    with make_engine() as engine:
        engine.load()
        assert_outputs(backend, engine.infer({"x": batch(3)}), ["y", "scaled"], batch(3))
