# The fake SDK lives beside the tests that steer it, which makes this file long.
# pylint: disable=too-many-lines
"""Control flow of the TensorRT backend, run against a fake `tensorrt` and a fake `pycuda`.

STAND-IN, NOT THE REAL SDK: no NVIDIA GPU runs here (and no GPU machine is lent to this suite), so real
TensorRT and pycuda cannot be imported. These tests inject two small fake modules into `sys.modules` with
monkeypatch. The fakes imitate only the API surface the backend uses, over a toy "ONNX" format of their own,
and they imitate it release by release: every test runs against the API of TensorRT 8.5 (JetPack 5.1), 8.6
(JetPack 6.0), 10.0 (the NGC 24.05 image), 10.16 and 11.0, with the names each of them has and lacks
(`EXPLICIT_BATCH` up to 10, `BuilderFlag.FP16` and `platform_has_fast_fp16` up to 10.x). The fake pycuda keeps
one context stack per thread, as pycuda does, and refuses CUDA work on a thread where no context is current.
What they prove is the backend's logic: cache hit/miss, corrupt cache, parser errors, FP16 and profile choices,
buffer handling, shapes, errors, contexts across threads, clean-up. They prove nothing about real TensorRT
numerics or GPU memory: the real backend runs in `tests/contract/test_engine_contract.py` (marker
`tensorrt`) wherever a GPU with TensorRT is lent.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import subprocess
import sys
import textwrap
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgevision.engines import tensorrt_engine
from edgevision.engines.base import EngineConfig, EngineError, EngineLoadError, EngineUnavailableError
from edgevision.engines.tensorrt_engine import TensorRTEngine, has_fast_fp16, optimization_profiles

FAKE_ONNX_MAGIC = b"FAKE-ONNX\n"
FAKE_PLAN_MAGIC = b"FAKE-PLAN\n"
TRT_LOGGER_NAME = "edgevision.engines.tensorrt_engine"
STREAM_HANDLE = 0xBEEF


@dataclass(frozen=True)
class Release:
    """What one TensorRT release's Python API has, as far as the backend cares."""

    version: str
    explicit_batch_flag: bool  # NetworkDefinitionCreationFlag.EXPLICIT_BATCH exists
    explicit_batch_needed: bool  # networks are implicit-batch without it (8.x); 10 ignores it
    strongly_typed_flag: bool  # NetworkDefinitionCreationFlag.STRONGLY_TYPED exists (10+)
    weak_typing: bool  # BuilderFlag.FP16 and Builder.platform_has_fast_fp16 exist (up to 10.x)


RELEASES = {
    "8.5": Release("8.5.2.2", True, True, False, True),  # JetPack 5.1
    "8.6": Release("8.6.2.3", True, True, False, True),  # JetPack 6.0
    "10.0": Release("10.0.1.6", True, False, True, True),  # NGC 24.05, the GPU dev container and image
    "10.16": Release("10.16.0.72", True, False, True, True),
    "11.0": Release("11.0.0.114", False, False, True, False),
}


# ----------------------------------------------------------------------------------------------------
# The fake SDK. A fake model has float32 inputs; its outputs are `doubled` = 2 * x and `total` = x.sum(-1).
# ----------------------------------------------------------------------------------------------------


class FakeGpu:  # pylint: disable=too-many-instance-attributes
    """State shared by the fake modules, for the tests to steer and inspect."""

    def __init__(self, release: Release) -> None:
        self.release = release
        self.fast_fp16 = True  # what platform_has_fast_fp16 answers, where it exists
        self.device_count = 1
        self.device_name = "Orin (nvgpu)"
        self.total_memory = 7_620_968_448
        self.compute_capability = (8, 7)
        self.builds = 0
        self.deserializations = 0
        self.network_flags: list[int] = []
        self.build_configs: list[Any] = []
        self.memory: dict[int, bytearray] = {}
        self.next_address = 0x1000
        self.host_allocations = 0
        self.retains = 0
        self.pushes = 0
        self.detached = 0
        self.fail_push = False
        self.cleanup_errors: list[str] = []
        self.threads_used: set[int] = set()
        self._stacks = threading.local()
        self.install: Callable[[], None] = lambda: None  # set by the fixture: re-creates the fake modules

    def stack(self) -> list[Any]:
        """The calling thread's context stack (pycuda keeps one per thread)."""
        if not hasattr(self._stacks, "contexts"):
            self._stacks.contexts = []
        return self._stacks.contexts

    def current(self) -> Any:
        """The context current on the calling thread, or None."""
        stack = self.stack()
        return stack[-1] if stack else None

    @property
    def context_stack(self) -> int:
        """Depth of the calling thread's context stack."""
        return len(self.stack())


