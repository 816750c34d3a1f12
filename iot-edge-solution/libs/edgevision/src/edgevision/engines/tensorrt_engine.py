"""TensorRT on an NVIDIA GPU (Jetson or PC), with pycuda for memory and the stream.

Needs TensorRT >= 8.5 (the name-based tensor API: `num_io_tensors`, `set_input_shape`, `set_tensor_address`,
`execute_async_v3`; JetPack 5.1 has 8.5.2) and pycuda. Neither is imported when this module is imported: only
`check_available()`, `sdk_report()` and `load()` import them, so a CPU image can import the whole library.
Names that later releases dropped are looked up, not assumed: `NetworkDefinitionCreationFlag.EXPLICIT_BATCH` is
passed only before TensorRT 10 (10 ignores it, 11 has none); TensorRT 11 has neither `BuilderFlag.FP16` nor
`platform_has_fast_fp16`, because its networks are strongly typed, so there the engine runs the ONNX model's own
types (an FP32 model builds in FP32, and says so).

`load()` builds the engine from the ONNX file the first time and keeps the serialised plan in a cache
(`trt_cache`), so later start-ups only deserialise it. Every input with a dynamic (-1) axis gets an
optimisation profile: its (min, opt, max) come from `EngineConfig.dynamic_shapes`; without an entry there,
the profile is pinned to one shape taken from `EngineConfig.input_shapes` (or else from the model) with every
-1 replaced by 1, so a model with a dynamic batch axis then runs with batch 1 only.

Host buffers are pinned and, with the device buffers, re-allocated only when a new input shape needs more room
than they have. The device's primary context is retained once per process and never detached (a model swap
closes engines often, and pycuda cannot detach a context that is not current without leaving an entry on the
calling thread's context stack). It is pushed on the calling thread only around each piece of work (load,
infer, close) and popped after it, since pycuda's context stack is per thread: `infer` may be called from
another thread than `load` (one thread at a time, as for every engine).

`python -m edgevision.engines.tensorrt_engine` prints the TensorRT and pycuda versions, or exits with status 1
saying what is missing; the Jetson and GPU module images run it at build time.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import math
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from edgevision.engines.base import Engine, EngineConfig, EngineError, EngineLoadError, EngineUnavailableError
from edgevision.engines.trt_cache import EngineCache, default_cache_dir, engine_cache_key
from edgevision.files import sha256_of

log = logging.getLogger(__name__)

MIN_TENSORRT_VERSION = (8, 5)
# TensorRT 10 made every network explicit-batch and ignores the flag; 11 removed it.
EXPLICIT_BATCH_UNTIL = (10, 0)
DEFAULT_WORKSPACE_BYTES = 1 << 30
PRECISIONS = ("fp16", "fp32")

INSTALL_HINT = (
    "On a Jetson, TensorRT comes with JetPack (python3-libnvinfer) and pycuda installs with "
    "`pip install pycuda`; on a PC, use the NVIDIA TensorRT container (nvcr.io/nvidia/tensorrt) "
    "or `pip install tensorrt pycuda`."
)

Shape = tuple[int, ...]
ShapeRange = tuple[Shape, Shape, Shape]


def cuda_device_report() -> str:
    """Whether a CUDA device is present, asked of the driver library directly (works without pycuda)."""
    for library in ("libcuda.so.1", "libcuda.so"):
        try:
            driver = ctypes.CDLL(library)
            break
        except OSError:
            continue
    else:
        return "no CUDA driver (libcuda.so.1) is installed, so no CUDA device is usable here."
    status = driver.cuInit(0)
    if status != 0:
        return f"the CUDA driver is installed but cannot initialise (CUDA error {status}): no usable device."
    count = ctypes.c_int(0)
    status = driver.cuDeviceGetCount(ctypes.byref(count))
    if status != 0 or count.value == 0:
        return "the CUDA driver is installed but no CUDA device is present."
    return f"{count.value} CUDA device(s) present."


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.split(".")[:2]:
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _import_sdk() -> tuple[ModuleType, ModuleType]:
    """Import tensorrt and pycuda.driver, or raise EngineUnavailableError saying what to install."""
    # pylint: disable=import-outside-toplevel
    try:
        import tensorrt as trt
    except (ImportError, OSError) as e:
        raise EngineUnavailableError(
            f"the tensorrt backend needs NVIDIA TensorRT >= 8.5 and pycuda, and TensorRT is not installed "
            f"({e}). {INSTALL_HINT} CUDA: {cuda_device_report()}"
        ) from e
    version = getattr(trt, "__version__", "0")
    if _version_tuple(version) < MIN_TENSORRT_VERSION:
        raise EngineUnavailableError(
            f"the tensorrt backend needs TensorRT >= 8.5 (the name-based tensor API); found {version}. {INSTALL_HINT}"
        )
    try:
        import pycuda.driver as cuda
    except (ImportError, OSError) as e:
        raise EngineUnavailableError(
            f"the tensorrt backend needs pycuda, which is not installed or cannot load ({e}): "
            f"pip install pycuda. CUDA: {cuda_device_report()}"
        ) from e
    return trt, cuda


def sdk_report() -> str:
    """One line naming the TensorRT and pycuda versions; EngineUnavailableError when either is missing or
    TensorRT is older than 8.5. Needs no GPU, so an image build can run it."""
    trt, cuda = _import_sdk()
    del cuda  # imported for the check; its package carries the version
    pycuda_version = getattr(sys.modules.get("pycuda"), "VERSION_TEXT", "(version unknown)")
    return f"TensorRT {trt.__version__}, pycuda {pycuda_version}"


# device index -> the retained primary context. Retained once per process and never detached: pycuda's detach
# of a context that is not current pushes it without popping it, and from another thread it releases nothing.
_PRIMARY_CONTEXTS: dict[int, Any] = {}
_PRIMARY_CONTEXTS_LOCK = threading.Lock()


def _primary_context(cuda: ModuleType, device_index: int) -> Any:
    """The device's primary context, retained on first use; raises the driver's error."""
    with _PRIMARY_CONTEXTS_LOCK:
        context = _PRIMARY_CONTEXTS.get(device_index)
        if context is None:
            context = cuda.Device(device_index).retain_primary_context()
            _PRIMARY_CONTEXTS[device_index] = context
        return context


@contextlib.contextmanager
def _context_current(
    cuda: ModuleType, context: Any, action: str, error: type[EngineError] = EngineError
) -> Iterator[None]:
    """`context` pushed on the calling thread for the block, popped after it. A push or pop the driver
    refuses is an `error` (EngineError by default) rather than pycuda's own exception."""
    try:
        context.push()
    except cuda.Error as e:
        raise error(f"cannot make the CUDA context current to {action}: {e}") from e
    try:
        yield
    except BaseException:
        try:
            context.pop()
        except cuda.Error as e:  # the block's own error is the one to report
            log.error("cannot pop the CUDA context after a failed %s: %s", action, e)
        raise
    try:
        context.pop()
    except cuda.Error as e:
        raise error(f"cannot pop the CUDA context after {action}: {e}") from e


