"""Control flow of the TensorRT backend, run against a fake `tensorrt` and a fake `pycuda`.

STAND-IN, NOT THE REAL SDK: no NVIDIA GPU runs here (and no GPU machine is lent to this suite), so real
TensorRT and pycuda cannot be imported. These tests inject two small fake modules into `sys.modules` with
monkeypatch. The fakes imitate only the API surface the backend uses (TensorRT >= 8.6 name-based tensors,
pycuda's driver calls) over a toy "ONNX" format of their own. What they prove is the backend's logic: cache
hit/miss, corrupt cache, parser errors, FP16 and profile choices, buffer handling, shapes, errors, clean-up.
They prove nothing about real TensorRT numerics or GPU memory: the real backend runs in
`tests/contract/test_engine_contract.py` (marker `tensorrt`) wherever a GPU with TensorRT is lent.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import subprocess
import sys
import textwrap
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgevision.engines.base import EngineConfig, EngineError, EngineLoadError, EngineUnavailableError
from edgevision.engines.tensorrt_engine import TensorRTEngine, has_fast_fp16, optimization_profiles

FAKE_ONNX_MAGIC = b"FAKE-ONNX\n"
FAKE_PLAN_MAGIC = b"FAKE-PLAN\n"
TRT_LOGGER_NAME = "edgevision.engines.tensorrt_engine"
STREAM_HANDLE = 0xBEEF


# ----------------------------------------------------------------------------------------------------
# The fake SDK. A fake model has float32 inputs; its outputs are `doubled` = 2 * x and `total` = x.sum(-1).
# ----------------------------------------------------------------------------------------------------


class FakeGpu:  # pylint: disable=too-many-instance-attributes
    """State shared by the fake modules, for the tests to steer and inspect."""

    def __init__(self) -> None:
        self.trt_version = "10.3.0"
        self.has_explicit_batch_flag = False
        self.fast_fp16: bool | None = True  # None: the builder no longer has the query (TensorRT >= 10.5)
        self.device_count = 1
        self.compute_capability = (8, 7)
        self.builds = 0
        self.deserializations = 0
        self.network_flags: list[int] = []
        self.build_configs: list[Any] = []
        self.memory: dict[int, bytearray] = {}
        self.next_address = 0x1000
        self.host_allocations = 0
        self.context_stack = 0
        self.pushes = 0
        self.detached = 0
        self.install: Callable[[], None] = lambda: None  # set by the fixture: re-creates the fake modules


def make_fake_tensorrt(gpu: FakeGpu) -> types.ModuleType:  # pylint: disable=too-many-locals,too-many-statements
    """A module that answers like `tensorrt` for the calls the backend makes."""
    # The fake's classes and methods mirror TensorRT's names one to one; docstrings would only repeat them.
    # pylint: disable=missing-class-docstring,missing-function-docstring
    trt = types.ModuleType("tensorrt")
    trt.__version__ = gpu.trt_version

    class Severity(enum.Enum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    class ILogger:
        def __init__(self) -> None:
            pass

        def log(self, severity: Severity, msg: str) -> None:
            raise NotImplementedError

    ILogger.Severity = Severity  # type: ignore[attr-defined]

    class TensorIOMode(enum.Enum):
        INPUT = 1
        OUTPUT = 2

    class DataType(enum.Enum):
        FLOAT = 0

    class MemoryPoolType(enum.Enum):
        WORKSPACE = 0

    class BuilderFlag(enum.Enum):
        FP16 = 0

    members = {"EXPLICIT_BATCH": 0} if gpu.has_explicit_batch_flag else {"STRONGLY_TYPED": 1}
    NetworkDefinitionCreationFlag = enum.IntEnum(  # pylint: disable=invalid-name
        "NetworkDefinitionCreationFlag", members
    )

    class Tensor:
        def __init__(self, name: str, shape: tuple[int, ...]) -> None:
            self.name, self.shape = name, shape

    class Network:
        def __init__(self) -> None:
            self.inputs: list[Tensor] = []
            self.outputs: list[str] = []

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        @property
        def num_outputs(self) -> int:
            return len(self.outputs)

        def get_input(self, index: int) -> Tensor:
            return self.inputs[index]

    class ParserError:
        def __init__(self, text: str) -> None:
            self.text = text

        def __str__(self) -> str:
            return self.text

    class OnnxParser:
        def __init__(self, network: Network, logger: ILogger) -> None:
            self.network, self.logger, self.errors = network, logger, []

        def parse_from_file(self, path: str) -> bool:
            data = Path(path).read_bytes()
            if not data.startswith(FAKE_ONNX_MAGIC):
                self.errors.append(
                    ParserError("In node -1 (importModel): INVALID_GRAPH: failed to parse protobuf")
                )
                return False
            spec = json.loads(data[len(FAKE_ONNX_MAGIC) :])
            self.network.inputs = [Tensor(name, tuple(shape)) for name, shape in spec["inputs"].items()]
            self.network.outputs = list(spec["outputs"])
            return True

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, index: int) -> ParserError:
            return self.errors[index]

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

        def set_shape(self, name: str, low: Any, opt: Any, high: Any) -> None:
            self.shapes[name] = (tuple(low), tuple(opt), tuple(high))

    class BuilderConfig:
        def __init__(self) -> None:
            self.flags: set[BuilderFlag] = set()
            self.pool_limits: dict[MemoryPoolType, int] = {}
            self.profiles: list[Profile] = []

        def set_flag(self, flag: BuilderFlag) -> None:
            self.flags.add(flag)

        def set_memory_pool_limit(self, pool: MemoryPoolType, size: int) -> None:
            self.pool_limits[pool] = size

        def add_optimization_profile(self, profile: Profile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

    class Builder:
        def __init__(self, logger: ILogger) -> None:
            self.logger = logger
            if gpu.fast_fp16 is not None:
                self.platform_has_fast_fp16 = gpu.fast_fp16

        def create_network(self, flags: int) -> Network:
            gpu.network_flags.append(flags)
            return Network()

        def create_builder_config(self) -> BuilderConfig:
            return BuilderConfig()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: BuilderConfig) -> memoryview:
            gpu.builds += 1
            gpu.build_configs.append(config)
            self.logger.log(Severity.WARNING, "fake builder: weights of type INT64 were cast down")
            plan = {
                "inputs": {t.name: list(t.shape) for t in network.inputs},
                "outputs": network.outputs,
                "profiles": {n: s for p in config.profiles for n, s in p.shapes.items()},
            }
            return memoryview(FAKE_PLAN_MAGIC + json.dumps(plan).encode())  # IHostMemory is buffer-like

    class ExecutionContext:
        def __init__(self, engine: CudaEngine) -> None:
            self.engine = engine
            self.input_shapes: dict[str, tuple[int, ...]] = {}
            self.addresses: dict[str, int] = {}

        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
            declared = tuple(self.engine.plan["inputs"][name])
            low, _, high = self.engine.plan["profiles"].get(name, (declared, declared, declared))
            if len(shape) != len(declared) or not all(a <= s <= b for a, s, b in zip(low, shape, high)):
                return False
            self.input_shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            (x_name,) = self.engine.plan["inputs"]
            x_shape = self.input_shapes.get(x_name, tuple(self.engine.plan["inputs"][x_name]))
            if name == x_name:
                return x_shape
            return x_shape if name == "doubled" else x_shape[:-1]

        def set_tensor_address(self, name: str, address: int) -> None:
            self.addresses[name] = address

        def execute_async_v3(self, stream_handle: int) -> bool:
            assert gpu.context_stack > 0, "executed without a current CUDA context"
            assert stream_handle == STREAM_HANDLE
            (x_name,) = self.engine.plan["inputs"]
            shape = self.input_shapes[x_name]
            x = np.frombuffer(gpu.memory[self.addresses[x_name]], np.float32, math.prod(shape)).reshape(shape)
            results = {"doubled": 2 * x, "total": x.sum(axis=-1)}
            for name in self.engine.plan["outputs"]:
                data = results[name].astype(np.float32).tobytes()
                gpu.memory[self.addresses[name]][: len(data)] = data
            return True

    class CudaEngine:
        def __init__(self, plan: dict[str, Any]) -> None:
            self.plan = plan
            self.names = list(plan["inputs"]) + list(plan["outputs"])

        @property
        def num_io_tensors(self) -> int:
            return len(self.names)

        def get_tensor_name(self, index: int) -> str:
            return self.names[index]

        def get_tensor_mode(self, name: str) -> TensorIOMode:
            return TensorIOMode.INPUT if name in self.plan["inputs"] else TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name: str) -> DataType:  # pylint: disable=unused-argument
            return DataType.FLOAT

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return ExecutionContext(self).get_tensor_shape(name)

        def create_execution_context(self) -> ExecutionContext:
            return ExecutionContext(self)

    class Runtime:
        def __init__(self, logger: ILogger) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, data: bytes) -> CudaEngine | None:
            gpu.deserializations += 1
            if not bytes(data).startswith(FAKE_PLAN_MAGIC):
                self.logger.log(Severity.ERROR, "fake runtime: magic tag does not match")
                return None
            return CudaEngine(json.loads(bytes(data)[len(FAKE_PLAN_MAGIC) :]))

    def nptype(data_type: DataType) -> type:
        assert data_type is DataType.FLOAT
        return np.float32

    exported = (Severity, ILogger, TensorIOMode, DataType, MemoryPoolType, BuilderFlag, OnnxParser, Builder)
    for value in (*exported, Runtime, nptype):
        setattr(trt, value.__name__, value)
    trt.NetworkDefinitionCreationFlag = NetworkDefinitionCreationFlag
    return trt


def make_fake_pycuda(gpu: FakeGpu) -> tuple[types.ModuleType, types.ModuleType]:
    """`pycuda` and `pycuda.driver`, with device memory as bytearrays keyed by fake addresses."""
    # pylint: disable=missing-class-docstring,missing-function-docstring
    driver = types.ModuleType("pycuda.driver")

    class Stream:
        def __init__(self) -> None:
            self.handle = STREAM_HANDLE

        def synchronize(self) -> None:
            assert gpu.context_stack > 0

    class Error(Exception):
        pass

    class PrimaryContext:
        def push(self) -> None:
            gpu.context_stack += 1
            gpu.pushes += 1

        def pop(self) -> None:
            assert gpu.context_stack > 0, "popped a context that was not pushed"
            gpu.context_stack -= 1

        def detach(self) -> None:
            gpu.detached += 1

    class Device:
        def __init__(self, index: int) -> None:
            if index >= gpu.device_count:
                raise Error(f"cuDeviceGet failed: invalid device ordinal {index}")

        @staticmethod
        def count() -> int:
            return gpu.device_count

        def compute_capability(self) -> tuple[int, int]:
            return gpu.compute_capability

        def retain_primary_context(self) -> PrimaryContext:
            return PrimaryContext()

    class DeviceAllocation:
        def __init__(self, nbytes: int) -> None:
            self.address = gpu.next_address
            gpu.next_address += nbytes + 256
            gpu.memory[self.address] = bytearray(nbytes)

        def __int__(self) -> int:
            return self.address

        def free(self) -> None:
            del gpu.memory[self.address]

    def init() -> None:
        if gpu.device_count < 0:
            raise Error("cuInit failed: no CUDA-capable device is detected")

    def pagelocked_empty(shape: Any, dtype: Any) -> np.ndarray:
        gpu.host_allocations += 1
        return np.empty(shape, dtype)

    def mem_alloc(nbytes: int) -> DeviceAllocation:
        assert gpu.context_stack > 0, "allocated without a current CUDA context"
        return DeviceAllocation(nbytes)

    def memcpy_htod_async(dest: DeviceAllocation, src: np.ndarray, stream: Any) -> None:
        assert isinstance(stream, Stream)
        data = np.ascontiguousarray(src).tobytes()
        gpu.memory[int(dest)][: len(data)] = data

    def memcpy_dtoh_async(dest: np.ndarray, src: DeviceAllocation, stream: Any) -> None:
        assert isinstance(stream, Stream)
        dest[...] = np.frombuffer(gpu.memory[int(src)], dest.dtype, dest.size).reshape(dest.shape)

    exported = (
        Stream,
        Error,
        Device,
        init,
        pagelocked_empty,
        mem_alloc,
        memcpy_htod_async,
        memcpy_dtoh_async,
    )
    for value in exported:
        setattr(driver, value.__name__, value)
    package = types.ModuleType("pycuda")
    package.driver = driver  # type: ignore[attr-defined]
    return package, driver


@pytest.fixture(name="fake_gpu")
def fake_gpu_fixture(monkeypatch: pytest.MonkeyPatch) -> FakeGpu:
    """Install the fakes; tests may change the FakeGpu and call `install` again before loading."""
    gpu = FakeGpu()

    def install() -> None:
        """Re-create the fake modules from the current FakeGpu settings."""
        trt = make_fake_tensorrt(gpu)
        package, driver = make_fake_pycuda(gpu)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setitem(sys.modules, "pycuda", package)
        monkeypatch.setitem(sys.modules, "pycuda.driver", driver)

    gpu.install = install
    install()
    return gpu


def write_fake_model(
    path: Path, input_shape: list[int], outputs: tuple[str, ...] = ("doubled", "total")
) -> Path:
    """Write a model in the fakes' toy format: one input `x` and the named outputs."""
    spec = {"inputs": {"x": input_shape}, "outputs": list(outputs)}
    path.write_bytes(FAKE_ONNX_MAGIC + json.dumps(spec).encode())
    return path