def make_fake_tensorrt(gpu: FakeGpu) -> types.ModuleType:  # pylint: disable=too-many-locals,too-many-statements
    """A module that answers like `tensorrt` of `gpu.release` for the calls the backend makes."""
    # The fake's classes and methods mirror TensorRT's names one to one; docstrings would only repeat them.
    # pylint: disable=missing-class-docstring,missing-function-docstring
    release = gpu.release
    trt = types.ModuleType("tensorrt")
    trt.__version__ = release.version

    def require_context(what: str) -> None:
        if gpu.current() is None:
            raise RuntimeError(f"fake TensorRT: {what} without a current CUDA context (Cuda Runtime (invalid context))")

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
        HALF = 1

    class MemoryPoolType(enum.Enum):
        WORKSPACE = 0

    BuilderFlag = enum.Enum(  # pylint: disable=invalid-name
        "BuilderFlag", {"FP16": 0, "REFIT": 5} if release.weak_typing else {"REFIT": 5}
    )
    members = {"EXPLICIT_BATCH": 0} if release.explicit_batch_flag else {}
    members.update({"STRONGLY_TYPED": 5} if release.strongly_typed_flag else {"EXPLICIT_PRECISION": 1})
    NetworkDefinitionCreationFlag = enum.IntEnum(  # pylint: disable=invalid-name
        "NetworkDefinitionCreationFlag", members
    )

    class Tensor:
        def __init__(self, name: str, shape: tuple[int, ...], dtype: DataType = DataType.FLOAT) -> None:
            self.name, self.shape, self.dtype = name, shape, dtype

    class Layer:
        def __init__(self, dtype: DataType) -> None:
            self.outputs = [Tensor("out", (), dtype)]

        @property
        def num_outputs(self) -> int:
            return len(self.outputs)

        def get_output(self, index: int) -> Tensor:
            return self.outputs[index]

    class Network:
        def __init__(self, flags: int) -> None:
            self.explicit_batch = not release.explicit_batch_needed or bool(flags & 1)
            self.inputs: list[Tensor] = []
            self.outputs: list[str] = []
            self.layers: list[Layer] = []

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        @property
        def num_layers(self) -> int:
            return len(self.layers)

        def get_input(self, index: int) -> Tensor:
            return self.inputs[index]

        def get_layer(self, index: int) -> Layer:
            return self.layers[index]

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
                self.errors.append(ParserError("In node -1 (importModel): INVALID_GRAPH: failed to parse protobuf"))
                return False
            if not self.network.explicit_batch:  # what TensorRT 8's parser says of an implicit-batch network
                self.errors.append(ParserError("Network must have explicit batch dimensions"))
                return False
            spec = json.loads(data[len(FAKE_ONNX_MAGIC) :])
            self.network.inputs = [Tensor(name, tuple(shape)) for name, shape in spec["inputs"].items()]
            self.network.outputs = list(spec["outputs"])
            self.network.layers = [Layer(DataType.HALF if spec.get("half") else DataType.FLOAT)]
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
            self.flags: set[Any] = set()
            self.pool_limits: dict[MemoryPoolType, int] = {}
            self.profiles: list[Profile] = []

        def set_flag(self, flag: Any) -> None:
            assert flag in list(BuilderFlag), f"not a BuilderFlag: {flag!r}"
            self.flags.add(flag)

        def set_memory_pool_limit(self, pool: MemoryPoolType, size: int) -> None:
            self.pool_limits[pool] = size

        def add_optimization_profile(self, profile: Profile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

    class Builder:
        def __init__(self, logger: ILogger) -> None:
            require_context("Builder()")
            self.logger = logger
            if release.weak_typing:
                self.platform_has_fast_fp16 = gpu.fast_fp16

        def create_network(self, flags: int = 0) -> Network:
            known = sum(1 << int(member) for member in NetworkDefinitionCreationFlag)
            if flags & ~known:
                raise TypeError(f"fake TensorRT {release.version}: unknown network creation flags {flags:#x}")
            gpu.network_flags.append(flags)
            return Network(flags)

        def create_builder_config(self) -> BuilderConfig:
            return BuilderConfig()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: BuilderConfig) -> memoryview:
            require_context("build_serialized_network")
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
            require_context("execute_async_v3")
            gpu.threads_used.add(threading.get_ident())
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
            require_context("create_execution_context")
            return ExecutionContext(self)

    class Runtime:
        def __init__(self, logger: ILogger) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, data: bytes) -> CudaEngine | None:
            require_context("deserialize_cuda_engine")
            gpu.deserializations += 1
            if not bytes(data).startswith(FAKE_PLAN_MAGIC):
                self.logger.log(Severity.ERROR, "fake runtime: magic tag does not match")
                return None
            return CudaEngine(json.loads(bytes(data)[len(FAKE_PLAN_MAGIC) :]))

    def nptype(data_type: DataType) -> type:
        return {DataType.FLOAT: np.float32, DataType.HALF: np.float16}[data_type]

    exported = (Severity, ILogger, TensorIOMode, DataType, MemoryPoolType, OnnxParser, Builder)
    for value in (*exported, Runtime, nptype):
        setattr(trt, value.__name__, value)
    trt.BuilderFlag = BuilderFlag
    trt.NetworkDefinitionCreationFlag = NetworkDefinitionCreationFlag
    return trt


