"""Run configuration: one pydantic model that every command builds (``--print-config`` shows it).

Unknown keys are refused (``extra="forbid"``) and every problem is reported at once, naming the
field, the value and the fix.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgeft.errors import ConfigError

BUILTIN_MODEL = "builtin:all-MiniLM-L6-v2"
BUILTIN_DATA = "builtin:smarthome"


class Strict(BaseModel):
    # validate_default: defaults are coerced like given values (``qat_epochs`` default 1 -> 1.0), so a config
    # built from options and the same config reloaded from manifest.json fingerprint alike
    # allow_inf_nan: an infinite epoch count or learning rate passes every range check and fails deep in training
    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True, allow_inf_nan=False)


class TrainConfig(Strict):
    """Supervised fine-tuning (the FP32 baseline) and quantization-aware training."""

    epochs: float = Field(8, gt=0, description="epochs of FP32 fine-tuning")
    batch_size: int = Field(16, ge=1, description="training batch size")
    lr: float = Field(1e-4, gt=0, lt=1, description="learning rate")
    weight_decay: float = Field(0.01, ge=0, description="weight decay")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="share of steps spent warming up the learning rate")
    max_length: int = Field(128, ge=8, le=4096, description="max tokens per input; longer inputs are truncated")
    qat_epochs: float = Field(1, ge=0, description="epochs of QAT after calibration; 0 = PTQ only")
    qat_lr_scale: float = Field(0.1, gt=0, le=1, description="QAT learning rate = lr * this")
    qat_distill: float = Field(0.0, ge=0, le=1, description="QAT loss weight of distillation from the FP32 "
                               "baseline (KL at temperature 2; regression: MSE to its output); the rest is the "
                               "task loss; 0 = off")
    qat_keep: Literal["closer", "always"] = Field(
        "closer", description="closer: keep the QAT weights only when they bring the quantized model closer to the "
                              "FP32 baseline (output MSE on validation) than calibration alone did; always: keep them")
    max_steps: int = Field(-1, description="cap on optimizer steps per phase (-1 = no cap); for smoke runs")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="optimizer")
    scheduler: Literal["linear", "cosine", "constant_with_warmup"] = Field(
        "linear", description="learning-rate schedule after warmup")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping")
    grad_accum: int = Field(1, ge=1, description="gradient accumulation steps")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="autocast on CUDA (CPU always trains in fp32); auto = bf16 where supported")
    dropout: float | None = Field(None, ge=0, lt=1, description="override the model's dropout")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="cross-entropy label smoothing")
    imbalance: Literal["auto", "none", "weights", "oversample"] = Field(
        "auto", description="class-weighted loss or oversampling; auto = weights when classes differ > 3x")
    best_metric: Literal["auto", "accuracy", "macro_f1", "rmse", "loss"] = Field(
        "auto", description="validation metric that picks the kept epoch and drives early stopping; auto = accuracy "
                            "(classification) or rmse (regression)")
    early_stopping_patience: int | None = Field(None, ge=1, description="stop after this many epochs without improvement")
    gradual_unfreeze: bool = Field(False, description="head first, then one more block per epoch")
    report_to: Literal["none", "tensorboard"] = Field(
        "none", description="training curves to TensorBoard (RUN_DIR/tensorboard/; pip install 'edgeft[tensorboard]')")


class VisionConfig(Strict):
    """Image pre-processing (the same at evaluation and on the device) and training augmentation."""

    image_size: int = Field(224, ge=16, le=1024, description="square input side in pixels")
    mean: list[float] = Field(default_factory=lambda: [0.485, 0.456, 0.406], min_length=3, max_length=3)
    std: list[float] = Field(default_factory=lambda: [0.229, 0.224, 0.225], min_length=3, max_length=3)
    augment: bool = Field(True, description="training only: random resized crop, horizontal flip, color jitter")
    crop_scale: float = Field(0.7, gt=0, le=1, description="smallest area share kept by the random resized crop")
    hflip: bool = Field(True, description="random horizontal flip (turn off for digits and text)")
    color_jitter: float = Field(0.2, ge=0, le=1, description="brightness/contrast/saturation jitter strength")


class SplitConfig(Strict):
    """How splits are made when the data does not come with them."""

    validation_fraction: float = Field(0.1, gt=0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0, lt=0.5)


class RunConfig(Strict):
    """Everything ``edgeft run`` needs; each stage reads its part."""

    model: str = Field(BUILTIN_MODEL, description="a local Hugging Face model folder (text or vision), "
                       "torchvision:ARCH (resnet18, resnet50, mobilenet_v3_small, mobilenet_v3_large, efficientnet_b0) "
                       "or hf-config:TYPE (resnet, mobilenet_v2, vit; random init)")
    data: str = Field(BUILTIN_DATA, description="labeled data: CSV, TSV, JSONL, parquet, a datasets save_to_disk "
                      "folder, hf:NAME, or an image folder (DIR/<class>/<image>); builtin:smarthome = voice commands")
    eval_data: str | None = Field(None, description="separate test file; otherwise a stratified split")
    text_column: str = Field("text", description="column holding the text")
    label_column: str = Field("label", description="column holding the label (string or integer)")
    weights: str | None = Field(None, description="torchvision: local .pth/.safetensors weights (else random init)")
    image_column: str = Field("image", description="column of image paths (relative to the table) for image data")
    task: Literal["classification", "regression"] = Field(
        "classification", description="regression: numeric labels, a single-output head trained with MSE")
    modality: Literal["auto", "text", "image"] = Field("auto", description="auto: image for image folders or "
                                                       "tables with the image column and no text column")
    bad_images: Literal["stop", "skip"] = Field("stop", description="an image that cannot be decoded stops the run, or is skipped and counted")
    vision: VisionConfig = Field(default_factory=lambda: VisionConfig())
    targets: list[str] = Field(default_factory=lambda: ["host"], min_length=1, description="a target from targets/ "
                               "or a YAML path, repeatable; host = this CPU's (AVX512-VNNI/AMX: x86-avx512-int8, AVX2: "
                               "x86-avx2-int8, ARM64: arm64-int8)")
    calibration: str = Field("default", description="name of calibration/<name>.yaml, or a path")
    calib_method: Literal["max", "entropy", "percentile", "mse", "auto"] | None = Field(
        None, description="override the calibration set's method for this run")
    keep_fp32: list[str] = Field(default_factory=list, description="blocks or layers exported without Q/DQ "
                                 "(e.g. bert.encoder.layer.5, bert.encoder.layer.5.output.dense)")
    fallback: int = Field(0, ge=0, description="on an accuracy gate failure keep up to N most sensitive blocks in FP32")
    fallback_minutes: float | None = Field(None, gt=0, description="time budget for the fallback rounds")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="random seed (splits, initialization, training order)")
    out: Path | None = Field(None, description="run directory; default runs/<model>-<data>")
    train: TrainConfig = Field(default_factory=TrainConfig)
    search: dict[str, list[float]] | None = Field(None, description="hyper-parameter grid, repeatable: lr=1e-5,5e-5 "
                                                  "(lr, batch_size, epochs, weight_decay); the best by validation goes on")
    search_trials: int | None = Field(None, ge=1, description="train this many random points of the grid (default: all)")
    split: SplitConfig = Field(default_factory=SplitConfig)

    @field_validator("model", "data", "eval_data")
    @classmethod
    def _path_exists(cls, v: str | None, info: Any) -> str | None:
        if v is None or v.split(":", 1)[0] in ("builtin", "torchvision", "hf", "hf-config"):
            return v
        if info.context and not info.context.get("check_paths", True):
            return v                 # a recorded config: its data may live elsewhere (verify on the device)
        if not Path(v).exists():
            raise ValueError(f"path does not exist: {v!r}; pass an existing path for --{info.field_name.replace('_', '-')}")
        return str(Path(v).resolve())

    @field_validator("search")
    @classmethod
    def _search_keys(cls, v: dict | None) -> dict | None:
        from edgeft.search import SEARCHABLE

        bad = sorted(set(v or {}) - set(SEARCHABLE))
        if bad:
            raise ValueError(f"cannot search over {bad}; searchable: {sorted(SEARCHABLE)}")
        if v and any(not values for values in v.values()):
            raise ValueError("every searched parameter needs at least one value")
        return v

    @model_validator(mode="after")
    def _task_metric(self) -> "RunConfig":
        m = self.train.best_metric
        if (self.task == "regression" and m in ("accuracy", "macro_f1")) or (self.task == "classification" and m == "rmse"):
            raise ValueError(f"train.best_metric {m!r} does not apply to {self.task}; use auto, loss or "
                             f"{'rmse' if self.task == 'regression' else 'accuracy/macro_f1'}")
        return self

    @model_validator(mode="after")
    def _builtin_columns(self) -> "RunConfig":
        if self.data == BUILTIN_DATA and self.eval_data is not None:
            raise ValueError("--eval-data needs --data: the built-in dataset has its own fixed test split")
        if self.out is None:
            self.out = default_out(self.model, self.data)
        return self


def default_out(model: str, data: str) -> Path:
    """``runs/<model>-<data>``: re-running the same inputs lands in the same folder and resumes."""
    def stem(v: str) -> str:
        name = v.split(":", 1)[1] if v.startswith("builtin:") else Path(v).stem or Path(v).name
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)

    return Path("runs") / f"{stem(model)}-{stem(data)}"


def format_validation_error(err: ValidationError, what: str, model: type[BaseModel] | None = None) -> str:
    """Every problem in ``err`` on its own line; with ``model``, an unknown key also names the keys valid in
    its section (and the closest one), so a typo under ``onnxruntime:`` is answered with ``onnxruntime``'s keys."""
    lines = [f"{what}: {len(err.errors())} problem(s)"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (misspelled?)" + _valid_keys_hint(model, e["loc"])
        value = "" if e["type"] == "missing" else f" (got {e.get('input')!r})"
        lines.append(f"  - {loc}: {msg}{value}")
    return "\n".join(lines)


def _valid_keys_hint(model: type[BaseModel] | None, loc: tuple) -> str:
    import difflib

    section = _model_at(model, loc[:-1]) if model is not None else None
    if section is None:
        return ""
    keys = list(section.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), keys, n=1)
    return (f"; did you mean {close[0]!r}?" if close else "") + f" valid keys here: {', '.join(keys)}"