@pytest.fixture(name="model")
def model_fixture(tmp_path: Path) -> Path:
    """A fake model with a dynamic batch axis: x is (-1, 4)."""
    return write_fake_model(tmp_path / "model.onnx", [-1, 4])


def config_for(model_path: Path, **overrides: Any) -> EngineConfig:
    """An FP32 config with its own cache dir and a batch range of 1..8 (opt 2), unless overridden."""
    settings: dict[str, Any] = {
        "model_path": model_path,
        "precision": "fp32",
        "cache_dir": model_path.parent / "cache",
        "dynamic_shapes": {"x": ((1, 4), (2, 4), (8, 4))},
    }
    settings.update(overrides)
    return EngineConfig(**settings)


def batch(n: int) -> np.ndarray:
    """n rows of 4 distinct float32 values, negative ones included."""
    return np.arange(n * 4, dtype=np.float32).reshape(n, 4) - 3.0


# ----------------------------------------------------------------------------------------------------
# Cache
# ----------------------------------------------------------------------------------------------------


def test_cache_miss_builds_and_writes_the_cache(fake_gpu: FakeGpu, model: Path) -> None:
    """First load: one build, and the plan lands in cache_dir as `<key>.engine`."""
    engine = TensorRTEngine(config_for(model))
    engine.load()
    assert fake_gpu.builds == 1
    cached = list((model.parent / "cache").iterdir())
    assert len(cached) == 1 and cached[0].suffix == ".engine"
    assert cached[0].read_bytes().startswith(FAKE_PLAN_MAGIC)
    engine.close()


