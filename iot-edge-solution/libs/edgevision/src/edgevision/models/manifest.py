"""The `model.json` schema (see iot-edge-solution/models/README.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ResizeSpec(_Strict):
    """How a frame is resized before the model sees it."""

    mode: Literal["shorter_side", "stretch", "multiple_of"]
    size: int | None = Field(None, gt=0, description="shorter_side: the target shorter side")
    width: int | None = Field(None, gt=0, description="stretch: target width")
    height: int | None = Field(None, gt=0, description="stretch: target height")
    limit_shorter_side: int | None = Field(
        None, gt=0, description="multiple_of: a shorter side below this is scaled up to it"
    )
    max_side_len: int | None = Field(None, gt=0, description="multiple_of: longer side at most this")
    multiple: int = Field(32, gt=0, description="multiple_of: each side rounded to a multiple of this")
    interpolation: Literal["nearest", "linear", "cubic", "area"] = "linear"

    @model_validator(mode="after")
    def _fields_for_mode(self) -> ResizeSpec:
        needed = {"shorter_side": ("size",), "stretch": ("width", "height"), "multiple_of": ()}[self.mode]
        missing = [name for name in needed if getattr(self, name) is None]
        if missing:
            raise ValueError(f"resize mode {self.mode!r} needs {', '.join(missing)}")
        return self


class PreprocessSpec(_Strict):
    """Colour order, resize, crop and normalisation: x = (pixel - mean) / std."""

    color: Literal["RGB", "BGR"]
    resize: ResizeSpec
    center_crop: int | None = Field(None, gt=0)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    layout: Literal["NCHW", "NHWC"] = "NCHW"

    @model_validator(mode="after")
    def _positive_std(self) -> PreprocessSpec:
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be > 0")
        return self


class InputSpec(_Strict):
    """The model's image input; -1 marks a dynamic axis."""

    name: str = Field(min_length=1)
    shape: tuple[int, ...]
    dtype: Literal["float32", "float16", "uint8"] = "float32"

    @model_validator(mode="after")
    def _rank_four(self) -> InputSpec:
        if len(self.shape) != 4 or any(d == 0 or d < -1 for d in self.shape):
            raise ValueError(f"input shape must have 4 axes, each > 0 or -1 (dynamic); got {list(self.shape)}")
        return self


class ClassificationPostprocess(_Strict):
    """Top-k over class scores; softmax when the model outputs logits."""

    softmax: bool = True
    top_k: int = Field(5, gt=0)


class DetectionHead(_Strict):
    """One NanoDet output level: scores [1,N,C] and box-side distributions [1,N,4*(reg_max+1)]."""

    stride: int = Field(gt=0)
    scores: str = Field(min_length=1)
    boxes: str = Field(min_length=1)


class DetectionPostprocess(_Strict):
    """NanoDet decode and class-wise NMS."""

    decoder: Literal["nanodet"]
    reg_max: int = Field(7, gt=0)
    score_threshold: float = Field(0.35, ge=0, le=1)
    nms_iou_threshold: float = Field(0.5, gt=0, le=1)
    max_detections: int = Field(100, gt=0)
    heads: tuple[DetectionHead, ...] = Field(min_length=1)


class ZooDetectionPostprocess(_Strict):
    """The TensorFlow Detection Zoo signature (the `TFLite_Detection_PostProcess` operator of SSD models from the
    Zoo, Coral and Model Maker): boxes [1,N,4] (ymin, xmin, ymax, xmax, 0..1), classes [1,N], scores [1,N] and
    count [1]. Outputs are found by the names given here, else by their names' `:1`/`:2` suffixes of that
    operator or words (class, score), else by shape and values; never by their position. The model's own
    threshold is often ~0: `score_threshold` is applied here."""

    decoder: Literal["tflite_detection_postprocess"]
    score_threshold: float = Field(0.4, ge=0, le=1)
    max_detections: int = Field(100, gt=0)
    boxes: str | None = None
    classes: str | None = None
    scores: str | None = None
    count: str | None = None

    def named(self) -> dict[str, str]:
        """role -> output name, for the roles given."""
        roles = {"boxes": self.boxes, "classes": self.classes, "scores": self.scores, "count": self.count}
        return {role: name for role, name in roles.items() if name}


class TextDetectionPostprocess(_Strict):
    """DB (differentiable binarisation) post-process to quadrilaterals."""

    decoder: Literal["db"]
    thresh: float = Field(0.3, gt=0, lt=1)
    box_thresh: float = Field(0.5, gt=0, lt=1)
    unclip_ratio: float = Field(1.6, gt=0)
    max_candidates: int = Field(1000, gt=0)
    min_size: float = Field(3, ge=0)


class ModelManifest(_Strict):
    """Everything needed to run one model version."""

    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    task: Literal["classification", "detection", "text_detection"]
    file: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    license: str = Field(min_length=1)
    source: str = ""
    labels: str | None
    input: InputSpec
    outputs: tuple[str, ...] = Field(min_length=1)
    preprocess: PreprocessSpec
    postprocess: dict[str, Any]
    _post: (
        ClassificationPostprocess | DetectionPostprocess | ZooDetectionPostprocess | TextDetectionPostprocess | None
    ) = PrivateAttr(None)

    @model_validator(mode="after")
    def _task_consistency(self) -> ModelManifest:
        schema = {
            "classification": ClassificationPostprocess,
            "detection": DetectionPostprocess,
            "text_detection": TextDetectionPostprocess,
        }[self.task]
        if self.task == "detection" and self.postprocess.get("decoder") == "tflite_detection_postprocess":
            schema = ZooDetectionPostprocess
        try:
            parsed = schema.model_validate(self.postprocess)
        except ValidationError as e:
            details = "; ".join(
                f"postprocess.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
            )
            raise ValueError(f"postprocess does not fit task {self.task!r}: {details}") from e
        if self.task != "text_detection" and not self.labels:
            raise ValueError(f"a {self.task} model needs a labels file")
        if isinstance(parsed, DetectionPostprocess):
            named = {n for head in parsed.heads for n in (head.scores, head.boxes)}
            unknown = sorted(named - set(self.outputs))
            if unknown:
                raise ValueError(f"postprocess heads name outputs not in 'outputs': {unknown}")
        if isinstance(parsed, ZooDetectionPostprocess):
            unknown = sorted(set(parsed.named().values()) - set(self.outputs))
            if unknown:
                raise ValueError(f"postprocess names outputs not in 'outputs': {unknown}")
            if len(self.outputs) != 4:
                raise ValueError(
                    "the tflite_detection_postprocess decoder needs the 4 outputs boxes, classes, scores and count; "
                    f"'outputs' lists {len(self.outputs)}"
                )
        self._post = parsed
        return self

    @property
    def post(
        self,
    ) -> ClassificationPostprocess | DetectionPostprocess | ZooDetectionPostprocess | TextDetectionPostprocess:
        """The task's post-process parameters, validated against the task's schema."""
        assert self._post is not None  # set by the validator
        return self._post
