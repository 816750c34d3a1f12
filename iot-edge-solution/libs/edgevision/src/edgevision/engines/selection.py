"""Which backend a module runs: `USE_TENSOR_RT` picks TensorRT, and the CPU fallback is opt-in.

A device deployed to run TensorRT that cannot (no GPU, missing SDK) fails loudly by default, because silently
running on the CPU would look like a working deployment at a fraction of the frame rate. Teams that prefer
degraded service to none set `TENSORRT_FALLBACK=True`.
"""

from __future__ import annotations

import logging

from edgevision.engines.base import EngineUnavailableError
from edgevision.engines.registry import check_backend

log = logging.getLogger(__name__)

__all__ = ["ONNXRUNTIME", "TENSORRT", "TFLITE", "check_backend", "choose_backend"]

TENSORRT = "tensorrt"
ONNXRUNTIME = "onnxruntime"
# TensorFlow Lite models run on LiteRT whatever USE_TENSOR_RT says (edgevision.vision.backend_for_model).
TFLITE = "tflite"


def choose_backend(use_tensor_rt: bool, fallback_to_onnxruntime: bool) -> str:
    """The backend name to pass to `create_engine`.

    `use_tensor_rt` False selects ONNX Runtime. True selects TensorRT when it can run here; otherwise it
    raises EngineUnavailableError, unless `fallback_to_onnxruntime` is set: then it warns and selects ONNX
    Runtime.
    """
    if not use_tensor_rt:
        return ONNXRUNTIME
    try:
        check_backend(TENSORRT)
    except EngineUnavailableError as e:
        if not fallback_to_onnxruntime:
            raise EngineUnavailableError(
                f"USE_TENSOR_RT=True but TensorRT cannot run here: {e} Set TENSORRT_FALLBACK=True to fall "
                "back to ONNX Runtime on the CPU, or USE_TENSOR_RT=False to select it."
            ) from e
        log.warning(
            "USE_TENSOR_RT=True but TensorRT cannot run here (%s); TENSORRT_FALLBACK=True, so falling "
            "back to ONNX Runtime on the CPU",
            e,
        )
        return ONNXRUNTIME
    return TENSORRT
