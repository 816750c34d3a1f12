"""The input shapes an ONNX file declares, as the backends that build for shapes (TensorRT) will see them.

An axis is a number when the graph fixes it and -1 when it is symbolic ("batch") or unknown. Read with the
`onnx` package when it is installed (a protobuf read, no operator resolved), otherwise from ONNX Runtime's
session metadata (always installed: a hard dependency of the library).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgevision.engines.base import EngineLoadError

Shape = tuple[int, ...]


def onnx_input_shapes(path: Path) -> dict[str, Shape | None]:
    """Input name -> shape (-1 for a symbolic or unknown axis; None when the graph gives no shape at all).

    Initializers listed as graph inputs (older exporters do that) are left out: they are weights, not inputs.
    Raises EngineLoadError naming the file when it cannot be read as an ONNX model.
    """
    if not path.is_file():
        raise EngineLoadError(f"model file not found: {path}")
    try:
        import onnx  # pylint: disable=import-outside-toplevel
    except ImportError:
        return _from_onnxruntime(path)
    return _from_onnx(onnx, path)


def _from_onnx(onnx: Any, path: Path) -> dict[str, Shape | None]:
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends
        raise EngineLoadError(f"cannot read the inputs of {path} as an ONNX model: {e}") from e
    weights = {initializer.name for initializer in model.graph.initializer}
    shapes: dict[str, Shape | None] = {}
    for value in model.graph.input:
        if value.name in weights:
            continue
        tensor = value.type.tensor_type
        if not tensor.HasField("shape"):
            shapes[value.name] = None
            continue
        shapes[value.name] = tuple(
            int(dim.dim_value) if dim.HasField("dim_value") and dim.dim_value > 0 else -1 for dim in tensor.shape.dim
        )
    return shapes


def _from_onnxruntime(path: Path) -> dict[str, Shape | None]:
    import onnxruntime as ort  # pylint: disable=import-outside-toplevel

    options = ort.SessionOptions()
    # Only the metadata is wanted: no graph optimisation, one thread, quiet.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own untyped errors
        raise EngineLoadError(f"cannot read the inputs of {path} as an ONNX model: {e}") from e
    return {
        value.name: None
        if value.shape is None
        else tuple(d if isinstance(d, int) and d > 0 else -1 for d in value.shape)
        for value in session.get_inputs()
    }
