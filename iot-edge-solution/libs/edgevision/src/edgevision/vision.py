"""Wiring: model repository + engine backend + task, from settings or from explicit arguments."""

from __future__ import annotations

import logging
from pathlib import Path

from edgevision.config import VisionSettings
from edgevision.engines import EngineConfig, create_engine
from edgevision.engines.selection import choose_backend
from edgevision.models import LoadedModel, ModelRepository
from edgevision.tasks import Task, create_task

log = logging.getLogger(__name__)

# Where the bundled models sit relative to a module's main.py, both in the repo and in the images:
# <solution>/modules/<name>/main.py -> <solution>/models
BUNDLED_MODELS_FROM_MODULE = Path("..", "..", "models")


def engine_config_for(
    model: LoadedModel, threads: int, cache_dir: Path | None = None, spinning: bool = False
) -> EngineConfig:
    """Engine settings from a manifest; dynamic image axes get a shape range for backends that need one."""
    spec = model.manifest.input
    shape = tuple(spec.shape)
    dynamic = {}
    if any(d == -1 for d in shape):
        resize = model.manifest.preprocess.resize
        largest = resize.max_side_len or 2048
        typical = resize.limit_shorter_side or resize.size or 640
        channels_first = model.manifest.preprocess.layout == "NCHW"

        def concrete(side: int) -> tuple[int, ...]:
            spatial = (side, side)
            return (1, 3, *spatial) if channels_first else (1, *spatial, 3)

        dynamic[spec.name] = (concrete(32), concrete(typical), concrete(largest))
    return EngineConfig(
        model_path=model.model_path,
        input_shapes={spec.name: shape},
        output_names=tuple(model.manifest.outputs),
        intra_op_threads=threads,
        intra_op_spinning=spinning,
        cache_dir=cache_dir,
        dynamic_shapes=dynamic,
    )


def build_task(
    model: LoadedModel,
    backend: str = "onnxruntime",
    threads: int = 1,
    cache_dir: Path | None = None,
    spinning: bool = False,
) -> Task:
    """Create and load the engine for `model` and wrap it in its task."""
    engine = create_engine(backend, engine_config_for(model, threads, cache_dir, spinning))
    engine.load()
    log.info("model %s (%s) ready on %s", model.ref, model.manifest.task, backend)
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
