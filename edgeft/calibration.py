"""Calibration set definitions (``calibration/*.yaml``) and the sample selection they describe."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterator, Literal, Sequence

from pydantic import Field, ValidationError

from edgeft.config import Strict, format_validation_error
from edgeft.errors import ConfigError
from edgeft.targets import shipped_dir
from edgeft.yamlio import load_yaml


class CalibrationSpec(Strict):
    name: str
    split: Literal["train", "validation"] = "train"
    # upper bounds catch typos (an extra zero or two) before any work; real sets stay far below them
    num_samples: int = Field(256, ge=1, le=100_000, description="capped at the split's size")
    seed: int = 0
    batch_size: int = Field(32, ge=1, le=4096)
    max_length: int = Field(128, ge=8, le=4096)
    method: Literal["max", "entropy", "percentile", "mse", "auto"] = Field(
        "max", description="activation amax: max (ModelOpt default), from a histogram (entropy, percentile, mse), "
                           "or auto: per layer role the one of max/entropy/percentile closest to the FP32 model, "
                           "then refined per tensor")
    percentile: float = Field(99.99, gt=50, le=100, description="with method: percentile")
    selection_samples: int = Field(
        256, ge=1, le=100_000, description="validation examples (never test) on which method auto chooses ranges and the QAT "
                               "keep-check compares outputs with the FP32 model; more = slower")


def calibration_dir() -> Path:
    return Path(os.environ.get("EDGEFT_CALIBRATION_DIR") or shipped_dir("calibration"))


def load_calibration(name_or_path: str) -> CalibrationSpec:
    p = Path(name_or_path)
    if not (p.suffix in (".yaml", ".yml") and p.is_file()):
        p = calibration_dir() / f"{name_or_path}.yaml"
    if not p.is_file():
        known = sorted(x.stem for x in calibration_dir().glob("*.yaml"))
        raise ConfigError(f"Unknown calibration set {name_or_path!r}. Available: {known}",
                          fix="pass --calibration with one of those names or a YAML path")
    try:
        return CalibrationSpec.model_validate(load_yaml(p))
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, f"calibration {p}", CalibrationSpec),
                          fix=f"edit {p}; valid keys: {', '.join(CalibrationSpec.model_fields)}") from None


def select_indices(n_available: int, spec: CalibrationSpec) -> list[int]:
    import random

    idx = list(range(n_available))
    random.Random(spec.seed).shuffle(idx)
    return sorted(idx[: min(spec.num_samples, n_available)])


def batches(texts: Sequence[str], spec: CalibrationSpec) -> Iterator[list[str]]:
    """Stream the selected samples in batches, so a large set never has to be held tokenized."""
    idx = select_indices(len(texts), spec)
    for i in range(0, len(idx), spec.batch_size):
        yield [texts[j] for j in idx[i:i + spec.batch_size]]


def fingerprint(texts: Sequence[str], spec: CalibrationSpec) -> str:
    h = hashlib.sha256(json.dumps(spec.model_dump(), sort_keys=True).encode())
    for j in select_indices(len(texts), spec):
        h.update(texts[j].encode() + b"\0")
    return h.hexdigest()