def test_cache_hit_loads_without_building(fake_gpu: FakeGpu, model: Path) -> None:
    """Second load of the same model and config deserialises the cached plan."""
    with TensorRTEngine(config_for(model)):
        pass
    with TensorRTEngine(config_for(model)) as engine:
        np.testing.assert_array_equal(engine.infer({"x": batch(2)})[0], 2 * batch(2))
    assert fake_gpu.builds == 1
    assert fake_gpu.deserializations == 2


def test_changed_model_misses_the_cache(fake_gpu: FakeGpu, model: Path) -> None:
    """New ONNX bytes get a new key, a new build and a second cache file."""
    with TensorRTEngine(config_for(model)):
        pass
    write_fake_model(model, [-1, 4], outputs=("total", "doubled"))
    with TensorRTEngine(config_for(model)) as engine:
        assert engine.output_names == ["total", "doubled"]
    assert fake_gpu.builds == 2
    assert len(list((model.parent / "cache").iterdir())) == 2


def test_default_cache_dir_is_next_to_the_model(fake_gpu: FakeGpu, model: Path) -> None:
    """Without cache_dir, the plan goes to `model.onnx.trt-cache/`."""
    with TensorRTEngine(config_for(model, cache_dir=None)):
        pass
    assert fake_gpu.builds == 1
    assert len(list((model.parent / "model.onnx.trt-cache").glob("*.engine"))) == 1