def network_creation_flags(trt: ModuleType) -> int:
    """EXPLICIT_BATCH before TensorRT 10 (8.x parses ONNX only into explicit-batch networks); 0 from 10 on,
    where every network is explicit-batch (10 ignores the flag, 11 no longer has it)."""
    explicit_batch = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    if explicit_batch is None or _version_tuple(trt.__version__) >= EXPLICIT_BATCH_UNTIL:
        return 0
    return 1 << int(explicit_batch)


def fp16_flag(trt: ModuleType) -> Any:
    """`BuilderFlag.FP16`, or None where TensorRT has no weak typing any more (11: strongly typed networks)."""
    return getattr(getattr(trt, "BuilderFlag", None), "FP16", None)


def network_has_half(trt: ModuleType, network: Any) -> bool:
    """Whether any layer of a parsed network outputs FP16: a strongly typed build then runs those in FP16."""
    half = trt.DataType.HALF
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if any(layer.get_output(o).dtype == half for o in range(layer.num_outputs)):
            return True
    return False


@functools.cache
def _python_logger_for(trt: ModuleType) -> Any:
    """One TensorRT logger per process (TensorRT wants the same one for builders and runtimes) forwarding to
    python logging. TensorRT's INFO is chatty during builds, so it goes to DEBUG; our own INFO lines say what
    happens."""
    severity = trt.ILogger.Severity
    levels = {
        severity.INTERNAL_ERROR: logging.CRITICAL,
        severity.ERROR: logging.ERROR,
        severity.WARNING: logging.WARNING,
        severity.INFO: logging.DEBUG,
        severity.VERBOSE: logging.DEBUG,
    }

    class PythonLoggingBridge(trt.ILogger):  # type: ignore[misc,name-defined]
        """TensorRT ILogger that writes to this module's python logger."""

        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            """Called by TensorRT for each of its messages."""
            level = levels.get(severity, logging.DEBUG)
            if log.isEnabledFor(level):
                log.log(level, "TensorRT: %s", msg)

    return PythonLoggingBridge()


