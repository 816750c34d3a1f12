"""The `Engine` interface every backend implements, its settings, and its errors."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgevision.errors import EdgeVisionError


class EngineError(EdgeVisionError):
    """An inference engine failed."""


class EngineUnavailableError(EngineError):
    """The selected backend cannot run here (its SDK or the hardware it needs is missing)."""


class EngineLoadError(EngineError):
    """The model file could not be loaded by the backend (missing, corrupt or unsupported)."""


@dataclass(frozen=True)
class EngineConfig:
    """What a backend needs to load one model.

    `input_shapes` maps an input name to its shape; -1 marks a dynamic axis. Backends that need concrete shapes
    (TensorRT optimisation profiles) take min/opt/max from `dynamic_shapes` when an axis is dynamic.
    """

    model_path: Path
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    output_names: tuple[str, ...] = ()
    intra_op_threads: int = 0
    # Let idle intra-op threads spin waiting for the next run (ONNX Runtime's own default) instead of sleeping.
    # Off: spinning threads take the cores that capture and pre-processing need, and collapse on a busy machine.
    intra_op_spinning: bool = False
    precision: str = "fp16"
    cache_dir: Path | None = None
    # input name -> (min, opt, max) shapes, for backends that build for a shape range.
    dynamic_shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)


class Engine(abc.ABC):
    """Runs one model: `load()` once, `infer()` many times (from one thread at a time
    unless `concurrent_infer`), `close()` at the end."""

    name: str = "abstract"
    # True when `infer` may run on several threads at once (ONNX Runtime sessions); False makes the model manager
    # serialise calls (TensorRT execution contexts and their device buffers belong to one caller at a time).
    concurrent_infer: bool = False

    def __init__(self, config: EngineConfig) -> None:
        self.config = config

    @abc.abstractmethod
    def load(self) -> None:
        """Load the model; raises EngineLoadError with the reason when it cannot."""

    @abc.abstractmethod
    def infer(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run the model on named inputs; returns the outputs in the order of `output_names`."""

    @property
    @abc.abstractmethod
    def input_names(self) -> list[str]:
        """The model's input tensor names."""

    @property
    @abc.abstractmethod
    def output_names(self) -> list[str]:
        """The output tensor names, in the order `infer` returns them."""

    def close(self) -> None:
        """Release what `load` acquired; safe to call twice."""

    def describe(self) -> dict[str, Any]:
        """What runs the model, for logs and a module's reported properties: at least {"backend": name};
        backends add their version, device and precision once loaded."""
        return {"backend": self.name}

    def __enter__(self) -> Engine:
        self.load()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