def test_corrupt_cache_is_deleted_and_rebuilt_with_a_warning(
    fake_gpu: FakeGpu, model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A corrupt plan: warning, rebuild, and a good plan in its place."""
    with TensorRTEngine(config_for(model)):
        pass
    (cached,) = (model.parent / "cache").iterdir()
    cached.write_bytes(b"\x00\x01 truncated by a power cut")
    with caplog.at_level(logging.WARNING), TensorRTEngine(config_for(model)) as engine:
        np.testing.assert_array_equal(engine.infer({"x": batch(1)})[1], batch(1).sum(axis=-1))
    assert fake_gpu.builds == 2
    assert cached.read_bytes().startswith(FAKE_PLAN_MAGIC)
    assert any("deleting it and rebuilding" in r.getMessage() for r in caplog.records)
    # TensorRT's own complaint reached python logging too.
    assert any(r.name == TRT_LOGGER_NAME and "magic tag" in r.getMessage() for r in caplog.records)


# ----------------------------------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------------------------------


def test_parser_error_is_an_engine_load_error_with_the_parser_message(
    fake_gpu: FakeGpu, tmp_path: Path
) -> None:
    """The parser's own message reaches the EngineLoadError."""
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07 not a model")
    with pytest.raises(EngineLoadError, match="INVALID_GRAPH: failed to parse protobuf"):
        TensorRTEngine(config_for(bad, dynamic_shapes={})).load()
    assert fake_gpu.builds == 0
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())
    # The CUDA context was popped and released on the way out.
    assert fake_gpu.context_stack == 0 and fake_gpu.detached == 1


