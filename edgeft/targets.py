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


def shipped_dir(kind: str) -> Path:
    """The folder of the shipped ``targets`` or ``calibration`` YAMLs: the repository's top-level folder in
    a checkout, package data (``edgeft/shipped/<kind>``) in an installed wheel."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(f"edgeft.shipped.{kind}")
    except ModuleNotFoundError:
        spec = None
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return REPO_ROOT / kind


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
    int8_kernels: Literal["auto", "u8s8", "u8u8", "u8s8_7bit"] = Field(
        "auto", description="int8 engines: u8s8 (unsigned activations, signed weights; fastest with VNNI), u8u8 "
        "(weights stored unsigned at zero point 128, same values) or u8s8_7bit (weights re-gridded to 7 bits, "
        "ONNX Runtime's reduce_range; not exact): x86 CPUs without VNNI add u8s8 products in pairs into int16 and "
        "saturate, u8u8 and u8s8_7bit kernels do not. auto: u8s8 for avx512_vnni and neon targets, u8u8 otherwise "
        "(avx2, and isa any, whose engine may meet a CPU without VNNI)")
    dynamic_activations: Literal["none", "post_gelu", "all"] = Field(
        "none", description="int8 engines: GEMMs that quantize their input per call over its own range "
        "(DynamicQuantizeMatMul) instead of on the calibrated grid: post_gelu (the FFN down-projections) or all; "
        "not exact, measure its accuracy (docs/usage.md)")
    load_optimization_level: Literal["disabled", "all"] = Field(
        "disabled", description="what ORT does when the engine is opened: 'disabled' (it is already optimized) "
        "or 'all', which adds the hardware-specific layout transforms (NCHWc) that cannot be saved portably; "
        "convolutional models need them (docs/design.md)")


class TargetSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                      description="an identifier (letters, digits, . _ -): it names the target's folders in a run")
    description: str = ""
    backend: str
    precision: Literal["fp32", "fp16", "int8"]
    device: Device
    input_shapes: dict[str, ShapeRange]
    gates: Gates = Field(default_factory=Gates)
    onnxruntime: OrtOptions = Field(default_factory=OrtOptions)

    @property
    def ort_int8(self) -> bool:
        """An ONNX Runtime int8 engine: what the ``onnxruntime`` int8 options and kernel flavours apply to."""
        return self.backend == "onnxruntime-cpu" and self.precision == "int8"

    @property
    def int8_kernels(self) -> str:
        """The int8 flavour this target's ONNX Runtime engine is built in (``onnxruntime.int8_kernels``, resolved)."""
        if self.onnxruntime.int8_kernels != "auto":
            return self.onnxruntime.int8_kernels
        return "u8s8" if self.device.isa in ("avx512_vnni", "neon") else "u8u8"

    def with_ort(self, **options) -> "TargetSpec":
        """This target with its ``onnxruntime`` options updated, validated as a loaded YAML's would be (a bench
        kernel flavour, a test's variant); capability checks are the caller's: bench builds u8s8 on purpose."""
        return TargetSpec.model_validate({**self.model_dump(), "onnxruntime": {**self.onnxruntime.model_dump(), **options}})

    @property
    def latency_shape(self) -> dict[str, list[int]]:
        """The optimal shape of each input: what latency is measured at."""
        return {k: v.opt for k, v in self.input_shapes.items()}


HOST = "host"


def targets_dir() -> Path:
    return Path(os.environ.get("EDGEFT_TARGETS_DIR") or shipped_dir("targets"))


def list_targets() -> list[str]:
    d = targets_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def host_target_name(host=None, modality: str | None = None) -> tuple[str, str]:
    """The shipped target ``host`` stands for here (for an image model, that class's ``-vision`` target where one
    is shipped: its input shapes and conv layout are an image model's), and why; TargetError when none fits."""
    from edgeft_runtime import hostinfo

    host = host or hostinfo.current()
    name, why = hostinfo.host_target(host)
    if name is None:
        raise TargetError(f"--target host: {why}, and no shipped target is built for it",
                          fix="name a target with --target (`edgeft targets ls`), or write a target YAML for this CPU")
    if modality == "image" and f"{name}-vision" in list_targets():
        name, why = f"{name}-vision", f"{why}, and the model is an image model"
    return name, f"{why}: target {name}"


