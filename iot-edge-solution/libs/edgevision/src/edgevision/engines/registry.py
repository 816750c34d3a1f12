"""Backend name -> module path. A backend's module is imported only when that backend is selected, so a CPU
image never imports TensorRT or pycuda."""

from __future__ import annotations

import importlib

from edgevision.engines.base import Engine, EngineConfig, EngineError, EngineUnavailableError

# name -> "module:class"
BACKENDS: dict[str, str] = {
    "onnxruntime": "edgevision.engines.onnxruntime_engine:OnnxRuntimeEngine",
    "tensorrt": "edgevision.engines.tensorrt_engine:TensorRTEngine",
}


def _engine_class(backend: str) -> type[Engine]:
    try:
        target = BACKENDS[backend]
    except KeyError as e:
        raise EngineError(f"unknown engine backend {backend!r}; known: {', '.join(sorted(BACKENDS))}") from e
    module_name, class_name = target.split(":")
    module = importlib.import_module(module_name)
    return getattr(module, class_name)


def create_engine(backend: str, config: EngineConfig) -> Engine:
    """Build (not load) the engine for `backend`; raises EngineUnavailableError when it cannot run here."""
    engine_class = _engine_class(backend)
    check = getattr(engine_class, "check_available", None)
    if check is not None:
        check()
    return engine_class(config)


def available_backends() -> list[str]:
    """The backends that can run on this machine."""
    names = []
    for name in BACKENDS:
        try:
            engine_class = _engine_class(name)
            check = getattr(engine_class, "check_available", None)
            if check is not None:
                check()
        except EngineUnavailableError:
            continue
        names.append(name)
    return names