@pytest.mark.parametrize(
    ("precision", "fast_fp16", "compute_capability", "expect_fp16"),
    [
        ("fp16", True, (8, 7), True),
        ("fp16", False, (8, 7), False),
        ("fp32", True, (8, 7), False),
        ("fp16", None, (7, 2), True),  # TensorRT >= 10.5: no query, Xavier has fast FP16
        ("fp16", None, (6, 1), False),  # ... a Pascal desktop card has not
    ],
)
def test_fp16_only_when_asked_and_supported(
    fake_gpu: FakeGpu,
    model: Path,
    precision: str,
    fast_fp16: bool | None,
    compute_capability: tuple[int, int],
    expect_fp16: bool,
) -> None:
    """The FP16 builder flag is set only for fp16 on a GPU with fast FP16."""
    fake_gpu.fast_fp16 = fast_fp16
    fake_gpu.compute_capability = compute_capability
    fake_gpu.install()
    with TensorRTEngine(config_for(model, precision=precision)):
        pass
    flags = {flag.name for flag in fake_gpu.build_configs[0].flags}
    assert ("FP16" in flags) is expect_fp16


def test_fp16_without_hardware_support_warns(
    fake_gpu: FakeGpu, model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Asking for fp16 on a GPU without fast FP16 says so."""
    fake_gpu.fast_fp16 = False
    fake_gpu.install()
    with caplog.at_level(logging.WARNING), TensorRTEngine(config_for(model, precision="fp16")):
        pass
    assert any("no fast FP16" in r.getMessage() for r in caplog.records)


def test_precision_outside_the_supported_set_is_rejected(fake_gpu: FakeGpu, model: Path) -> None:
    """An unsupported precision fails before any build."""
    with pytest.raises(EngineLoadError, match="int8"):
        TensorRTEngine(config_for(model, precision="int8")).load()
    assert fake_gpu.builds == 0


def test_workspace_limit_is_set(fake_gpu: FakeGpu, model: Path) -> None:
    """The workspace pool limit is the engine's workspace_bytes."""
    with TensorRTEngine(config_for(model), workspace_bytes=256 << 20):
        pass
    limits = {pool.name: size for pool, size in fake_gpu.build_configs[0].pool_limits.items()}
    assert limits == {"WORKSPACE": 256 << 20}


@pytest.mark.parametrize(
    ("model_shape", "overrides", "expected_profile"),
    [
        ([-1, 4], {"dynamic_shapes": {"x": ((1, 4), (2, 4), (8, 4))}}, {"x": ((1, 4), (2, 4), (8, 4))}),
        ([-1, 4], {"dynamic_shapes": {}, "input_shapes": {"x": (-1, 4)}}, {"x": ((1, 4),) * 3}),
        ([-1, 4], {"dynamic_shapes": {}, "input_shapes": {"x": (3, 4)}}, {"x": ((3, 4),) * 3}),
        ([-1, -1], {"dynamic_shapes": {}}, {"x": ((1, 1),) * 3}),
        ([2, 4], {"dynamic_shapes": {}}, None),
    ],
    ids=[
        "from-dynamic_shapes",
        "minus-one-becomes-1",
        "concrete-input-shape",
        "from-model",
        "static-no-profile",
    ],
)
def test_optimisation_profile(
    fake_gpu: FakeGpu,
    tmp_path: Path,
    model_shape: list[int],
    overrides: dict[str, Any],
    expected_profile: dict[str, Any] | None,
) -> None:
    """The profile's min/opt/max come from dynamic_shapes, else a pinned shape with -1 -> 1."""
    model = write_fake_model(tmp_path / "model.onnx", model_shape)
    with TensorRTEngine(config_for(model, **overrides)):
        pass
    profiles = fake_gpu.build_configs[0].profiles
    if expected_profile is None:
        assert not profiles
    else:
        assert len(profiles) == 1 and profiles[0].shapes == expected_profile


@pytest.mark.parametrize(
    ("dynamic_shapes", "error"),
    [
        ({"x": ((1, 4), (2, 4))}, "must be \\(min, opt, max\\)"),
        ({"x": ((1, 4, 1), (2, 4, 1), (8, 4, 1))}, "rank 3"),
        ({"x": ((1, 3), (2, 3), (8, 3))}, "at axis 1"),
        ({"x": ((4, 4), (2, 4), (8, 4))}, "min <= opt <= max"),
        ({"x": ((0, 4), (2, 4), (8, 4))}, "at axis 0"),
        ({"images": ((1, 4), (2, 4), (8, 4))}, "does not have"),
    ],
    ids=["two-shapes", "wrong-rank", "static-axis-changed", "min-above-opt", "zero-dim", "unknown-input"],
)
def test_bad_dynamic_shapes_are_load_errors(dynamic_shapes: dict[str, Any], error: str) -> None:
    """Ranges that cannot fit the model are rejected with the reason."""
    with pytest.raises(EngineLoadError, match=error):
        optimization_profiles({"x": (-1, 4)}, {}, dynamic_shapes)


@pytest.mark.parametrize(("has_flag", "expected_flags"), [(True, 1), (False, 0)], ids=["trt-8.6", "trt-10"])
def test_explicit_batch_flag_only_where_it_exists(
    fake_gpu: FakeGpu, model: Path, has_flag: bool, expected_flags: int
) -> None:
    """TensorRT 8.6 gets EXPLICIT_BATCH; TensorRT 10 (no such flag) gets 0."""
    fake_gpu.has_explicit_batch_flag = has_flag
    fake_gpu.install()
    with TensorRTEngine(config_for(model)):
        pass
    assert fake_gpu.network_flags == [expected_flags]


def test_tensorrt_log_is_routed_to_python_logging(
    fake_gpu: FakeGpu, model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """TensorRT's messages and the build progress go to python logging."""
    with caplog.at_level(logging.INFO, logger=TRT_LOGGER_NAME), TensorRTEngine(config_for(model)):
        pass
    warning = [r for r in caplog.records if "fake builder" in r.getMessage()]
    assert len(warning) == 1 and warning[0].levelno == logging.WARNING and warning[0].name == TRT_LOGGER_NAME
    messages = " | ".join(r.getMessage() for r in caplog.records)
    assert "building a TensorRT engine" in messages
    assert "parsed model.onnx in" in messages
    assert "built the TensorRT engine for model.onnx in" in messages
    assert fake_gpu.builds == 1


def test_has_fast_fp16_prefers_tensorrts_answer() -> None:
    """TensorRT's answer wins; without it the architecture decides."""
    assert has_fast_fp16(types.SimpleNamespace(platform_has_fast_fp16=False), (8, 7)) is False
    assert has_fast_fp16(types.SimpleNamespace(), (5, 3)) is True  # Jetson Nano
    assert has_fast_fp16(types.SimpleNamespace(), (5, 2)) is False


# ----------------------------------------------------------------------------------------------------
# Inference
# ----------------------------------------------------------------------------------------------------


def test_infer_returns_outputs_in_output_names_order(fake_gpu: FakeGpu, model: Path) -> None:
    """Outputs come back in the configured order, with the right values."""
    with TensorRTEngine(config_for(model, output_names=("total", "doubled"))) as engine:
        assert engine.input_names == ["x"]
        assert engine.output_names == ["total", "doubled"]
        total, doubled = engine.infer({"x": batch(3)})
    np.testing.assert_array_equal(total, batch(3).sum(axis=-1))
    np.testing.assert_array_equal(doubled, 2 * batch(3))
    assert fake_gpu.context_stack == 0


def test_a_subset_of_outputs_still_binds_every_output(fake_gpu: FakeGpu, model: Path) -> None:
    """Asking for one output works although the engine has two."""
    with TensorRTEngine(config_for(model, output_names=("total",))) as engine:
        (total,) = engine.infer({"x": batch(2)})
    np.testing.assert_array_equal(total, batch(2).sum(axis=-1))
    assert fake_gpu.builds == 1


def test_unknown_output_name_is_a_load_error(fake_gpu: FakeGpu, model: Path) -> None:
    """A configured output the model lacks fails the load and releases the GPU."""
    with pytest.raises(EngineLoadError, match="no output"):
        TensorRTEngine(config_for(model, output_names=("scores",))).load()
    assert fake_gpu.context_stack == 0 and fake_gpu.detached == 1


def test_batch_size_changes_grow_buffers_only_when_needed(fake_gpu: FakeGpu, model: Path) -> None:
    """A larger batch re-allocates once; smaller ones reuse the buffers."""
    with TensorRTEngine(config_for(model)) as engine:
        engine.infer({"x": batch(2)})
        after_first = fake_gpu.host_allocations
        assert after_first == 3  # x, doubled, total
        for n in (8, 1, 5):
            doubled, total = engine.infer({"x": batch(n)})
            np.testing.assert_array_equal(doubled, 2 * batch(n))
            np.testing.assert_array_equal(total, batch(n).sum(axis=-1))
        assert fake_gpu.host_allocations == after_first + 3  # grew once for batch 8, then reused
        assert len(fake_gpu.memory) == 3  # the smaller device buffers were freed


def test_returned_arrays_are_not_overwritten_by_the_next_call(fake_gpu: FakeGpu, model: Path) -> None:
    """Results are copies, not views of the reused pinned buffers."""
    with TensorRTEngine(config_for(model)) as engine:
        first, _ = engine.infer({"x": batch(2)})
        engine.infer({"x": batch(2) + 100})
    np.testing.assert_array_equal(first, 2 * batch(2))
    assert fake_gpu.builds == 1


def test_non_contiguous_input_is_copied_correctly(fake_gpu: FakeGpu, model: Path) -> None:
    """A strided view is copied element by element, not byte by byte."""
    wide = np.arange(32, dtype=np.float32).reshape(4, 8)
    view = wide[:, ::2]  # (4, 4), not contiguous
    with TensorRTEngine(config_for(model)) as engine:
        doubled, _ = engine.infer({"x": view})
    np.testing.assert_array_equal(doubled, 2 * view)
    assert fake_gpu.builds == 1


@pytest.mark.parametrize(
    ("inputs", "error"),
    [
        ({"images": batch(1)}, "unknown \\['images'\\], missing \\['x'\\]"),
        ({"x": batch(1), "y": batch(1)}, "unknown \\['y'\\]"),
        ({"x": batch(9)}, "outside the engine's optimisation profile"),
        ({"x": batch(2).astype(np.float64)}, "float64"),
        ({"x": np.zeros((2, 4, 1), np.float32)}, "rank 2"),
    ],
    ids=["wrong-name", "extra-name", "outside-profile", "wrong-dtype", "wrong-rank"],
)
def test_bad_inputs_are_engine_errors(
    fake_gpu: FakeGpu, model: Path, inputs: dict[str, np.ndarray], error: str
) -> None:
    """Wrong names, shapes or dtypes are EngineErrors, and the engine keeps working."""
    with TensorRTEngine(config_for(model)) as engine:
        with pytest.raises(EngineError, match=error):
            engine.infer(inputs)
        assert fake_gpu.context_stack == 0
        # The engine still works afterwards.
        np.testing.assert_array_equal(engine.infer({"x": batch(2)})[0], 2 * batch(2))


def test_infer_before_load_is_an_engine_error(fake_gpu: FakeGpu, model: Path) -> None:
    """Using the engine before load() is an EngineError, without touching CUDA."""
    engine = TensorRTEngine(config_for(model))
    with pytest.raises(EngineError, match="not loaded"):
        engine.infer({"x": batch(1)})
    with pytest.raises(EngineError, match="not loaded"):
        _ = engine.output_names
    assert fake_gpu.pushes == 0


def test_missing_model_file_is_a_load_error(fake_gpu: FakeGpu, tmp_path: Path) -> None:
    """A missing model file fails before CUDA is touched."""
    with pytest.raises(EngineLoadError, match="not found"):
        TensorRTEngine(config_for(tmp_path / "absent.onnx")).load()
    assert fake_gpu.pushes == 0


def test_close_frees_everything_and_is_idempotent(fake_gpu: FakeGpu, model: Path) -> None:
    """close() frees device memory and the context; a second close() is a no-op."""
    engine = TensorRTEngine(config_for(model))
    engine.load()
    engine.infer({"x": batch(4)})
    assert fake_gpu.memory
    engine.close()
    engine.close()
    assert fake_gpu.memory == {}
    assert fake_gpu.detached == 1 and fake_gpu.context_stack == 0
    with pytest.raises(EngineError):
        engine.infer({"x": batch(1)})


def test_load_twice_releases_the_first_engine(fake_gpu: FakeGpu, model: Path) -> None:
    """Loading again releases the first engine's buffers and context first."""
    engine = TensorRTEngine(config_for(model))
    engine.load()
    engine.infer({"x": batch(2)})
    engine.load()
    assert fake_gpu.detached == 1 and fake_gpu.memory == {}
    np.testing.assert_array_equal(engine.infer({"x": batch(1)})[0], 2 * batch(1))
    engine.close()


# ----------------------------------------------------------------------------------------------------
# Availability and imports
# ----------------------------------------------------------------------------------------------------


def test_check_available_with_the_sdk_and_a_device(fake_gpu: FakeGpu) -> None:
    """With TensorRT, pycuda and a device, the backend is available."""
    TensorRTEngine.check_available()
    assert fake_gpu.device_count == 1


@pytest.mark.parametrize(
    ("device_count", "error"),
    [(0, "no CUDA device is present"), (-1, "cannot initialise")],
    ids=["no-device", "driver-fails"],
)
def test_check_available_without_a_device(fake_gpu: FakeGpu, device_count: int, error: str) -> None:
    """No device, or a driver that cannot start: unavailable, saying which."""
    fake_gpu.device_count = device_count
    with pytest.raises(EngineUnavailableError, match=error):
        TensorRTEngine.check_available()


def test_check_available_without_tensorrt_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """The message names what to install and the CUDA device state."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` fail, as on a CPU machine
    with pytest.raises(EngineUnavailableError) as raised:
        TensorRTEngine.check_available()
    message = str(raised.value)
    assert "pip install tensorrt pycuda" in message
    assert "JetPack" in message and "nvcr.io/nvidia/tensorrt" in message
    assert "CUDA" in message and "device" in message


def test_check_available_without_pycuda(fake_gpu: FakeGpu, monkeypatch: pytest.MonkeyPatch) -> None:
    """TensorRT without pycuda: unavailable, naming pycuda."""
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    with pytest.raises(EngineUnavailableError, match="pip install pycuda"):
        TensorRTEngine.check_available()
    assert fake_gpu.builds == 0


def test_tensorrt_older_than_8_6_is_unavailable(fake_gpu: FakeGpu) -> None:
    """TensorRT before the name-based tensor API is refused with its version."""
    fake_gpu.trt_version = "8.5.3.1"
    fake_gpu.install()
    with pytest.raises(EngineUnavailableError, match="found 8.5.3.1"):
        TensorRTEngine.check_available()


def test_load_without_the_sdk_is_unavailable_not_a_crash(
    monkeypatch: pytest.MonkeyPatch, model: Path
) -> None:
    """load() on a CPU machine raises EngineUnavailableError."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(EngineUnavailableError, match="TensorRT"):
        TensorRTEngine(config_for(model)).load()


def test_importing_the_library_never_imports_tensorrt_or_pycuda() -> None:
    """Importing the engines package imports neither SDK."""
    # A fresh interpreter where importing either SDK fails loudly, even on a machine that has them.
    script = textwrap.dedent(
        """
        import sys

        class Forbid:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("tensorrt", "pycuda"):
                    raise AssertionError("imported " + name)
                return None

        sys.meta_path.insert(0, Forbid())
        import edgevision.engines
        import edgevision.engines.registry
        import edgevision.engines.selection
        import edgevision.engines.tensorrt_engine
        import edgevision.engines.trt_cache
        from edgevision.engines.registry import BACKENDS
        print("ok", sorted(BACKENDS))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "ok" in done.stdout and "tensorrt" in done.stdout