def _model_at(tp: Any, path: tuple) -> type[BaseModel] | None:
    """The pydantic model validating the section at ``path`` under ``tp`` (through Optional, dict values and
    list items), or None."""
    import typing

    def strip_optional(t):
        args = [a for a in typing.get_args(t) if a is not type(None)]
        return args[0] if typing.get_origin(t) not in (dict, list, None) and len(args) == 1 else t

    for part in path:
        tp = strip_optional(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return None
            tp = field.annotation
        elif typing.get_origin(tp) in (dict, list):
            tp = typing.get_args(tp)[-1]
        else:
            return None
    tp = strip_optional(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def build_config(values: dict[str, Any], base: RunConfig | dict | None = None, check_paths: bool = True) -> RunConfig:
    """Build a RunConfig from (possibly nested) values over ``base`` (a config, or one recorded as a dict),
    raising ConfigError with every problem. ``check_paths=False``: model/data paths need not exist here."""
    data = base.model_dump() if isinstance(base, RunConfig) else dict(base or {})
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    try:
        return RunConfig.model_validate(data, context={"check_paths": check_paths})
    except ValidationError as err:
        fields = ", ".join(RunConfig.model_fields)
        raise ConfigError(format_validation_error(err, "invalid run config", RunConfig),
                          fix=f"correct the fields above (valid top-level fields: {fields})") from None
