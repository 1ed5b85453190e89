"""Target YAMLs (``targets/*.yaml``): schema, lookup by name, and capability checks."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator

from edgeft.config import Strict, format_validation_error
from edgeft.errors import ConfigError, TargetError
from edgeft.yamlio import load_yaml

REPO_ROOT = Path(__file__).resolve().parent.parent


class ShapeRange(Strict):
    min: list[int]
    opt: list[int]
    max: list[int]

    @model_validator(mode="after")
    def _ordered(self) -> "ShapeRange":
        if not (len(self.min) == len(self.opt) == len(self.max)):
            raise ValueError("min, opt and max must have the same rank")
        if any(not (a <= b <= c) for a, b, c in zip(self.min, self.opt, self.max)):
            raise ValueError(f"need min <= opt <= max in every dimension, got {self.min}, {self.opt}, {self.max}")
        if any(d < 1 for d in self.min):
            raise ValueError("every dimension must be >= 1")
        return self


class Device(Strict):
    kind: Literal["cpu", "gpu"]
    isa: str = "any"
    threads: int = Field(0, ge=0, description="intra-op threads; 0 = runtime default")


class AccuracyGate(Strict):
    metric: Literal["accuracy"] = "accuracy"
    max_drop: float = Field(0.01, ge=0, le=1, description="allowed drop vs the FP32 baseline (0.01 = 1 point)")


class AgreementGate(Strict):
    min_top1: float = Field(0.98, ge=0, le=1, description="share of test inputs whose top-1 matches the baseline")


class LatencyGate(Strict):
    p50_ms: float | None = Field(None, gt=0, description="absolute p50 bound at batch 1")
    max_ratio_vs_fp32: float | None = Field(None, gt=0, description="p50 / FP32 reference engine p50")


class RmseGate(Strict):
    max_increase: float = Field(0.05, ge=0, description="regression: allowed RMSE increase, relative to the baseline's")


class Int8ShareGate(Strict):
    min: float = Field(0.9, ge=0, le=1, description="share of weight-carrying layers that must run in int8 kernels")


class Gates(Strict):
    accuracy: AccuracyGate | None = None
    int8_share: Int8ShareGate | None = None
    rmse: RmseGate | None = None
    agreement: AgreementGate | None = None
    latency: LatencyGate | None = None


class OrtOptions(Strict):
    graph_optimization_level: Literal["basic", "extended", "all"] = "extended"
    int8_embeddings: bool = Field(True, description="int8 engines: store large embedding tables int8 per row")
    fuse_attention: bool = Field(True, description="fuse transformer attention blocks into ORT's "
                                 "MultiHeadAttention (see edgeft/backends/ort_fusions.py)")
    load_optimization_level: Literal["disabled", "all"] = Field(
        "disabled", description="what ORT does when the engine is opened: 'disabled' (it is already optimized) "
        "or 'all', which adds the hardware-specific layout transforms (NCHWc) that cannot be saved portably; "
        "convolutional models need them (measured: resnet18 32x32 FP32 1.42 -> 0.51 ms)")


class TargetSpec(Strict):
    name: str
    description: str = ""
    backend: str
    precision: Literal["fp32", "fp16", "int8"]
    device: Device
    input_shapes: dict[str, ShapeRange]
    gates: Gates = Field(default_factory=Gates)
    onnxruntime: OrtOptions = Field(default_factory=OrtOptions)

    @property
    def latency_shape(self) -> dict[str, list[int]]:
        """The optimal shape of each input: what latency is measured at."""
        return {k: v.opt for k, v in self.input_shapes.items()}


def targets_dir() -> Path:
    return Path(os.environ.get("EDGEFT_TARGETS_DIR", REPO_ROOT / "targets"))


def list_targets() -> list[str]:
    d = targets_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def resolve_target_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    candidate = targets_dir() / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    raise TargetError(f"Unknown target {name_or_path!r}. Available: {list_targets()}",
                      fix="pick one from `edgeft targets ls`, or pass the path of a target YAML")


def load_target(name_or_path: str) -> TargetSpec:
    """Load and validate a target; raises ConfigError/TargetError listing every problem."""
    path = resolve_target_path(name_or_path)
    raw = load_yaml(path)
    try:
        spec = TargetSpec.model_validate(raw)
    except ValidationError as err:
        keys = ", ".join(TargetSpec.model_fields)
        raise ConfigError(format_validation_error(err, f"target {path}"),
                          fix=f"edit {path}; valid top-level keys: {keys}") from None
    problems = capability_problems(spec)
    if problems:
        raise TargetError(f"target {spec.name!r} ({path}) asks for what its backend cannot do:\n  - "
                          + "\n  - ".join(problems), fix=f"edit {path} or choose another target")
    return spec


def capability_problems(spec: TargetSpec) -> list[str]:
    from edgeft.backends import CAPABILITIES, REGISTRY

    if spec.backend not in REGISTRY:
        return [f"backend: unknown backend {spec.backend!r}; registered: {sorted(REGISTRY)}"]
    caps = CAPABILITIES[spec.backend]
    out = []
    if spec.precision not in caps.precisions:
        out.append(f"precision: {spec.backend} supports {list(caps.precisions)}, not {spec.precision!r}")
    if spec.device.kind not in caps.device_kinds:
        out.append(f"device.kind: {spec.backend} runs on {list(caps.device_kinds)}, not {spec.device.kind!r}")
    if spec.device.isa not in caps.isas:
        out.append(f"device.isa: {spec.backend} knows {list(caps.isas)}, not {spec.device.isa!r}")
    return out


def host_isa_note(spec: TargetSpec) -> str | None:
    """Say when latency measured here is not on the target's instruction set."""
    if spec.device.kind != "cpu" or spec.device.isa in ("any",):
        return None
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return f"could not read this host's CPU flags; target ISA is {spec.device.isa}"
    if spec.device.isa == "neon":
        import platform
        ok = platform.machine() in ("aarch64", "arm64")
    else:
        ok = spec.device.isa in flags
    return None if ok else f"this host lacks {spec.device.isa}: latency measured here is not the target's"