def make_fake_pycuda(  # pylint: disable=too-many-statements,too-many-locals
    gpu: FakeGpu,
) -> tuple[types.ModuleType, types.ModuleType]:
    """`pycuda` and `pycuda.driver`, with device memory as bytearrays keyed by fake addresses.

    As in pycuda: each thread has its own context stack; `pop` takes the calling thread's top context; CUDA
    calls need a current context on the calling thread; memory and streams are freed in their own context,
    which pycuda makes current by itself only on the thread that created the context (elsewhere it raises);
    `detach` of a context that is not current pushes it and, for a primary context, leaves it there.
    """
    # pylint: disable=missing-class-docstring,missing-function-docstring
    driver = types.ModuleType("pycuda.driver")

    class Error(Exception):
        pass

    class LogicError(Error):
        pass

    def require_context(what: str) -> Any:
        context = gpu.current()
        if context is None:
            raise LogicError(f"{what} failed: invalid device context")
        return context

    def activate_for_cleanup(context: Any, what: str) -> None:
        if gpu.current() is not context and threading.get_ident() != context.thread:
            gpu.cleanup_errors.append(what)
            raise LogicError(f"{what}: cannot activate out-of-thread context")

    class PrimaryContext:
        def __init__(self) -> None:
            self.thread = threading.get_ident()

        def push(self) -> None:
            if gpu.fail_push:
                raise LogicError("cuCtxPushCurrent failed: context is destroyed")
            gpu.stack().append(self)
            gpu.pushes += 1

        @staticmethod
        def pop() -> None:
            stack = gpu.stack()
            if not stack:
                raise LogicError("context::pop failed: cannot pop non-current context")
            stack.pop()

        def detach(self) -> None:
            gpu.detached += 1
            if gpu.current() is not self and threading.get_ident() == self.thread:
                gpu.stack().append(self)  # pycuda pushes to release; a primary context's release pops nothing

    class Stream:
        def __init__(self) -> None:
            self.context = require_context("cuStreamCreate")
            self.handle = STREAM_HANDLE

        def synchronize(self) -> None:
            require_context("cuStreamSynchronize")

        def __del__(self) -> None:
            # pycuda only warns here (a destructor cannot raise); the tests look at cleanup_errors.
            if gpu.current() is not self.context and threading.get_ident() != self.context.thread:
                gpu.cleanup_errors.append("cuStreamDestroy")

    class Device:
        def __init__(self, index: int) -> None:
            if index >= gpu.device_count:
                raise LogicError(f"cuDeviceGet failed: invalid device ordinal {index}")

        @staticmethod
        def count() -> int:
            return gpu.device_count

        def compute_capability(self) -> tuple[int, int]:
            return gpu.compute_capability

        def name(self) -> str:
            return gpu.device_name

        def total_memory(self) -> int:
            return gpu.total_memory

        def retain_primary_context(self) -> PrimaryContext:
            gpu.retains += 1
            return PrimaryContext()

    class DeviceAllocation:
        def __init__(self, nbytes: int) -> None:
            self.context = require_context("cuMemAlloc")
            self.address = gpu.next_address
            gpu.next_address += nbytes + 256
            gpu.memory[self.address] = bytearray(nbytes)

        def __int__(self) -> int:
            return self.address

        def free(self) -> None:
            activate_for_cleanup(self.context, "cuMemFree")
            del gpu.memory[self.address]

    def init() -> None:
        if gpu.device_count < 0:
            raise LogicError("cuInit failed: no CUDA-capable device is detected")

    def pagelocked_empty(shape: Any, dtype: Any) -> np.ndarray:
        require_context("cuMemHostAlloc")
        gpu.host_allocations += 1
        return np.empty(shape, dtype)

    def mem_alloc(nbytes: int) -> DeviceAllocation:
        return DeviceAllocation(nbytes)

    def memcpy_htod_async(dest: DeviceAllocation, src: np.ndarray, stream: Any) -> None:
        require_context("cuMemcpyHtoDAsync")
        assert isinstance(stream, Stream)
        data = np.ascontiguousarray(src).tobytes()
        gpu.memory[int(dest)][: len(data)] = data

    def memcpy_dtoh_async(dest: np.ndarray, src: DeviceAllocation, stream: Any) -> None:
        require_context("cuMemcpyDtoHAsync")
        assert isinstance(stream, Stream)
        dest[...] = np.frombuffer(gpu.memory[int(src)], dest.dtype, dest.size).reshape(dest.shape)

    exported = (
        Stream,
        Error,
        LogicError,
        Device,
        init,
        pagelocked_empty,
        mem_alloc,
        memcpy_htod_async,
        memcpy_dtoh_async,
    )
    for value in exported:
        setattr(driver, value.__name__, value)
    driver.Context = PrimaryContext  # type: ignore[attr-defined]
    package = types.ModuleType("pycuda")
    package.driver = driver  # type: ignore[attr-defined]
    package.VERSION_TEXT = "2024.1.2"  # type: ignore[attr-defined]
    return package, driver


