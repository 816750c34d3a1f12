"""TensorFlow Lite models (`.tflite`) on the CPU with LiteRT (PyPI `ai-edge-litert`, the optional extra `tflite`).

LiteRT is imported only when a `.tflite` model is loaded, so images without it run every ONNX model. Its aarch64
wheels need glibc 2.34 (JetPack 6, not JetPack 5). Quantised inputs and outputs are converted with the tensor's
own scale and zero point, so a task feeds float32 or uint8 as its manifest says and gets float outputs back.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from edgevision.engines.base import Engine, EngineConfig, EngineError, EngineLoadError, EngineUnavailableError

log = logging.getLogger(__name__)

PACKAGE = "ai-edge-litert"
PACKAGE_PIN = "ai-edge-litert==2.3.0"
# A FlatBuffer's file identifier sits at bytes 4..8; every TFLite model has this one.
TFLITE_IDENTIFIER = b"TFL3"
# Words in LiteRT's errors that mean the model uses an operator this build does not have.
_UNSUPPORTED_OP_HINTS = ("unresolved custom op", "didn't find op for builtin opcode", "op is not supported")


def _litert() -> Any:
    """The `ai_edge_litert.interpreter` module, or EngineUnavailableError naming the package."""
    try:
        from ai_edge_litert import interpreter  # pylint: disable=import-outside-toplevel
    except ImportError as e:
        raise EngineUnavailableError(
            f"TensorFlow Lite models need the '{PACKAGE}' package (LiteRT), which is not installed: "
            f"pip install 'edgevision[tflite]' (or {PACKAGE_PIN}); its Linux wheels need glibc >= 2.34 "
            f"(JetPack 6, not JetPack 5). ({e})"
        ) from e
    return interpreter


def is_tflite_file(path: Any) -> bool:
    """True when the file carries the TFLite FlatBuffer identifier."""
    try:
        with open(path, "rb") as handle:
            return handle.read(8)[4:8] == TFLITE_IDENTIFIER
    except OSError:
        return False


def _quantisation(detail: dict[str, Any]) -> tuple[float, int] | None:
    """(scale, zero point) of a per-tensor quantised integer tensor; None for float tensors."""
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if np.dtype(detail["dtype"]).kind not in "iu" or not scale:
        return None
    return float(scale), int(zero_point)


class TFLiteEngine(Engine):
    """One LiteRT interpreter; `intra_op_threads` 0 lets LiteRT choose (the same setting as ONNX Runtime's)."""

    name = "tflite"
    concurrent_infer = False  # an Interpreter and its tensors belong to one caller at a time

    def __init__(self, config: EngineConfig) -> None:
        super().__init__(config)
        self._interpreter: Any = None
        self._inputs: dict[str, dict[str, Any]] = {}
        self._outputs: list[dict[str, Any]] = []
        self._delegate = "default"
        self._lock = threading.Lock()

    @staticmethod
    def check_available() -> None:
        """Raise EngineUnavailableError when ai-edge-litert is not installed (or cannot load here)."""
        _litert()

    def _interpreter_for(self, litert: Any, default_delegates: bool) -> Any:
        threads = self.config.intra_op_threads or None
        kwargs: dict[str, Any] = {"model_path": str(self.config.model_path), "num_threads": threads}
        if not default_delegates:
            kwargs["experimental_op_resolver_type"] = litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        interpreter = litert.Interpreter(**kwargs)
        self._resize_inputs(interpreter)
        interpreter.allocate_tensors()
        return interpreter

    def _resize_inputs(self, interpreter: Any) -> None:
        """Fix the model's open input axes to the sizes the manifest gives (a concrete size only)."""
        for detail in interpreter.get_input_details():
            wanted = self.config.input_shapes.get(detail["name"])
            signature = [int(d) for d in detail.get("shape_signature", detail["shape"])]
            if wanted and -1 in signature and len(wanted) == len(signature) and all(d > 0 for d in wanted):
                interpreter.resize_tensor_input(detail["index"], list(wanted))

    def load(self) -> None:
        path = self.config.model_path
        if not path.is_file():
            raise EngineLoadError(f"model file not found: {path}")
        if not is_tflite_file(path):
            raise EngineLoadError(
                f"{path} is not a TensorFlow Lite model: it lacks the '{TFLITE_IDENTIFIER.decode()}' FlatBuffer "
                "identifier (corrupt, truncated, or another format)"
            )
        litert = _litert()
        try:
            interpreter = self._interpreter_for(litert, default_delegates=True)
        except (RuntimeError, ValueError) as first:
            # XNNPACK (the default delegate) refuses some graphs; LiteRT's own kernels may still run them.
            log.warning("LiteRT's default delegate cannot take %s (%s); retrying without it", path.name, first)
            try:
                interpreter = self._interpreter_for(litert, default_delegates=False)
            except (RuntimeError, ValueError) as second:
                raise self._load_error(second) from second
            self._delegate = "none (LiteRT's built-in kernels)"
        else:
            self._delegate = "default (XNNPACK)"
        self._check_inputs(interpreter)
        self._outputs = self._pick_outputs(interpreter)
        self._interpreter = interpreter
        log.info(
            "loaded %s with LiteRT (threads: %s, delegate: %s)",
            path.name,
            self.config.intra_op_threads or "LiteRT's default",
            self._delegate,
        )

    def _load_error(self, error: Exception) -> EngineLoadError:
        text = str(error)
        path = self.config.model_path
        if any(hint in text.lower() for hint in _UNSUPPORTED_OP_HINTS):
            return EngineLoadError(f"{path} uses operators this LiteRT ({PACKAGE}) cannot run: {text.strip()}")
        return EngineLoadError(f"LiteRT cannot load {path}: {text.strip()}")

    def _check_inputs(self, interpreter: Any) -> None:
        details = {d["name"]: d for d in interpreter.get_input_details()}
        path = self.config.model_path
        for name, wanted in self.config.input_shapes.items():
            if name not in details:
                raise EngineLoadError(f"{path} has no input {name!r} (named in model.json); it has {sorted(details)}")
            actual = [int(d) for d in details[name]["shape"]]
            if len(actual) != len(wanted) or any(w >= 0 and w != a for w, a in zip(wanted, actual)):
                raise EngineLoadError(
                    f"model.json gives input {name!r} the shape {list(wanted)}; the TFLite model's is {actual}"
                )
        self._inputs = details

    def _pick_outputs(self, interpreter: Any) -> list[dict[str, Any]]:
        details = interpreter.get_output_details()
        by_name = {d["name"]: d for d in details}
        wanted = list(self.config.output_names) or [d["name"] for d in details]
        missing = [name for name in wanted if name not in by_name]
        if missing:
            raise EngineLoadError(f"{self.config.model_path} has no output(s) {missing}; it has {sorted(by_name)}")
        return [by_name[name] for name in wanted]

    def _require(self) -> Any:
        if self._interpreter is None:
            raise EngineError("engine is not loaded: call load() first")
        return self._interpreter

    def _fit_shapes(self, interpreter: Any, inputs: dict[str, np.ndarray]) -> None:
        """Check names and shapes; an input along a dynamic axis (-1 in the model's signature) of another size
        resizes the interpreter's tensors."""
        if set(inputs) != set(self._inputs):
            raise EngineError(f"inputs {sorted(inputs)} do not match the model's {sorted(self._inputs)}")
        resized = False
        for name, array in inputs.items():
            detail = self._inputs[name]
            current = tuple(int(d) for d in detail["shape"])
            if tuple(array.shape) == current:
                continue
            signature = [int(d) for d in detail.get("shape_signature", detail["shape"])]
            fits = len(signature) == array.ndim and all(s in (-1, a) for s, a in zip(signature, array.shape))
            if not fits:
                raise EngineError(f"input {name!r} has shape {list(array.shape)}; the model wants {signature}")
            interpreter.resize_tensor_input(detail["index"], list(array.shape))
            resized = True
        if resized:
            interpreter.allocate_tensors()
            self._inputs = {d["name"]: d for d in interpreter.get_input_details()}
            by_index = {d["index"]: d for d in interpreter.get_output_details()}
            self._outputs = [by_index[d["index"]] for d in self._outputs]

    def _to_input(self, name: str, array: np.ndarray) -> np.ndarray:
        """The array in the input tensor's type: quantised with its scale and zero point, or cast."""
        detail = self._inputs[name]
        dtype = np.dtype(detail["dtype"])
        if array.dtype == dtype:
            return array
        quantised = _quantisation(detail)
        if quantised is not None and array.dtype.kind == "f":
            scale, zero_point = quantised
            info = np.iinfo(dtype)
            return np.clip(np.rint(array / scale + zero_point), info.min, info.max).astype(dtype)
        return array.astype(dtype)

    def infer(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self._lock:
            interpreter = self._require()
            arrays = {name: np.asarray(array) for name, array in inputs.items()}
            self._fit_shapes(interpreter, arrays)
            try:
                for name, array in arrays.items():
                    interpreter.set_tensor(self._inputs[name]["index"], self._to_input(name, array))
                interpreter.invoke()
                results = []
                for detail in self._outputs:
                    value = interpreter.get_tensor(detail["index"])
                    quantised = _quantisation(detail)
                    if quantised is not None:
                        scale, zero_point = quantised
                        value = (value.astype(np.float32) - zero_point) * scale
                    results.append(np.array(value, copy=True))
            except Exception as e:  # LiteRT raises ValueError/RuntimeError with its own text
                raise EngineError(f"inference failed: {e}") from e
        return results

    @property
    def input_names(self) -> list[str]:
        self._require()
        return list(self._inputs)

    @property
    def output_names(self) -> list[str]:
        self._require()
        return [d["name"] for d in self._outputs]

    def output_details(self) -> list[dict[str, Any]]:
        """Name, shape and dtype of each output, in `output_names` order (for heads that map by shape)."""
        self._require()
        return [
            {"name": d["name"], "shape": [int(x) for x in d["shape"]], "dtype": str(d["dtype"])} for d in self._outputs
        ]

    def describe(self) -> dict[str, Any]:
        """Backend, LiteRT version, device (the CPU) and the delegate in use."""
        try:
            import ai_edge_litert  # pylint: disable=import-outside-toplevel

            version = getattr(ai_edge_litert, "__version__", "unknown")
        except ImportError:
            version = "missing"
        return {"backend": self.name, "ai-edge-litert": version, "device": "CPU", "delegate": self._delegate}

    def close(self) -> None:
        with self._lock:
            self._interpreter = None