def _check_range(name: str, model_shape: Shape, low: Shape, opt: Shape, high: Shape) -> None:
    for label, shape in (("min", low), ("opt", opt), ("max", high)):
        if len(shape) != len(model_shape):
            raise EngineLoadError(
                f"{label} shape {shape} for input {name!r} has rank {len(shape)}; the model has {model_shape}"
            )
        for axis, (want, have) in enumerate(zip(model_shape, shape)):
            if have < 1 or (want >= 0 and want != have):
                raise EngineLoadError(
                    f"{label} shape {shape} for input {name!r} does not fit the model's {model_shape} at axis {axis}"
                )
    if not all(a <= b <= c for a, b, c in zip(low, opt, high)):
        raise EngineLoadError(f"input {name!r}: need min <= opt <= max on every axis; got {low}, {opt}, {high}")


def optimization_profiles(
    network_inputs: Mapping[str, Sequence[int]],
    input_shapes: Mapping[str, Sequence[int]],
    dynamic_shapes: Mapping[str, tuple[Sequence[int], Sequence[int], Sequence[int]]],
) -> dict[str, ShapeRange]:
    """(min, opt, max) for every network input that has a dynamic (-1) axis.

    From `dynamic_shapes` when it names the input; otherwise one pinned shape from `input_shapes` (or the
    network's own shape) with each -1 replaced by 1. Raises EngineLoadError when a range does not fit the
    model (wrong rank, a static axis changed, not min <= opt <= max) or names an input the model lacks.
    """
    unknown = sorted(set(dynamic_shapes) - set(network_inputs))
    if unknown:
        raise EngineLoadError(
            f"dynamic_shapes names input(s) {unknown} the model does not have; it has {list(network_inputs)}"
        )
    profiles: dict[str, ShapeRange] = {}
    for name, shape in network_inputs.items():
        model_shape = tuple(int(d) for d in shape)
        if all(d >= 0 for d in model_shape):
            continue
        if name in dynamic_shapes:
            shape_range = tuple(tuple(int(d) for d in s) for s in dynamic_shapes[name])
            if len(shape_range) != 3:
                raise EngineLoadError(f"dynamic_shapes[{name!r}] must be (min, opt, max); got {shape_range}")
            low, opt, high = shape_range
        else:
            source = tuple(int(d) for d in input_shapes.get(name, model_shape))
            low = opt = high = tuple(1 if d < 0 else d for d in source)
        _check_range(name, model_shape, low, opt, high)
        profiles[name] = (low, opt, high)
    return profiles


def has_fast_fp16(builder: Any, compute_capability: tuple[int, int]) -> bool:
    """Whether FP16 is worth building for: TensorRT's answer, or by architecture where TensorRT stopped
    answering (the query is deprecated since 10.5)."""
    flag = getattr(builder, "platform_has_fast_fp16", None)
    if flag is not None:
        return bool(flag)
    return compute_capability in ((5, 3), (6, 0), (6, 2)) or compute_capability >= (7, 0)