@pytest.fixture(name="fake_gpu", params=list(RELEASES), ids=[f"trt-{name}" for name in RELEASES])
def fake_gpu_fixture(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> FakeGpu:
    """Install the fakes of one TensorRT release; tests may change the FakeGpu and call `install` again
    before loading. Each test starts with no primary context retained, as a fresh process would."""
    gpu = FakeGpu(RELEASES[request.param])

    def install() -> None:
        """Re-create the fake modules from the current FakeGpu settings."""
        trt = make_fake_tensorrt(gpu)
        package, driver = make_fake_pycuda(gpu)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setitem(sys.modules, "pycuda", package)
        monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
        monkeypatch.setattr(tensorrt_engine, "_PRIMARY_CONTEXTS", {})

    gpu.install = install
    install()
    return gpu


def write_fake_model(
    path: Path, input_shape: list[int], outputs: tuple[str, ...] = ("doubled", "total"), half: bool = False
) -> Path:
    """Write a model in the fakes' toy format: one input `x`, the named outputs, FP16 layers if `half`."""
    spec = {"inputs": {"x": input_shape}, "outputs": list(outputs), "half": half}
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
    cached = sorted((model.parent / "cache").iterdir(), key=lambda p: p.suffix)
    assert [p.suffix for p in cached] == [".engine", ".json"] and cached[0].stem == cached[1].stem
    assert cached[0].read_bytes().startswith(FAKE_PLAN_MAGIC)
    # Beside the plan, what it was built as: a cache hit reports it without building again.
    assert json.loads(cached[1].read_text()) == {"precision": "fp32", "tensorrt": fake_gpu.release.version}
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
    assert len(list((model.parent / "cache").glob("*.engine"))) == 2


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
    (cached,) = (model.parent / "cache").glob("*.engine")
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


def test_parser_error_is_an_engine_load_error_with_the_parser_message(fake_gpu: FakeGpu, tmp_path: Path) -> None:
    """The parser's own message reaches the EngineLoadError."""
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07 not a model")
    with pytest.raises(EngineLoadError, match="INVALID_GRAPH: failed to parse protobuf"):
        TensorRTEngine(config_for(bad, dynamic_shapes={})).load()
    assert fake_gpu.builds == 0
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())
    # The CUDA context was popped on the way out and stays retained for the next engine.
    assert fake_gpu.context_stack == 0 and fake_gpu.detached == 0 and fake_gpu.retains == 1


