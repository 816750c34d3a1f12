"""Typed settings, read once from the environment. A bad value stops start-up with a message that names the
variable and what it accepts."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from edgevision.errors import EdgeVisionError

_TRUE = {"true", "1"}
_FALSE = {"false", "0"}
BOOL_ACCEPTED = "True or False (any case), 1 or 0"


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, e.g. a container's cpuset), else the CPU count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def resolve_threads(requested: int) -> int:
    """Inference threads: `requested`, or for 0 every available CPU. With the engine's idle threads sleeping
    instead of spinning (EngineConfig.intra_op_spinning), capture and pre-processing still get a core when they
    need one; `edgevision bench pipeline` shows how this compares to every other thread count on a machine."""
    if requested < 0:
        raise ValueError(f"threads must be >= 0 (0: every available CPU), got {requested}")
    return requested or available_cpus()


def concurrent_call_threads() -> int:
    """Intra-op threads for each of two inferences at once: half the available CPUs, at least one."""
    return max(1, available_cpus() // 2)


class SettingsError(EdgeVisionError):
    """One or more environment variables hold values the module cannot start with."""


def parse_bool(value: Any) -> bool:
    """The seeds' boolean convention: True/False in any case, or 1/0. Anything else is refused."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"accepted values are {BOOL_ACCEPTED}")


class ModuleSettings(BaseSettings):
    """Settings every module shares."""

    # env_ignore_empty: `NAME=` in a .env or a manifest means "not set", so the default applies
    model_config = SettingsConfigDict(
        extra="forbid", case_sensitive=False, validate_default=True, env_ignore_empty=True
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", description="LOG_LEVEL: DEBUG, INFO, WARNING, ERROR or CRITICAL (any case)."
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value


class VisionSettings(ModuleSettings):
    """Camera, model and engine settings of a module that runs a model on frames."""

    camera_path: str = Field(
        description="CAMERA_PATH: a video file, a GStreamer pipeline, an rtsp:// or http(s):// URL, "
        "/dev/videoN or csi://N: the one camera, named `default` (required unless CAMERAS is set).",
    )
    cameras: str = Field(
        "",
        description="CAMERAS: several named cameras, `name=source;name=source` (each source as CAMERA_PATH); "
        "when set, CAMERA_PATH is ignored.",
        json_schema_extra={"may_hold_credentials": True},  # rtsp://user:password@...: never echoed in errors
    )
    max_batch: int = Field(
        4,
        ge=1,
        le=64,
        description="MAX_BATCH: with several cameras, the most frames (one per camera) batched into one "
        "inference when the model's batch axis is open; 1 runs frame by frame.",
    )
    use_tensor_rt: bool = Field(False, description="USE_TENSOR_RT: run the model with TensorRT on the GPU.")
    tensorrt_fallback: bool = Field(
        False, description="TENSORRT_FALLBACK: use ONNX Runtime when USE_TENSOR_RT is set but TensorRT is missing."
    )
    model_name: str = Field("efficientnet-lite0", min_length=1, description="MODEL_NAME: model folder name.")
    model_repository: Path | None = Field(
        None, description="MODEL_REPOSITORY: folder of <name>/<version>/model.json; default: the bundled models."
    )
    model_version: str | None = Field(None, description="MODEL_VERSION: a version folder; default: the newest.")
    intra_op_threads: int = Field(
        0, ge=0, le=256, description="INTRA_OP_THREADS: ONNX Runtime threads; 0 = every available CPU."
    )
    engine_cache_dir: Path | None = Field(
        None, description="ENGINE_CACHE_DIR: where TensorRT engines are cached; default: beside the model."
    )
    loop_video: bool = Field(True, description="LOOP_VIDEO: restart a video file at its end (else stop).")
    video_realtime: bool = Field(False, description="VIDEO_REALTIME: read a video file at its own frame rate.")
    process_every_frame: bool = Field(
        True, description="PROCESS_EVERY_FRAME: for files, infer every frame (else the newest, like a camera)."
    )
    frame_watchdog_seconds: float = Field(
        10.0, gt=0, description="FRAME_WATCHDOG_SECONDS: warn when a live source gives no frame this long."
    )
    log_every_frame: bool = Field(
        False, description="LOG_EVERY_FRAME: a console line per frame (else events and a periodic status line)."
    )
    status_interval_seconds: float = Field(
        30.0, gt=0, le=86400, description="STATUS_INTERVAL_SECONDS: seconds between two console status lines."
    )

    @field_validator(
        "use_tensor_rt",
        "tensorrt_fallback",
        "loop_video",
        "video_realtime",
        "process_every_frame",
        "log_every_frame",
        mode="before",
    )
    @classmethod
    def _strict_bool(cls, value: Any) -> bool:
        return parse_bool(value)

    @field_validator("model_repository")
    @classmethod
    def _existing_folder(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"{value} is not a folder")
        return value

    @field_validator("camera_path")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @model_validator(mode="before")
    @classmethod
    def _first_camera_as_path(cls, data: Any) -> Any:
        # with CAMERAS alone, CAMERA_PATH reads as the first camera's source (code that logs it keeps working)
        if isinstance(data, dict) and not str(data.get("camera_path") or "").strip():
            cameras = str(data.get("cameras") or "")
            first = cameras.split(";", maxsplit=1)[0].partition("=")[2].strip() if cameras.strip() else ""
            if first:
                data = {**data, "camera_path": first}
        return data

    @field_validator("cameras")
    @classmethod
    def _camera_list(cls, value: str) -> str:
        value = value.strip()
        if value:
            # imported here: the frames package imports OpenCV, which settings alone do not need
            from edgevision.frames.cameras import parse_cameras  # pylint: disable=import-outside-toplevel

            try:
                parse_cameras(value)
            except EdgeVisionError as e:
                raise ValueError(str(e)) from e
        return value

    def camera_specs(self) -> tuple[Any, ...]:
        """The cameras: CAMERAS, else CAMERA_PATH as the one camera named `default` (CameraSpec tuples)."""
        from edgevision.frames.cameras import cameras_from  # pylint: disable=import-outside-toplevel

        return cameras_from(self.cameras, self.camera_path)

    def resolved_threads(self) -> int:
        """INTRA_OP_THREADS, with 0 meaning every available CPU."""
        return resolve_threads(self.intra_op_threads)

    def concurrent_engine_threads(self) -> int | None:
        """With INTRA_OP_THREADS=0 and every camera a file read unpaced (VIDEO_REALTIME=False,
        PROCESS_EVERY_FRAME=True), the pipeline runs two frames (or rounds) in inference at once on an engine that
        takes concurrent calls: each then gets half the CPUs (at least one), the engine alone's best on every
        machine measured (`bench/pipeline_bench.py`: one thread per call, two calls, on 2 CPUs). None otherwise:
        the engine keeps `resolved_threads()`."""
        if self.intra_op_threads or self.video_realtime or not self.process_every_frame:
            return None
        from edgevision.frames.camera_path import (  # pylint: disable=import-outside-toplevel
            SourceKind,
            parse_camera_path,
        )

        try:
            files = all(parse_camera_path(spec.source).kind is SourceKind.FILE for spec in self.camera_specs())
        except EdgeVisionError:  # an unusable source is reported when it is opened
            return None
        return concurrent_call_threads() if files else None


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def _may_hold_credentials(info: Any) -> bool:
    extra = info.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get("may_hold_credentials"))


