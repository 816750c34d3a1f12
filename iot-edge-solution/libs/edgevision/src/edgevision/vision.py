"""Wiring: model repository + engine backend + task, from settings or from explicit arguments."""

from __future__ import annotations

import logging
from pathlib import Path

from edgevision.config import VisionSettings
from edgevision.engines import EngineConfig, EngineLoadError, EngineUnavailableError, create_engine
from edgevision.engines.onnx_inputs import onnx_input_shapes
from edgevision.engines.selection import TENSORRT, TFLITE, choose_backend
from edgevision.models import LoadedModel, ModelRepository
from edgevision.tasks import Task, create_task

log = logging.getLogger(__name__)

# Where the bundled models sit relative to a module's main.py, both in the repo and in the images:
# <solution>/modules/<name>/main.py -> <solution>/models
BUNDLED_MODELS_FROM_MODULE = Path("..", "..", "models")


# Shape ranges for axes the model leaves open (TensorRT builds one optimisation profile for them). Tasks infer
# one frame at a time, so a dynamic batch axis is pinned to 1; an open image side may go from MIN_SIDE up to the
# manifest's max_side_len (else LARGEST_SIDE), tuned for the size the pre-processing usually gives.
MAX_BATCH = 1
MIN_SIDE = 32
LARGEST_SIDE = 2048
DEFAULT_SIDE = 640


def is_tflite_model(model: LoadedModel) -> bool:
    """True for a TensorFlow Lite model (`file` ends in .tflite): LiteRT runs it, whatever the backend setting."""
    return model.manifest.file.lower().endswith(".tflite")


def backend_for_model(model: LoadedModel, configured: str) -> str:
    """The backend that runs `model`: the configured one for ONNX models, `tflite` for TensorFlow Lite models.

    TensorRT builds its engines from ONNX only: USE_TENSOR_RT=True with a .tflite model is refused (a module
    keeps serving its current model when such a model arrives over the air)."""
    if not is_tflite_model(model):
        return configured
    if configured == TENSORRT:
        raise EngineUnavailableError(
            f"{model.ref} is a TensorFlow Lite model, and USE_TENSOR_RT=True selects TensorRT, which runs ONNX "
            "models only: set USE_TENSOR_RT=False to run it with LiteRT on the CPU, or select an ONNX model"
        )
    return TFLITE


def model_input_shape(model: LoadedModel) -> tuple[int, ...]:
    """The manifest's input shape with -1 only where the ONNX graph leaves the axis open as well.

    A -1 in `model.json` over an axis the graph fixes takes the graph's size (efficientnet-lite0 declares
    `[-1, 3, 224, 224]` and its graph only leaves the batch open); a size in `model.json` over an open graph
    axis pins it. Raises EngineLoadError when the graph has no such input, another rank, or another fixed size.
    """
    spec = model.manifest.input
    declared = tuple(spec.shape)
    graph_inputs = onnx_input_shapes(model.model_path)
    if spec.name not in graph_inputs:
        raise EngineLoadError(
            f"{model.model_path} has no input {spec.name!r} (named in model.json); it has {sorted(graph_inputs)}"
        )
    graph = graph_inputs[spec.name]
    if graph is None:
        return declared
    if len(graph) != len(declared):
        raise EngineLoadError(
            f"model.json gives input {spec.name!r} the shape {list(declared)}, the ONNX graph {list(graph)} "
            f"(rank {len(graph)})"
        )
    for axis, (manifest_size, graph_size) in enumerate(zip(declared, graph)):
        if manifest_size >= 0 and graph_size >= 0 and manifest_size != graph_size:
            raise EngineLoadError(
                f"model.json gives input {spec.name!r} the shape {list(declared)}, which does not fit the ONNX "
                f"graph's {list(graph)} at axis {axis}"
            )
    return tuple(m if m >= 0 else g for m, g in zip(declared, graph))


def _typical_sides(model: LoadedModel) -> tuple[int, int]:
    """(height, width) the pre-processing gives most often: the optimisation profile's "opt" sides."""
    pre = model.manifest.preprocess
    resize = pre.resize
    if pre.center_crop:
        return pre.center_crop, pre.center_crop
    if resize.mode == "stretch" and resize.height and resize.width:
        return resize.height, resize.width
    side = resize.limit_shorter_side or resize.size or DEFAULT_SIDE
    return side, side