def resolve_host(names: list[str], host=None, modality: str | None = None) -> tuple[list[str], str | None]:
    """Replace ``host`` in a list of target names by this host's target (for ``modality``), and a target YAML
    path by its absolute path (so a run directory means the same targets from any folder); returns the names
    and why ``host`` became what it did (None when no ``host`` was given)."""
    names = [str(Path(n).resolve()) if n.endswith((".yaml", ".yml")) and Path(n).is_file() else n for n in names]
    if HOST not in names:
        return names, None
    name, why = host_target_name(host, modality)
    return list(dict.fromkeys(name if n == HOST else n for n in names)), why


def resolve_target_path(name_or_path: str) -> Path:
    if name_or_path == HOST:
        name_or_path = host_target_name()[0]
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    if p.suffix in (".yaml", ".yml") or "/" in name_or_path:
        raise TargetError(f"--target {name_or_path}: no such file", fix="check the path, or name a shipped target "
                          "(`edgeft targets ls`)")
    candidate = targets_dir() / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    raise TargetError(f"Unknown target {name_or_path!r}. Available: {list_targets()} (or `host`: this CPU's)",
                      fix="pick one from `edgeft targets ls`, or pass the path of a target YAML")


def load_target(name_or_path: str) -> TargetSpec:
    """Load and validate a target; raises ConfigError/TargetError listing every problem."""
    path = resolve_target_path(name_or_path)
    raw = load_yaml(path)
    try:
        spec = TargetSpec.model_validate(raw)
    except ValidationError as err:
        keys = ", ".join(TargetSpec.model_fields)
        raise ConfigError(format_validation_error(err, f"target {path}", TargetSpec),
                          fix=f"edit {path} (top-level keys: {keys})") from None
    problems = capability_problems(spec)
    if problems:
        raise TargetError(f"target {spec.name!r} ({path}) asks for what its backend cannot do:\n  - "
                          + "\n  - ".join(problems), fix=f"edit {path} or choose another target")
    return spec


def capability_problems(spec: TargetSpec) -> list[str]:
    from edgeft.backends import REGISTRY, backend_class

    if spec.backend not in REGISTRY:
        return [f"backend: unknown backend {spec.backend!r}; registered: {sorted(REGISTRY)}"]
    caps = backend_class(spec.backend).capabilities
    out = []
    if spec.precision not in caps.precisions:
        out.append(f"precision: {spec.backend} supports {list(caps.precisions)}, not {spec.precision!r}")
    if spec.device.kind not in caps.device_kinds:
        out.append(f"device.kind: {spec.backend} runs on {list(caps.device_kinds)}, not {spec.device.kind!r}")
    if spec.device.isa not in caps.isas:
        out.append(f"device.isa: {spec.backend} knows {list(caps.isas)}, not {spec.device.isa!r}")
    if spec.ort_int8 and spec.onnxruntime.int8_kernels == "u8s8" and spec.device.isa in ("avx2", "any"):
        out.append(f"onnxruntime.int8_kernels: u8s8 on an isa {spec.device.isa!r} target computes wrong sums on CPUs "
                   "without VNNI (pairs of u8 x s8 products saturate in int16): use u8u8 or u8s8_7bit (or auto)")
    if not spec.ort_int8 and spec.onnxruntime.dynamic_activations != "none":
        out.append(f"onnxruntime.dynamic_activations: applies to onnxruntime-cpu int8 targets only, not "
                   f"{spec.backend} {spec.precision}: remove it")
    return out


def host_isa_note(spec: TargetSpec, host=None) -> str | None:
    """Say when latency measured on ``host`` (default: this one) is not on the target's instruction set;
    None when it is (or the target is not a CPU target)."""
    from edgeft_runtime import hostinfo

    if spec.device.kind != "cpu":
        return None
    host = host or hostinfo.current()
    if hostinfo.matches(spec.device.isa, host):
        return None
    return (f"this host's int8 instruction set is {host.isa_class} ({host.isa_summary()}), the target's is "
            f"{spec.device.isa}: its latency here is not the target's, so latency gates are not measured")
