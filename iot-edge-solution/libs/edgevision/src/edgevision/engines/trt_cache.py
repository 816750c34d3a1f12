"""On-disk cache of serialised TensorRT engines.

Building a TensorRT engine from ONNX takes from seconds to many minutes on a Jetson, so the plan is stored
and reused. A plan is only valid for the exact model, TensorRT version, GPU (the board, not only its
architecture: Orin Nano, NX and AGX all report compute capability 8.7), precision and shape range it was built
for; all of them go into the cache key, so a change in any one of them misses the cache instead of loading a
plan that TensorRT would reject (or, worse, accept with other shapes). Beside each plan, a small JSON file keeps
what the build decided (the precision it built in), so a cache hit can report it.

This module imports nothing from TensorRT or CUDA: the caller passes the version and the GPU's facts in,
and hands over `deserialize`/`build` callables, so every rule here is unit-tested on any laptop.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO, TypeVar

from edgevision.engines.base import EngineLoadError

log = logging.getLogger(__name__)

# Bumped when the key recipe or the file layout changes, so older files are simply never looked up again.
CACHE_FORMAT_VERSION = 2
CACHE_SUFFIX = ".engine"
INFO_SUFFIX = ".json"


T = TypeVar("T")

Shape = Sequence[int]
ShapeRange = tuple[Shape, Shape, Shape]
PlanBytes = bytes | bytearray | memoryview


def engine_cache_key(  # pylint: disable=too-many-arguments
    onnx_sha256: str,
    tensorrt_version: str,
    compute_capability: tuple[int, int],
    precision: str,
    input_shapes: Mapping[str, Shape],
    dynamic_shapes: Mapping[str, ShapeRange],
    *,
    gpu_name: str,
    gpu_memory_bytes: int,
) -> str:
    """The hex SHA-256 naming one plan: equal for equal ingredients, different when any one differs.

    The ingredients are serialised as canonical JSON (sorted keys, shapes as lists of ints), so dict order and
    tuple-versus-list make no difference while any real change does. The shapes are the configured ones (not
    the resolved profiles), which the profiles are a deterministic function of, given the same ONNX file. The
    GPU's name and memory size (as the CUDA driver reports them) tell apart boards of one architecture.
    """
    ingredients = {
        "format": CACHE_FORMAT_VERSION,
        "onnx_sha256": onnx_sha256,
        "tensorrt": tensorrt_version,
        "compute_capability": [int(compute_capability[0]), int(compute_capability[1])],
        "gpu_name": gpu_name,
        "gpu_memory_bytes": int(gpu_memory_bytes),
        "precision": precision,
        "input_shapes": {name: [int(d) for d in shape] for name, shape in input_shapes.items()},
        "dynamic_shapes": {
            name: [[int(d) for d in shape] for shape in shape_range] for name, shape_range in dynamic_shapes.items()
        },
    }
    canonical = json.dumps(ingredients, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def default_cache_dir(model_path: Path) -> Path:
    """`<model>.trt-cache/` next to the model, e.g. `model.onnx` -> `model.onnx.trt-cache/`."""
    return model_path.with_name(model_path.name + ".trt-cache")


def write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write a file so that readers see the old file or the complete new one, never a part.

    `write` fills a temporary file in the same directory (so the rename stays on one file system); the data
    is flushed and fsync'ed before `os.replace` puts it in place. When `write` (or anything after it) fails,
    the temporary file is removed and the error propagates.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp_path = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself survive a power cut (Jetsons get unplugged); not possible on every OS.
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


class EngineCache:
    """Serialised engines in one directory, one file per key."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path_for(self, key: str) -> Path:
        """Where the plan for `key` lives (whether or not it exists yet)."""
        return self.directory / f"{key}{CACHE_SUFFIX}"

    def info_path_for(self, key: str) -> Path:
        """Where the facts about the plan for `key` (e.g. the precision it was built in) live."""
        return self.directory / f"{key}{INFO_SUFFIX}"

    def write_info(self, key: str, info: Mapping[str, object]) -> None:
        """Store facts about a plan beside it, atomically; failing to is only a warning (they are reports)."""
        data = json.dumps(dict(info), sort_keys=True).encode("utf-8")
        try:
            write_atomic(self.info_path_for(key), lambda f: f.write(data))
        except OSError as e:
            log.warning("could not write %s: %s", self.info_path_for(key), e)

    def read_info(self, key: str) -> dict[str, object]:
        """The facts stored beside the plan for `key`; {} when there are none or they cannot be read."""
        try:
            info = json.loads(self.info_path_for(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    def read(self, key: str) -> bytes | None:
        """The stored plan, or None when there is none or it cannot be read (then it is rebuilt)."""
        path = self.path_for(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            log.warning("cannot read the cached TensorRT engine %s: %s", path, e)
            return None

    def write(self, key: str, data: PlanBytes) -> Path:
        """Store a plan atomically; returns its path."""
        path = self.path_for(key)
        write_atomic(path, lambda f: f.write(data))
        return path

    def discard(self, key: str) -> None:
        """Remove the plan for `key` if there is one; a plan that cannot be removed is only logged, since the
        rebuilt one replaces it anyway when the directory is writable."""
        for path in (self.path_for(key), self.info_path_for(key)):
            try:
                path.unlink(missing_ok=True)
            except OSError as e:
                log.warning("cannot delete the cached TensorRT engine %s: %s", path, e)

    def load_or_build(
        self,
        key: str,
        deserialize: Callable[[bytes], T | None],
        build: Callable[[], PlanBytes],
    ) -> T:
        """Return the deserialised engine for `key`, building (and caching) it when needed.

        A cached plan that fails to deserialise (`deserialize` raises or returns None: a corrupt file, or one
        from an incompatible TensorRT) is logged, deleted and rebuilt. A fresh plan is deserialised before it
        is cached, so a plan that cannot be loaded is never stored. Failing to write the cache only costs the
        next start-up a rebuild, so it is a warning. Errors from `build` propagate; a fresh plan that cannot
        be deserialised raises EngineLoadError.
        """
        path = self.path_for(key)
        cached = self.read(key)
        if cached is not None:
            engine = self._deserialize_cached(path, cached, deserialize)
            if engine is not None:
                log.info("loaded the cached TensorRT engine %s", path)
                return engine
            self.discard(key)
        else:
            log.info("no cached TensorRT engine at %s; building one", path)

        plan = bytes(build())
        engine = deserialize(plan)
        if engine is None:
            raise EngineLoadError("the freshly built TensorRT engine could not be deserialised")
        try:
            self.write(key, plan)
        except OSError as e:
            log.warning("could not write the TensorRT engine cache %s: %s", path, e)
        else:
            log.info("cached the TensorRT engine at %s", path)
        return engine

    @staticmethod
    def _deserialize_cached(path: Path, cached: bytes, deserialize: Callable[[bytes], T | None]) -> T | None:
        try:
            engine = deserialize(cached)
        except Exception as e:  # pylint: disable=broad-exception-caught  # any failure means "rebuild"
            log.warning("the cached TensorRT engine %s cannot be loaded (%s); deleting it and rebuilding", path, e)
            return None
        if engine is None:
            log.warning("the cached TensorRT engine %s cannot be loaded; deleting it and rebuilding", path)
        return engine
