"""Backend name -> module path. A backend's module is imported only when that backend is selected, so a CPU
image never imports TensorRT or pycuda."""

from __future__ import annotations

import importlib

from edgevision.engines.base import Engine, EngineConfig, EngineError, EngineUnavailableError

# name -> "module:class"
BACKENDS: dict[str, str] = {
    "onnxruntime": "edgevision.engines.onnxruntime_engine:OnnxRuntimeEngine",
    "tensorrt": "edgevision.engines.tensorrt_engine:TensorRTEngine",
    "tflite": "edgevision.engines.tflite_engine:TFLiteEngine",
}


def _engine_class(backend: str) -> type[Engine]:
    try:
        target = BACKENDS[backend]
    except KeyError as e:
        raise EngineError(f"unknown engine backend {backend!r}; known: {', '.join(sorted(BACKENDS))}") from e
    module_name, class_name = target.split(":")
    module = importlib.import_module(module_name)
    return getattr(module, class_name)


def check_backend(backend: str) -> None:
    """Raise EngineUnavailableError (with the reason) when `backend` cannot run here; EngineError for an unknown
    name. Imports only that backend's module, which imports its SDK only inside `check_available`."""
    check = getattr(_engine_class(backend), "check_available", None)
    if check is not None:
        check()


def create_engine(backend: str, config: EngineConfig) -> Engine:
    """Build (not load) the engine for `backend`; raises EngineUnavailableError when it cannot run here."""
    check_backend(backend)
    return _engine_class(backend)(config)


def available_backends() -> list[str]:
    """The backends that can run on this machine."""
    names = []
    for name in BACKENDS:
        try:
            check_backend(name)
        except EngineUnavailableError:
            continue
        names.append(name)
    return names