class _TensorBuffer:
    """A pinned host buffer and a device buffer for one tensor, grown when a shape needs more room."""

    def __init__(self, cuda: ModuleType, dtype: np.dtype, rank: int) -> None:
        self._cuda = cuda
        self.dtype = dtype
        self.rank = rank
        self.capacity = 0
        self.host: np.ndarray | None = None
        self.device: Any = None

    def view(self, shape: Shape) -> np.ndarray:
        """The host buffer as an array of `shape`; both buffers are re-allocated first if too small."""
        count = math.prod(shape)
        if self.host is None or count > self.capacity:
            self.free()
            capacity = max(count, 1)
            self.host = self._cuda.pagelocked_empty(capacity, self.dtype)
            self.device = self._cuda.mem_alloc(capacity * self.dtype.itemsize)
            self.capacity = capacity
            log.debug("allocated %d x %s for shape %s", capacity, self.dtype, shape)
        return self.host[:count].reshape(shape)

    @property
    def address(self) -> int:
        """The device pointer, as TensorRT wants it."""
        return int(self.device)

    def free(self) -> None:
        """Release both buffers now rather than whenever the garbage collector runs."""
        if self.device is not None:
            self.device.free()
            self.device = None
        if self.host is not None:
            release = getattr(self.host.base, "free", None)
            if release is not None:
                release()
            self.host = None
        self.capacity = 0


@dataclass(frozen=True)
class DeviceFacts:
    """What identifies the GPU a plan is built for: a plan only runs on the exact model it was built on, and
    Orin Nano, NX and AGX all report compute capability 8.7, so name and memory go into the cache key too."""

    index: int
    name: str
    total_memory: int
    compute_capability: tuple[int, int]

    @classmethod
    def from_device(cls, index: int, device: Any) -> DeviceFacts:
        """Ask a pycuda `Device`."""
        major, minor = device.compute_capability()
        return cls(index, str(device.name()), int(device.total_memory()), (int(major), int(minor)))


@dataclass
class _GpuState:
    """Everything `load` acquires; dropped in reverse order by `release` with the CUDA context current."""

    cuda: ModuleType
    cuda_context: Any
    device: DeviceFacts
    runtime: Any = None
    engine: Any = None
    context: Any = None
    stream: Any = None
    buffers: dict[str, _TensorBuffer] = field(default_factory=dict)
    shapes_set: dict[str, Shape] = field(default_factory=dict)

    def release(self) -> None:
        """Free the buffers, then the execution context, engine and runtime (TensorRT's required order)."""
        for buffer in self.buffers.values():
            buffer.free()
        self.buffers.clear()
        self.shapes_set.clear()
        self.stream = None
        self.context = None
        self.engine = None
        self.runtime = None

    def current(self, action: str, error: type[EngineError] = EngineError) -> contextlib.AbstractContextManager[None]:
        """The primary context pushed on the calling thread for `action`."""
        return _context_current(self.cuda, self.cuda_context, action, error)