def _describe(error: dict[str, Any], secret: frozenset[str] = frozenset()) -> str:
    name = "_".join(str(part) for part in error["loc"]).upper() or "(settings)"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "missing":
        return f"{name} is required but not set"
    if error["type"] == "literal_error":
        message = f"accepted values are {message.removeprefix('Input should be ')}"
    value = error.get("input")
    # a secret's value (a key, a connection string) never goes into a message
    shown = f"={value!r}" if isinstance(value, (str, int, float)) and name not in secret else ""
    return f"{name}{shown}: {message}"


def load_settings(settings_class: type[SettingsT], **overrides: Any) -> SettingsT:
    """Read `settings_class` from the environment; raise SettingsError naming every bad variable."""
    try:
        return settings_class(**overrides)
    except ValidationError as e:
        secret = frozenset(
            name.upper()
            for name, info in settings_class.model_fields.items()
            if "SecretStr" in str(info.annotation) or _may_hold_credentials(info)
        )
        problems = "; ".join(_describe(err, secret) for err in e.errors())
        raise SettingsError(f"invalid configuration: {problems}") from e


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def module_settings(settings_class: type[SettingsT], module_name: str) -> SettingsT | None:
    """A module's start: its settings from the environment and logging at their LOG_LEVEL; None, with
    `module_name: <what is wrong>` on stderr, when a variable holds a bad value."""
    try:
        settings = load_settings(settings_class)
    except SettingsError as e:
        print(f"{module_name}: {e}", file=sys.stderr)
        return None
    logging.basicConfig(level=getattr(settings, "log_level", "INFO"), format=LOG_FORMAT)
    return settings