@pytest.mark.parametrize(
    ("precision", "fast_fp16", "half_model", "weak_expected", "strong_expected"),
    [
        ("fp16", True, False, "fp16", "fp32"),
        ("fp16", False, False, "fp32", "fp32"),
        ("fp32", True, False, "fp32", "fp32"),
        ("fp16", True, True, "fp16", "fp16 (model types)"),
        ("fp32", True, True, "fp32", "fp16 (model types)"),
    ],
    ids=["fp16-fast", "fp16-slow-gpu", "fp32", "fp16-model", "fp32-asked-fp16-model"],
)
def test_fp16_only_when_asked_and_supported(  # pylint: disable=too-many-arguments,too-many-positional-arguments
    fake_gpu: FakeGpu,
    tmp_path: Path,
    precision: str,
    fast_fp16: bool,
    half_model: bool,
    weak_expected: str,
    strong_expected: str,
) -> None:
    """Up to TensorRT 10, the FP16 flag is set for fp16 on a GPU with fast FP16; TensorRT 11 has no flag and
    builds the model's own types. The engine reports the precision it built."""
    model = write_fake_model(tmp_path / "model.onnx", [-1, 4], half=half_model)
    fake_gpu.fast_fp16 = fast_fp16
    fake_gpu.install()
    with TensorRTEngine(config_for(model, precision=precision)) as engine:
        built = engine.describe()["precision"]
    flags = {flag.name for flag in fake_gpu.build_configs[0].flags}
    if fake_gpu.release.weak_typing:
        assert ("FP16" in flags) is (weak_expected == "fp16")
        assert built == weak_expected
    else:
        assert not flags
        assert built == strong_expected