class TensorRTEngine(Engine):
    """GPU inference with TensorRT: builds from ONNX once, then loads the cached plan."""

    name = "tensorrt"

    def __init__(
        self, config: EngineConfig, workspace_bytes: int = DEFAULT_WORKSPACE_BYTES, device_index: int = 0
    ) -> None:
        super().__init__(config)
        self.workspace_bytes = workspace_bytes
        self.device_index = device_index
        self._gpu: _GpuState | None = None
        self._inputs: list[str] = []
        self._engine_outputs: list[str] = []
        self._outputs: list[str] = []
        self._facts: dict[str, Any] = {}

    @staticmethod
    def check_available() -> None:
        """Raise EngineUnavailableError unless TensorRT >= 8.5, pycuda and a CUDA device are all here."""
        _, cuda = _import_sdk()
        try:
            cuda.init()
            count = cuda.Device.count()
        except cuda.Error as e:
            raise EngineUnavailableError(
                f"the tensorrt backend needs an NVIDIA GPU, and the CUDA driver cannot initialise ({e})."
            ) from e
        if count == 0:
            raise EngineUnavailableError("the tensorrt backend needs an NVIDIA GPU, and no CUDA device is present.")

    def describe(self) -> dict[str, Any]:
        """Backend, TensorRT version, GPU, requested and built precision, and whether the plan was cached."""
        return {"backend": self.name, **self._facts}

    # -- loading -------------------------------------------------------------------------------------------

    def load(self) -> None:
        self.close()
        path = self.config.model_path
        if not path.is_file():
            raise EngineLoadError(f"model file not found: {path}")
        if self.config.precision not in PRECISIONS:
            raise EngineLoadError(
                f"precision {self.config.precision!r} is not supported by TensorRT; use one of {PRECISIONS}"
            )
        trt, cuda = _import_sdk()
        try:
            cuda.init()
            facts = DeviceFacts.from_device(self.device_index, cuda.Device(self.device_index))
            cuda_context = _primary_context(cuda, self.device_index)
        except cuda.Error as e:
            raise EngineUnavailableError(f"cannot open CUDA device {self.device_index}: {e}") from e
        gpu = _GpuState(cuda=cuda, cuda_context=cuda_context, device=facts)
        with gpu.current(f"load {path.name}", EngineLoadError):
            try:
                self._load_in_context(trt, gpu)
            except Exception as e:
                gpu.release()
                if isinstance(e, EngineError):
                    raise
                # TensorRT and pycuda raise their own untyped errors.
                raise EngineLoadError(f"TensorRT cannot load {path}: {e}") from e
        self._gpu = gpu

    def _load_in_context(self, trt: ModuleType, gpu: _GpuState) -> None:
        path = self.config.model_path
        device = gpu.device
        key = engine_cache_key(
            sha256_of(path),
            trt.__version__,
            device.compute_capability,
            self.config.precision,
            self.config.input_shapes,
            self.config.dynamic_shapes,
            gpu_name=device.name,
            gpu_memory_bytes=device.total_memory,
        )
        cache = EngineCache(self.config.cache_dir or default_cache_dir(path))
        trt_logger = _python_logger_for(trt)
        gpu.runtime = trt.Runtime(trt_logger)
        built: dict[str, str] = {}

        def build() -> Any:
            plan, built["precision"] = self._build_plan(trt, trt_logger, device.compute_capability)
            return plan

        gpu.engine = cache.load_or_build(key, gpu.runtime.deserialize_cuda_engine, build)
        if built:
            cache.write_info(key, {"precision": built["precision"], "tensorrt": trt.__version__})
        gpu.context = gpu.engine.create_execution_context()
        if gpu.context is None:
            raise EngineLoadError("TensorRT could not create an execution context (out of GPU memory?)")
        gpu.stream = gpu.cuda.Stream()
        self._discover_tensors(trt, gpu)
        precision = str(
            built.get("precision")
            or cache.read_info(key).get("precision")
            or self._expected_precision(trt, device.compute_capability)
        )
        self._facts = {
            "tensorrt": trt.__version__,
            "device": device.name,
            "device_memory_mib": device.total_memory // (1 << 20),
            "compute_capability": ".".join(str(part) for part in device.compute_capability),
            "precision_requested": self.config.precision,
            "precision": precision,
            "engine_cached": not built,
        }
        log.info(
            "loaded %s with TensorRT %s on %s (compute capability %s, %s): inputs %s, outputs %s",
            path.name,
            trt.__version__,
            device.name,
            self._facts["compute_capability"],
            precision,
            self._inputs,
            self._outputs,
        )

    def _expected_precision(self, trt: ModuleType, compute_capability: tuple[int, int]) -> str:
        """The precision a cached plan without its facts file was built in, worked out as the build decides it
        where that needs no network ("model types" where it does: TensorRT 11)."""
        if fp16_flag(trt) is None:
            return "model types"
        if self.config.precision == "fp16" and has_fast_fp16(None, compute_capability):
            return "fp16"
        return "fp32"

    def _parse(self, trt: ModuleType, builder: Any, trt_logger: Any) -> tuple[Any, Any]:
        """The network parsed from the ONNX file, and its parser; EngineLoadError with the parser's
        messages when it fails."""
        path = self.config.model_path
        network = builder.create_network(network_creation_flags(trt))
        parser = trt.OnnxParser(network, trt_logger)
        if not parser.parse_from_file(str(path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)) or "no details"
            raise EngineLoadError(f"TensorRT's ONNX parser rejected {path}: {errors}")
        # The parser must outlive the network (it owns the weights), so it travels with it.
        return network, parser

    def _build_plan(self, trt: ModuleType, trt_logger: Any, compute_capability: tuple[int, int]) -> tuple[Any, str]:
        """Parse the ONNX file and build a serialised plan (TensorRT's IHostMemory); also the precision built."""
        path = self.config.model_path
        started = time.monotonic()
        log.info("building a TensorRT engine from %s (%s); this can take minutes", path, self.config.precision)
        builder = trt.Builder(trt_logger)
        network, _parser = self._parse(trt, builder, trt_logger)
        inputs = {network.get_input(i).name: tuple(network.get_input(i).shape) for i in range(network.num_inputs)}
        log.info("parsed %s in %.1f s: inputs %s", path.name, time.monotonic() - started, inputs)
        build_config, precision = self._build_config(trt, builder, network, inputs, compute_capability)
        plan = builder.build_serialized_network(network, build_config)
        if plan is None:
            raise EngineLoadError(f"TensorRT failed to build an engine from {path}; its log above says why")
        log.info("built the TensorRT engine for %s in %.1f s", path.name, time.monotonic() - started)
        return plan, precision

    def _build_config(  # pylint: disable=too-many-arguments,too-many-positional-arguments
        self,
        trt: ModuleType,
        builder: Any,
        network: Any,
        inputs: dict[str, Shape],
        compute_capability: tuple[int, int],
    ) -> tuple[Any, str]:
        """Workspace limit, FP16 when asked for and worth it, and the optimisation profile; also the
        precision this config builds in."""
        build_config = builder.create_builder_config()
        build_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_bytes)
        precision = self._choose_precision(trt, builder, network, compute_capability)
        if precision == "fp16":
            build_config.set_flag(fp16_flag(trt))
        profiles = optimization_profiles(inputs, self.config.input_shapes, self.config.dynamic_shapes)
        if profiles:
            profile = builder.create_optimization_profile()
            for name, (low, opt, high) in profiles.items():
                profile.set_shape(name, low, opt, high)
                log.info("optimisation profile for %s: min %s, opt %s, max %s", name, low, opt, high)
            build_config.add_optimization_profile(profile)
        return build_config, precision

    def _choose_precision(
        self, trt: ModuleType, builder: Any, network: Any, compute_capability: tuple[int, int]
    ) -> str:
        """ "fp16" when the FP16 builder flag is to be set, "fp32" when not; on TensorRT without weak typing,
        "fp16" or "fp32" from the network's own tensor types (the build then follows the model)."""
        if fp16_flag(trt) is None:
            precision = "fp16" if network_has_half(trt, network) else "fp32"
            if self.config.precision == "fp16" and precision == "fp32":
                log.warning(
                    "TensorRT %s builds every network in its own types (no FP16 builder flag): this FP32 "
                    "model runs in FP32. Export an FP16 or mixed-precision ONNX model for FP16",
                    trt.__version__,
                )
            return "fp16 (model types)" if precision == "fp16" else "fp32"
        if self.config.precision != "fp16":
            return "fp32"
        if has_fast_fp16(builder, compute_capability):
            return "fp16"
        log.warning("this GPU has no fast FP16; building the TensorRT engine in FP32")
        return "fp32"

    def _discover_tensors(self, trt: ModuleType, gpu: _GpuState) -> None:
        engine = gpu.engine
        inputs, outputs = [], []
        for index in range(engine.num_io_tensors):
            tensor = engine.get_tensor_name(index)
            if engine.get_tensor_mode(tensor) == trt.TensorIOMode.INPUT:
                inputs.append(tensor)
            else:
                outputs.append(tensor)
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(tensor)))
            rank = len(tuple(engine.get_tensor_shape(tensor)))
            gpu.buffers[tensor] = _TensorBuffer(gpu.cuda, dtype, rank)
        wanted = list(self.config.output_names) or outputs
        missing = [tensor for tensor in wanted if tensor not in outputs]
        if missing:
            raise EngineLoadError(f"{self.config.model_path} has no output(s) {missing}; it has {outputs}")
        self._inputs, self._engine_outputs, self._outputs = inputs, outputs, wanted

    # -- inference -----------------------------------------------------------------------------------------

    def _require_loaded(self) -> _GpuState:
        if self._gpu is None:
            raise EngineError("engine is not loaded: call load() first")
        return self._gpu

    def infer(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        gpu = self._require_loaded()
        unknown = sorted(set(inputs) - set(self._inputs))
        missing = sorted(set(self._inputs) - set(inputs))
        if unknown or missing:
            raise EngineError(f"inputs must be exactly {self._inputs}; unknown {unknown}, missing {missing}")
        with gpu.current("infer"):
            try:
                return self._infer_in_context(gpu, inputs)
            except EngineError:
                raise
            except Exception as e:  # pycuda raises its own errors (out of memory, launch failures)
                raise EngineError(f"inference failed: {e}") from e

    @staticmethod
    def _set_input_shape(gpu: _GpuState, name: str, shape: Shape) -> None:
        if gpu.shapes_set.get(name) == shape:
            return
        gpu.shapes_set.pop(name, None)
        rank = gpu.buffers[name].rank
        if len(shape) != rank:
            raise EngineError(f"input {name!r} has shape {shape}; the engine expects rank {rank}")
        if not gpu.context.set_input_shape(name, shape):
            raise EngineError(
                f"input {name!r} shape {shape} is outside the engine's optimisation profile; "
                "build with EngineConfig.dynamic_shapes covering it"
            )
        gpu.shapes_set[name] = shape

    def _infer_in_context(self, gpu: _GpuState, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        for name in self._inputs:
            self._stage_input(gpu, name, np.asarray(inputs[name]))
        host_outputs = self._bind_outputs(gpu)
        if not gpu.context.execute_async_v3(gpu.stream.handle):
            raise EngineError("TensorRT execution failed; its log above says why")
        for name in self._outputs:
            gpu.cuda.memcpy_dtoh_async(host_outputs[name], gpu.buffers[name].device, gpu.stream)
        gpu.stream.synchronize()
        # Copies, because the pinned buffers are reused by the next call.
        return [host_outputs[name].copy() for name in self._outputs]

    def _stage_input(self, gpu: _GpuState, name: str, array: np.ndarray) -> None:
        """Set the input's shape, copy it to pinned memory and queue the copy to the device."""
        buffer = gpu.buffers[name]
        if array.dtype != buffer.dtype:
            raise EngineError(f"input {name!r} is {array.dtype}; the engine expects {buffer.dtype}")
        shape = tuple(array.shape)
        self._set_input_shape(gpu, name, shape)
        host = buffer.view(shape)
        np.copyto(host, array)
        gpu.cuda.memcpy_htod_async(buffer.device, host, gpu.stream)
        gpu.context.set_tensor_address(name, buffer.address)

    def _bind_outputs(self, gpu: _GpuState) -> dict[str, np.ndarray]:
        """Size and bind every output (also those not asked for: TensorRT needs an address for each)."""
        host_outputs = {}
        for name in self._engine_outputs:
            shape = tuple(gpu.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise EngineError(f"output {name!r} has a data-dependent shape {shape}, which is unsupported")
            host_outputs[name] = gpu.buffers[name].view(shape)
            gpu.context.set_tensor_address(name, gpu.buffers[name].address)
        return host_outputs

    @property
    def input_names(self) -> list[str]:
        self._require_loaded()
        return list(self._inputs)

    @property
    def output_names(self) -> list[str]:
        self._require_loaded()
        return list(self._outputs)

    # -- shutdown ------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Free the engine's buffers, stream and TensorRT objects; the primary context stays retained for the
        next engine on this device."""
        gpu, self._gpu = self._gpu, None
        if gpu is None:
            return
        self._facts = {}
        try:
            with gpu.current("close the engine"):
                gpu.release()
        except EngineError as e:
            # Closing must not fail a model swap or a shutdown; what is left is freed with the process.
            log.error("could not release the TensorRT engine of %s cleanly: %s", self.config.model_path.name, e)


def main() -> int:
    """`python -m edgevision.engines.tensorrt_engine`: print the SDK versions, or why they cannot be used."""
    try:
        print(sdk_report())
    except EngineUnavailableError as e:
        print(f"tensorrt backend unavailable: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