def dynamic_shape_range(
    model: LoadedModel, shape: tuple[int, ...]
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None:
    """(min, opt, max) for an input `shape` with open (-1) axes, varying only those; None when none is open."""
    if all(d >= 0 for d in shape):
        return None
    pre = model.manifest.preprocess
    channels_first = pre.layout == "NCHW"
    batch_axis, channel_axis = 0, (1 if channels_first else 3)
    height_axis, width_axis = (2, 3) if channels_first else (1, 2)
    typical = dict(zip((height_axis, width_axis), _typical_sides(model)))
    largest = pre.resize.max_side_len or LARGEST_SIDE
    low, opt, high = list(shape), list(shape), list(shape)
    for axis, size in enumerate(shape):
        if size >= 0:
            continue
        if axis == batch_axis:
            low[axis], opt[axis], high[axis] = 1, 1, MAX_BATCH
        elif axis == channel_axis:
            low[axis] = opt[axis] = high[axis] = 3
        else:
            low[axis] = min(MIN_SIDE, typical[axis])
            opt[axis] = typical[axis]
            high[axis] = max(largest, typical[axis])
    return tuple(low), tuple(opt), tuple(high)


def engine_config_for(
    model: LoadedModel, threads: int, cache_dir: Path | None = None, spinning: bool = False
) -> EngineConfig:
    """Engine settings from a manifest and its ONNX graph: axes open in both get a shape range for backends
    that build for one (TensorRT); every other axis keeps its one size."""
    spec = model.manifest.input
    if is_tflite_model(model):  # LiteRT checks the manifest's shape against the model's when it loads
        return EngineConfig(
            model_path=model.model_path,
            input_shapes={spec.name: tuple(spec.shape)},
            output_names=tuple(model.manifest.outputs),
            intra_op_threads=threads,
            cache_dir=cache_dir,
        )
    shape = model_input_shape(model)
    shape_range = dynamic_shape_range(model, shape)
    return EngineConfig(
        model_path=model.model_path,
        input_shapes={spec.name: shape},
        output_names=tuple(model.manifest.outputs),
        intra_op_threads=threads,
        intra_op_spinning=spinning,
        cache_dir=cache_dir,
        dynamic_shapes={spec.name: shape_range} if shape_range else {},
    )


def build_task(
    model: LoadedModel,
    backend: str = "onnxruntime",
    threads: int = 1,
    cache_dir: Path | None = None,
    spinning: bool = False,
) -> Task:
    """Create and load the engine for `model` and wrap it in its task. `backend` is the configured one
    (onnxruntime or tensorrt); a TensorFlow Lite model runs on `tflite` (see `backend_for_model`)."""
    backend = backend_for_model(model, backend)
    engine = create_engine(backend, engine_config_for(model, threads, cache_dir, spinning))
    engine.load()
    log.info("model %s (%s) ready on %s", model.ref, model.manifest.task, engine.describe())
    return create_task(model, engine)


def load_model_from_settings(settings: VisionSettings, module_file: str | Path | None = None) -> LoadedModel:
    """The model MODEL_NAME/MODEL_VERSION from MODEL_REPOSITORY (default: the bundled models)."""
    root = settings.model_repository
    if root is None:
        if module_file is None:
            raise ValueError("MODEL_REPOSITORY is not set and no module path was given to find bundled models")
        root = (Path(module_file).resolve().parent / BUNDLED_MODELS_FROM_MODULE).resolve()
    return ModelRepository(root).load(settings.model_name, settings.model_version)


def build_task_from_settings(settings: VisionSettings, module_file: str | Path | None = None) -> Task:
    """The task a module's settings describe: model, backend choice (USE_TENSOR_RT and fallback), threads."""
    model = load_model_from_settings(settings, module_file)
    backend = choose_backend(settings.use_tensor_rt, settings.tensorrt_fallback)
    return build_task(model, backend, settings.resolved_threads(), settings.engine_cache_dir)
