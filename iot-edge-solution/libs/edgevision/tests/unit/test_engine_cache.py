"""The TensorRT engine cache: key recipe, atomic writes, load-or-rebuild rules (no TensorRT needed)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import BinaryIO

import pytest

from edgevision.engines.base import EngineLoadError
from edgevision.engines.trt_cache import (
    EngineCache,
    default_cache_dir,
    engine_cache_key,
    write_atomic,
)
from edgevision.files import sha256_of as file_sha256

BASE = {
    "onnx_sha256": "a" * 64,
    "tensorrt_version": "10.3.0",
    "compute_capability": (8, 7),
    "precision": "fp16",
    "input_shapes": {"images": (-1, 3, 224, 224)},
    "dynamic_shapes": {"images": ((1, 3, 224, 224), (4, 3, 224, 224), (8, 3, 224, 224))},
    "gpu_name": "Orin (nvgpu)",
    "gpu_memory_bytes": 7_620_968_448,
}


def key_with(**changes: object) -> str:
    """The key for BASE with some ingredients replaced."""
    return engine_cache_key(**{**BASE, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ingredient", "value"),
    [
        ("onnx_sha256", "b" * 64),
        ("tensorrt_version", "10.3.1"),
        ("tensorrt_version", "8.6.2"),
        ("compute_capability", (8, 6)),
        ("compute_capability", (7, 2)),
        ("precision", "fp32"),
        ("input_shapes", {"images": (-1, 3, 320, 320)}),
        ("input_shapes", {}),
        ("dynamic_shapes", {"images": ((1, 3, 224, 224), (4, 3, 224, 224), (16, 3, 224, 224))}),
        ("dynamic_shapes", {"images": ((1, 3, 224, 224), (2, 3, 224, 224), (8, 3, 224, 224))}),
        ("dynamic_shapes", {}),
        # Orin Nano 8 GB, Orin NX 16 GB and AGX Orin share compute capability 8.7: name and memory tell them apart.
        ("gpu_name", "NVIDIA Jetson AGX Orin"),
        ("gpu_memory_bytes", 15_655_829_504),
    ],
)
def test_key_changes_with_each_ingredient(ingredient: str, value: object) -> None:
    """Changing any one ingredient gives another key."""
    assert key_with(**{ingredient: value}) != key_with()


def test_key_is_stable_for_equal_ingredients() -> None:
    """Equal values in other containers (lists, not tuples) give the same key."""
    first = key_with()
    # Same values, other containers and dict order: still the same key.
    same = key_with(
        compute_capability=[8, 7],
        input_shapes={"images": [-1, 3, 224, 224]},
        dynamic_shapes={"images": [[1, 3, 224, 224], [4, 3, 224, 224], [8, 3, 224, 224]]},
    )
    assert first == same == key_with()
    assert len(first) == 64 and int(first, 16) >= 0


def test_key_ignores_dict_order_of_inputs() -> None:
    """The order inputs are listed in does not matter."""
    a = key_with(input_shapes={"x": (1, 2), "y": (3, 4)})
    b = key_with(input_shapes={"y": (3, 4), "x": (1, 2)})
    assert a == b


def test_onnx_bytes_change_the_file_hash_and_so_the_key(tmp_path: Path) -> None:
    """Other ONNX bytes, other hash and key; the same bytes again, the same hash."""
    model = tmp_path / "model.onnx"
    model.write_bytes(b"model v1")
    first = file_sha256(model)
    assert first == hashlib.sha256(b"model v1").hexdigest()
    model.write_bytes(b"model v2")
    second = file_sha256(model)
    assert first != second
    assert key_with(onnx_sha256=first) != key_with(onnx_sha256=second)
    model.write_bytes(b"model v1")
    assert file_sha256(model) == first


def test_file_hash_matches_hashlib_for_a_multi_chunk_file(tmp_path: Path) -> None:
    """Chunked hashing equals hashing the whole file at once."""
    data = bytes(range(256)) * 20_000  # > 1 MiB, so more than one chunk
    model = tmp_path / "big.onnx"
    model.write_bytes(data)
    assert file_sha256(model) == hashlib.sha256(data).hexdigest()


def test_default_cache_dir_is_next_to_the_model() -> None:
    """Without cache_dir the plans live in `<model>.trt-cache/`."""
    assert default_cache_dir(Path("/models/cls/1/model.onnx")) == Path("/models/cls/1/model.onnx.trt-cache")


def test_write_atomic_writes_the_whole_file(tmp_path: Path) -> None:
    """A successful write leaves exactly the target file, complete."""
    target = tmp_path / "sub" / "plan.engine"
    write_atomic(target, lambda f: f.write(b"complete plan"))
    assert target.read_bytes() == b"complete plan"
    assert sorted(p.name for p in target.parent.iterdir()) == ["plan.engine"]


class WriterFailed(Exception):
    """Raised by the failing writer."""


def failing_writer(f: BinaryIO) -> None:
    """Writes part of a plan, then fails as a full disk would."""
    f.write(b"half a pla")
    raise WriterFailed("disk full")


def test_write_atomic_leaves_no_partial_file_when_the_writer_fails(tmp_path: Path) -> None:
    """A failing writer leaves neither the target nor a temporary file."""
    target = tmp_path / "plan.engine"
    with pytest.raises(WriterFailed):
        write_atomic(target, failing_writer)
    assert not target.exists()
    assert not list(tmp_path.iterdir())  # the temporary file is gone too


def test_write_atomic_keeps_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    """A failing rewrite keeps the previous complete file."""
    target = tmp_path / "plan.engine"
    target.write_bytes(b"old plan")
    with pytest.raises(WriterFailed):
        write_atomic(target, failing_writer)
    assert target.read_bytes() == b"old plan"
    assert [p.name for p in tmp_path.iterdir()] == ["plan.engine"]


class Recorder:
    """A deserialiser and a builder that record their calls; b"GOOD..." deserialises, anything else fails."""

    def __init__(self, plan: bytes = b"GOOD plan", deserialize_raises: bool = False) -> None:
        self.plan = plan
        self.deserialize_raises = deserialize_raises
        self.built = 0
        self.deserialized: list[bytes] = []

    def deserialize(self, data: bytes) -> str | None:
        """An "engine" string for a good plan; None (or an error) for anything else."""
        self.deserialized.append(data)
        if data.startswith(b"GOOD"):
            return f"engine<{data.decode()}>"
        if self.deserialize_raises:
            raise RuntimeError("plan has an incompatible version tag")
        return None

    def build(self) -> bytes:
        """Count the build and return the plan."""
        self.built += 1
        return self.plan


def test_cache_miss_builds_and_writes(tmp_path: Path) -> None:
    """No plan yet: build once, then store it under the key."""
    cache = EngineCache(tmp_path / "cache")
    rec = Recorder()
    engine = cache.load_or_build("k1", rec.deserialize, rec.build)
    assert engine == "engine<GOOD plan>"
    assert rec.built == 1
    assert cache.path_for("k1").read_bytes() == b"GOOD plan"
    assert cache.path_for("k1").name == "k1.engine"


def test_cache_hit_does_not_build(tmp_path: Path) -> None:
    """A stored plan that deserialises is used without building."""
    cache = EngineCache(tmp_path)
    cache.write("k1", b"GOOD cached")
    rec = Recorder()
    assert cache.load_or_build("k1", rec.deserialize, rec.build) == "engine<GOOD cached>"
    assert rec.built == 0


def test_other_key_misses(tmp_path: Path) -> None:
    """A plan stored under another key is neither used nor touched."""
    cache = EngineCache(tmp_path)
    cache.write("k1", b"GOOD cached")
    rec = Recorder(plan=b"GOOD fresh")
    assert cache.load_or_build("k2", rec.deserialize, rec.build) == "engine<GOOD fresh>"
    assert rec.built == 1
    assert cache.read("k1") == b"GOOD cached"


@pytest.mark.parametrize("deserialize_raises", [False, True], ids=["returns-None", "raises"])
def test_corrupt_cache_is_logged_removed_and_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, deserialize_raises: bool
) -> None:
    """A plan that fails to deserialise is warned about, replaced and rebuilt."""
    cache = EngineCache(tmp_path)
    cache.write("k1", b"\x00garbage from a crash")
    rec = Recorder(plan=b"GOOD rebuilt", deserialize_raises=deserialize_raises)
    with caplog.at_level(logging.WARNING, logger="edgevision.engines.trt_cache"):
        engine = cache.load_or_build("k1", rec.deserialize, rec.build)
    assert engine == "engine<GOOD rebuilt>"
    assert rec.built == 1
    assert rec.deserialized == [b"\x00garbage from a crash", b"GOOD rebuilt"]
    assert cache.read("k1") == b"GOOD rebuilt"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "deleting it and rebuilding" in warnings[0].getMessage()


def test_corrupt_cache_is_deleted_even_when_the_rebuild_fails(tmp_path: Path) -> None:
    """The corrupt plan is gone even if the rebuild then fails."""
    cache = EngineCache(tmp_path)
    cache.write("k1", b"garbage")

    def build() -> bytes:
        raise EngineLoadError("parser rejected the model")

    with pytest.raises(EngineLoadError, match="parser rejected"):
        cache.load_or_build("k1", Recorder().deserialize, build)
    assert cache.read("k1") is None


def test_fresh_plan_that_cannot_be_deserialised_is_not_cached(tmp_path: Path) -> None:
    """A fresh plan is only stored once it has deserialised."""
    cache = EngineCache(tmp_path)
    rec = Recorder(plan=b"BAD fresh")
    with pytest.raises(EngineLoadError, match="freshly built"):
        cache.load_or_build("k1", rec.deserialize, rec.build)
    assert cache.read("k1") is None
    assert not list(tmp_path.iterdir())


def test_unwritable_cache_only_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A cache directory that cannot be written costs a warning, not the engine."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_bytes(b"a file where the cache directory should be")
    cache = EngineCache(blocker / "cache")
    rec = Recorder()
    with caplog.at_level(logging.WARNING, logger="edgevision.engines.trt_cache"):
        assert cache.load_or_build("k1", rec.deserialize, rec.build) == "engine<GOOD plan>"
    assert any("could not write" in r.getMessage() for r in caplog.records)


def test_plan_facts_are_stored_beside_the_plan_and_go_with_it(tmp_path: Path) -> None:
    """write_info/read_info keep a small JSON beside the plan; discarding the plan discards it too."""
    cache = EngineCache(tmp_path)
    assert cache.read_info("k1") == {}
    cache.write("k1", b"GOOD plan")
    cache.write_info("k1", {"precision": "fp16", "tensorrt": "10.0.1.6"})
    assert cache.read_info("k1") == {"precision": "fp16", "tensorrt": "10.0.1.6"}
    assert cache.info_path_for("k1").name == "k1.json"
    cache.discard("k1")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\xff\xfe"], ids=["broken", "a-list", "not-utf8"])
def test_unreadable_plan_facts_read_as_none(tmp_path: Path, content: bytes) -> None:
    """A facts file that is not a JSON object reads as {} (the engine then works the precision out)."""
    cache = EngineCache(tmp_path)
    cache.info_path_for("k1").write_bytes(content)
    assert cache.read_info("k1") == {}


def test_build_accepts_a_buffer_like_plan(tmp_path: Path) -> None:
    """A buffer-protocol plan (like TensorRT's IHostMemory) is stored as bytes."""
    # TensorRT returns an IHostMemory, which exposes the buffer protocol rather than being bytes.
    cache = EngineCache(tmp_path)
    rec = Recorder()
    engine = cache.load_or_build("k1", rec.deserialize, lambda: memoryview(bytearray(b"GOOD view")))
    assert engine == "engine<GOOD view>"
    assert cache.read("k1") == b"GOOD view"
