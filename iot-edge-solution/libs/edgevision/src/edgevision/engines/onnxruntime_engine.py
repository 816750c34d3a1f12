"""ONNX Runtime on the CPU."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgevision.engines.base import Engine, EngineConfig, EngineError, EngineLoadError, EngineUnavailableError

log = logging.getLogger(__name__)


class OnnxRuntimeEngine(Engine):
    """CPU inference with ONNX Runtime; `intra_op_threads` 0 lets ONNX Runtime choose."""

    name = "onnxruntime"
    concurrent_infer = True  # InferenceSession.run is thread-safe

    def __init__(self, config: EngineConfig) -> None:
        super().__init__(config)
        self._session = None
        self._outputs: list[str] = []

    @staticmethod
    def check_available() -> None:
        """Raise EngineUnavailableError when onnxruntime is not installed."""
        try:
            import onnxruntime  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
        except ImportError as e:
            raise EngineUnavailableError(
                "the onnxruntime backend needs the 'onnxruntime' package: pip install onnxruntime"
            ) from e

    def load(self) -> None:
        import onnxruntime as ort  # pylint: disable=import-outside-toplevel

        path = self.config.model_path
        if not path.is_file():
            raise EngineLoadError(f"model file not found: {path}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.config.intra_op_threads
        options.inter_op_num_threads = 1
        spinning = "1" if self.config.intra_op_spinning else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        options.add_session_config_entry("session.inter_op.allow_spinning", spinning)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own untyped errors for corrupt files
            raise EngineLoadError(f"ONNX Runtime cannot load {path}: {e}") from e
        available = [o.name for o in self._session.get_outputs()]
        wanted = list(self.config.output_names) or available
        missing = [name for name in wanted if name not in available]
        if missing:
            raise EngineLoadError(f"{path} has no output(s) {missing}; it has {available}")
        self._outputs = wanted
        threads = self.config.intra_op_threads
        log.info(
            "loaded %s with ONNX Runtime (intra-op threads: %s, spinning: %s)",
            path.name,
            threads or "ONNX Runtime's default",
            self.config.intra_op_spinning,
        )

    def _require_session(self):
        if self._session is None:
            raise EngineError("engine is not loaded: call load() first")
        return self._session

    def infer(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        session = self._require_session()
        try:
            return session.run(self._outputs, inputs)
        except Exception as e:
            raise EngineError(f"inference failed: {e}") from e

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self._require_session().get_inputs()]

    @property
    def output_names(self) -> list[str]:
        self._require_session()
        return list(self._outputs)

    def describe(self) -> dict[str, Any]:
        """Backend, ONNX Runtime version and device (the CPU)."""
        import onnxruntime as ort  # pylint: disable=import-outside-toplevel

        return {"backend": self.name, "onnxruntime": ort.__version__, "device": "CPU"}

    def close(self) -> None:
        self._session = None
