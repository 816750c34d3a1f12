"""Small TensorFlow Lite models written in a test, with the FlatBuffer schema LiteRT ships.

`ai_edge_litert.schema_py_generated` (in the `ai-edge-litert` wheel) and `flatbuffers` (its dependency) write
real `.tflite` files that LiteRT loads and runs like any converted model: the engine contract model, a quantised
model, a model with an operator LiteRT does not have, and a tiny classifier. No TensorFlow is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _schema() -> Any:
    from ai_edge_litert import schema_py_generated  # pylint: disable=import-outside-toplevel

    return schema_py_generated


class _Graph:
    """One subgraph being written: tensors, constant buffers and operators."""

    def __init__(self) -> None:
        self.s = _schema()
        self.tensors: list[Any] = []
        self.buffers: list[Any] = [self.s.BufferT()]  # buffer 0: empty, by convention
        self.operators: list[Any] = []
        self.opcodes: list[tuple[int, str | None]] = []

    def tensor(
        self,
        name: str,
        shape: list[int],
        dtype: str = "float32",
        data: np.ndarray | None = None,
        quantisation: tuple[float, int] | None = None,
    ) -> int:
        """Add a tensor (a constant when `data` is given); -1 in `shape` marks a dynamic axis."""
        t = self.s.TensorT()
        t.name = name
        t.shape = [1 if d < 0 else d for d in shape]
        if any(d < 0 for d in shape):
            t.shapeSignature = list(shape)
        t.type = {"float32": self.s.TensorType.FLOAT32, "uint8": self.s.TensorType.UINT8}[dtype]
        t.buffer = 0
        if data is not None:
            buffer = self.s.BufferT()
            buffer.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
            self.buffers.append(buffer)
            t.buffer = len(self.buffers) - 1
        if quantisation is not None:
            q = self.s.QuantizationParametersT()
            q.scale, q.zeroPoint = [float(quantisation[0])], [int(quantisation[1])]
            t.quantization = q
        self.tensors.append(t)
        return len(self.tensors) - 1

    def op(
        self,
        code: int,
        inputs: list[int],
        outputs: list[int],
        options: tuple[int, Any] | None = None,
        custom: str | None = None,
    ) -> None:
        """Add an operator by its builtin code (CUSTOM with `custom` naming it)."""
        key = (code, custom)
        if key not in self.opcodes:
            self.opcodes.append(key)
        o = self.s.OperatorT()
        o.opcodeIndex = self.opcodes.index(key)
        o.inputs, o.outputs = inputs, outputs
        if options is not None:
            o.builtinOptionsType, o.builtinOptions = options
        self.operators.append(o)

    def write(self, path: Path, inputs: list[int], outputs: list[int]) -> Path:
        """Serialise with the TFL3 identifier."""
        import flatbuffers  # pylint: disable=import-outside-toplevel

        s = self.s
        subgraph = s.SubGraphT()
        subgraph.tensors, subgraph.inputs, subgraph.outputs = self.tensors, inputs, outputs
        subgraph.operators, subgraph.name = self.operators, "main"
        model = s.ModelT()
        model.version, model.description = 3, "edgevision test model"
        model.subgraphs, model.buffers = [subgraph], self.buffers
        codes = []
        for code, custom in self.opcodes:
            c = s.OperatorCodeT()
            c.builtinCode, c.deprecatedBuiltinCode, c.version = code, min(code, 127), 1
            c.customCode = custom
            codes.append(c)
        model.operatorCodes = codes
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        path.write_bytes(bytes(builder.Output()))
        return path


def contract_model(path: Path, weights: np.ndarray, bias: np.ndarray) -> Path:
    """x [batch, 4] -> y = relu(x @ weights + bias) [batch, 3], scaled = 2 * x [batch, 4]; batch dynamic."""
    g = _Graph()
    s = g.s
    x = g.tensor("x", [-1, 4])
    w = g.tensor("W", [3, 4], data=np.ascontiguousarray(weights.T, dtype=np.float32))
    b = g.tensor("b", [3], data=bias.astype(np.float32))
    two = g.tensor("two", [1], data=np.array([2.0], dtype=np.float32))
    y = g.tensor("y", [-1, 3])
    scaled = g.tensor("scaled", [-1, 4])
    fc = s.FullyConnectedOptionsT()
    fc.fusedActivationFunction = s.ActivationFunctionType.RELU
    g.op(s.BuiltinOperator.FULLY_CONNECTED, [x, w, b], [y], (s.BuiltinOptions.FullyConnectedOptions, fc))
    g.op(s.BuiltinOperator.MUL, [x, two], [scaled], (s.BuiltinOptions.MulOptions, s.MulOptionsT()))
    return g.write(path, [x], [y, scaled])


def quantised_model(path: Path) -> Path:
    """A uint8 input q (scale 0.5, zero point 128) -> `real` = dequantize(q) (float32) and
    `requantised` = quantize(real) (uint8, scale 0.25, zero point 100): both read back as x."""
    g = _Graph()
    s = g.s
    q = g.tensor("q", [1, 4], "uint8", quantisation=(0.5, 128))
    real = g.tensor("real", [1, 4])
    requantised = g.tensor("requantised", [1, 4], "uint8", quantisation=(0.25, 100))
    g.op(s.BuiltinOperator.DEQUANTIZE, [q], [real])
    g.op(s.BuiltinOperator.QUANTIZE, [real], [requantised])
    return g.write(path, [q], [real, requantised])


def unsupported_op_model(path: Path, op_name: str = "EdgevisionNoSuchOp") -> Path:
    """x [1, 4] -> a custom operator LiteRT does not have."""
    g = _Graph()
    x = g.tensor("x", [1, 4])
    out = g.tensor("out", [1, 4])
    g.op(g.s.BuiltinOperator.CUSTOM, [x], [out], custom=op_name)
    return g.write(path, [x], [out])


def classifier_model(path: Path, side: int = 8, classes: int = 3) -> Path:  # pylint: disable=too-many-locals
    """An image classifier [1, side, side, 3] float32 (NHWC) -> `probabilities` [1, classes]: class k scores
    the mean of colour channel k (blue/green/red order of the input's channels), through a softmax."""
    g = _Graph()
    s = g.s
    image = g.tensor("image", [1, side, side, 3])
    flat = g.tensor("flat", [1, side * side * 3])
    shape = g.tensor("flat_shape", [2], data=np.array([1, side * side * 3], dtype=np.int32))
    g.tensors[shape].type = s.TensorType.INT32
    # weights [classes, side*side*3]: channel k of every pixel, averaged, times 10 (a clear winner)
    weights = np.zeros((classes, side * side * 3), dtype=np.float32)
    for k in range(classes):
        weights[k, k % 3 :: 3] = 10.0 / (side * side)
    w = g.tensor("class_weights", [classes, side * side * 3], data=weights)
    b = g.tensor("class_bias", [classes], data=np.zeros(classes, dtype=np.float32))
    logits = g.tensor("logits", [1, classes])
    probabilities = g.tensor("probabilities", [1, classes])
    reshape = s.ReshapeOptionsT()
    reshape.newShape = [1, side * side * 3]
    g.op(s.BuiltinOperator.RESHAPE, [image, shape], [flat], (s.BuiltinOptions.ReshapeOptions, reshape))
    g.op(
        s.BuiltinOperator.FULLY_CONNECTED,
        [flat, w, b],
        [logits],
        (s.BuiltinOptions.FullyConnectedOptions, s.FullyConnectedOptionsT()),
    )
    softmax = s.SoftmaxOptionsT()
    softmax.beta = 1.0
    g.op(s.BuiltinOperator.SOFTMAX, [logits], [probabilities], (s.BuiltinOptions.SoftmaxOptions, softmax))
    return g.write(path, [image], [probabilities])