def test_fp16_without_hardware_support_warns(fake_gpu: FakeGpu, model: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Asking for fp16 where it will not be built says why."""
    fake_gpu.fast_fp16 = False
    fake_gpu.install()
    with caplog.at_level(logging.WARNING), TensorRTEngine(config_for(model, precision="fp16")):
        pass
    expected = "no fast FP16" if fake_gpu.release.weak_typing else "this FP32 model runs in FP32"
    assert any(expected in r.getMessage() for r in caplog.records)


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


def test_explicit_batch_flag_only_before_tensorrt_10(fake_gpu: FakeGpu, model: Path) -> None:
    """TensorRT 8.x gets EXPLICIT_BATCH (its ONNX parser refuses other networks); 10 (which ignores the flag)
    and 11 (which lacks it) get 0."""
    with TensorRTEngine(config_for(model)) as engine:
        np.testing.assert_array_equal(engine.infer({"x": batch(2)})[0], 2 * batch(2))
    assert fake_gpu.network_flags == [1 if fake_gpu.release.explicit_batch_needed else 0]


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


def test_has_fast_fp16_prefers_tensorrts_answer() -> None:  # the architecture rule serves cached plans
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
    assert fake_gpu.context_stack == 0 and fake_gpu.detached == 0 and not fake_gpu.cleanup_errors


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
    assert fake_gpu.detached == 0 and fake_gpu.context_stack == 0 and not fake_gpu.cleanup_errors
    with pytest.raises(EngineError):
        engine.infer({"x": batch(1)})


def test_load_twice_releases_the_first_engine(fake_gpu: FakeGpu, model: Path) -> None:
    """Loading again releases the first engine's buffers and context first."""
    engine = TensorRTEngine(config_for(model))
    engine.load()
    engine.infer({"x": batch(2)})
    engine.load()
    assert fake_gpu.memory == {} and fake_gpu.retains == 1 and fake_gpu.context_stack == 0
    np.testing.assert_array_equal(engine.infer({"x": batch(1)})[0], 2 * batch(1))
    engine.close()


# ----------------------------------------------------------------------------------------------------
# CUDA contexts and threads
# ----------------------------------------------------------------------------------------------------


def run_in_thread(work: Callable[[], Any]) -> Any:
    """Run `work` on a new thread and return its result (or raise its exception here)."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = work()
        except BaseException as e:  # pylint: disable=broad-exception-caught  # re-raised below
            outcome["error"] = e

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def test_infer_and_close_from_other_threads_than_load(fake_gpu: FakeGpu, model: Path) -> None:
    """Loaded on this thread, inferred on a second, closed on a third: each pushes and pops on its own
    stack, every buffer is freed in its context, and no stack keeps an entry."""
    engine = TensorRTEngine(config_for(model))
    engine.load()
    assert fake_gpu.context_stack == 0

    def infer() -> tuple[list[np.ndarray], int]:
        outputs = engine.infer({"x": batch(3)})
        return outputs, fake_gpu.context_stack

    (doubled, total), depth_after = run_in_thread(infer)
    np.testing.assert_array_equal(doubled, 2 * batch(3))
    np.testing.assert_array_equal(total, batch(3).sum(axis=-1))
    assert depth_after == 0
    assert fake_gpu.threads_used and threading.get_ident() not in fake_gpu.threads_used
    run_in_thread(lambda: (engine.close(), fake_gpu.context_stack)[1])
    assert fake_gpu.memory == {} and not fake_gpu.cleanup_errors
    assert fake_gpu.context_stack == 0 and fake_gpu.detached == 0


def test_model_swaps_retain_the_primary_context_once(fake_gpu: FakeGpu, model: Path) -> None:
    """Engines loaded and closed over and over on two threads (a model swap each time) share one retained
    primary context, never detach it, and leave both threads' stacks empty."""
    depths = []
    for round_ in range(3):
        old = TensorRTEngine(config_for(model))
        old.load()
        depths.append(run_in_thread(lambda old=old: (old.infer({"x": batch(2)}), fake_gpu.context_stack)[1]))
        new = run_in_thread(lambda: TensorRTEngine(config_for(model)))
        run_in_thread(new.load)
        old.close()
        np.testing.assert_array_equal(new.infer({"x": batch(1)})[0], 2 * batch(1))
        run_in_thread(new.close)
        assert fake_gpu.memory == {}, f"round {round_}"
    assert fake_gpu.retains == 1 and fake_gpu.detached == 0
    assert depths == [0, 0, 0] and fake_gpu.context_stack == 0
    assert not fake_gpu.cleanup_errors


def test_a_context_that_cannot_be_pushed_is_an_engine_error(
    fake_gpu: FakeGpu, model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A push the driver refuses is an EngineError from infer, an EngineLoadError from load (never pycuda's
    own exception), and close() only logs it."""
    engine = TensorRTEngine(config_for(model))
    engine.load()
    fake_gpu.fail_push = True
    with pytest.raises(EngineError, match="cannot make the CUDA context current to infer") as raised:
        engine.infer({"x": batch(1)})
    assert type(raised.value) is EngineError  # pylint: disable=unidiomatic-typecheck
    assert type(raised.value.__cause__).__name__ == "LogicError"
    with pytest.raises(EngineLoadError, match="context is destroyed"):
        TensorRTEngine(config_for(model)).load()
    with caplog.at_level(logging.ERROR, logger=TRT_LOGGER_NAME):
        engine.close()
    assert any("could not release" in r.getMessage() for r in caplog.records)
    fake_gpu.fail_push = False
    assert fake_gpu.context_stack == 0
    engine.load()  # the device works again once the driver does
    np.testing.assert_array_equal(engine.infer({"x": batch(1)})[0], 2 * batch(1))
    engine.close()


def test_detaching_is_what_left_a_stale_context(fake_gpu: FakeGpu) -> None:
    """The fake's pycuda is faithful where the old close() went wrong: detaching a primary context that is
    not current leaves it on the calling thread's stack."""
    import pycuda.driver as cuda  # pylint: disable=import-outside-toplevel,import-error  # the fake

    context = cuda.Device(0).retain_primary_context()
    context.detach()
    assert fake_gpu.context_stack == 1


# ----------------------------------------------------------------------------------------------------
# What the engine reports, and the GPU in the cache key
# ----------------------------------------------------------------------------------------------------


def test_describe_reports_backend_version_gpu_and_cache(fake_gpu: FakeGpu, model: Path) -> None:
    """describe() names the backend, TensorRT version, GPU, precision, and whether the plan came from cache."""
    engine = TensorRTEngine(config_for(model))
    assert engine.describe() == {"backend": "tensorrt"}
    engine.load()
    first = engine.describe()
    engine.load()
    second = engine.describe()
    engine.close()
    assert engine.describe() == {"backend": "tensorrt"}  # nothing loaded, nothing claimed
    assert first == {
        "backend": "tensorrt",
        "tensorrt": fake_gpu.release.version,
        "device": "Orin (nvgpu)",
        "device_memory_mib": 7_620_968_448 // (1 << 20),
        "compute_capability": "8.7",
        "precision_requested": "fp32",
        "precision": "fp32",
        "engine_cached": False,
    }
    assert second == {**first, "engine_cached": True}


@pytest.mark.parametrize(
    ("device_name", "total_memory", "rebuilt"),
    [
        ("Orin (nvgpu)", 7_620_968_448, False),
        ("Orin (nvgpu)", 15_655_829_504, True),  # Orin NX 16 GB: same name and compute capability
        ("NVIDIA Jetson AGX Orin", 7_620_968_448, True),
    ],
    ids=["same-gpu", "other-memory", "other-name"],
)
def test_another_gpu_of_the_same_architecture_misses_the_cache(
    fake_gpu: FakeGpu, model: Path, device_name: str, total_memory: int, rebuilt: bool
) -> None:
    """A plan built on one board is not loaded on another board of compute capability 8.7."""
    with TensorRTEngine(config_for(model)):
        pass
    fake_gpu.device_name, fake_gpu.total_memory = device_name, total_memory
    with TensorRTEngine(config_for(model)) as engine:
        assert engine.describe()["engine_cached"] is not rebuilt
    assert fake_gpu.builds == (2 if rebuilt else 1)


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


@pytest.mark.parametrize(
    ("version", "accepted"),
    [("8.4.3.1", False), ("8.5.2.2", True), ("8.6.2.3", True), ("10.0.1.6", True), ("11.0.0.114", True)],
)
def test_tensorrt_from_8_5_is_accepted(fake_gpu: FakeGpu, version: str, accepted: bool) -> None:
    """TensorRT 8.5 (JetPack 5.1) and later are accepted; before 8.5 (no name-based tensor API) is refused."""
    fake_gpu.release = Release(version, True, True, False, True)
    fake_gpu.install()
    if accepted:
        TensorRTEngine.check_available()
    else:
        with pytest.raises(EngineUnavailableError, match=f"found {version}"):
            TensorRTEngine.check_available()


def test_sdk_report_names_both_versions(fake_gpu: FakeGpu, capsys: pytest.CaptureFixture[str]) -> None:
    """The build-time check prints TensorRT's and pycuda's versions and exits 0."""
    assert tensorrt_engine.main() == 0
    assert capsys.readouterr().out.strip() == f"TensorRT {fake_gpu.release.version}, pycuda 2024.1.2"


def test_sdk_check_fails_without_tensorrt() -> None:
    """`python -m edgevision.engines.tensorrt_engine` exits 1 saying what is missing (no TensorRT here)."""
    script = "import sys; sys.modules['tensorrt'] = None; import runpy; " + (
        "runpy.run_module('edgevision.engines.tensorrt_engine', run_name='__main__')"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "tensorrt backend unavailable" in done.stderr and "TensorRT >= 8.5" in done.stderr


def test_tensorrt_bench_says_why_it_cannot_run() -> None:
    """bench/tensorrt_bench.py exits 2 with the reason where TensorRT cannot run (it is blocked here)."""
    bench = Path(__file__).resolve().parents[5] / "bench" / "tensorrt_bench.py"
    script = (
        "import sys, runpy; sys.modules['tensorrt'] = None; sys.argv = ['x']; "
        f"runpy.run_path({str(bench)!r}, run_name='__main__')"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "TensorRT cannot run here" in done.stderr and not done.stdout


def test_load_without_the_sdk_is_unavailable_not_a_crash(monkeypatch: pytest.MonkeyPatch, model: Path) -> None:
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
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "ok" in done.stdout and "tensorrt" in done.stdout
