"""Every artifact of a run directory, by kind. Stages reach each other's outputs only through these kinds
(``RunContext.require``), which checks them against the sha256 the manifest recorded before handing
out a path; no stage writes a literal path into another stage's folder."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

# kind -> (stage that writes it, path relative to the run directory; ``{target}``/``{role}`` filled in)
KINDS: dict[str, tuple[str, str]] = {
    "finetune.splits": ("finetune", "finetune/data"),
    "finetune.labels": ("finetune", "finetune/data/labels.json"),
    "finetune.facts": ("finetune", "finetune/facts.json"),
    "finetune.baseline": ("finetune", "finetune/baseline"),
    "finetune.baseline_weights": ("finetune", "finetune/baseline/model.safetensors"),
    "finetune.baseline_test_logits": ("finetune", "finetune/baseline_test_logits.npy"),
    "finetune.qat_state": ("finetune", "finetune/qat/modelopt_state.pth"),
    "finetune.metrics": ("finetune", "finetune/metrics.json"),
    "export.fp32": ("export", "export/fp32"),
    "export.int8": ("export", "export/int8"),
    "export.fp32_onnx": ("export", "export/fp32/model.onnx"),
    "export.int8_onnx": ("export", "export/int8/model.onnx"),
    "export.calibration_inputs": ("export", "export/int8/calibration_inputs.npz"),
    "export.parity": ("export", "export/parity.json"),
    "compile.engine": ("compile", "compile/{target}/{role}"),
    "verify.report_json": ("verify", "verify/report.json"),
    "verify.report_md": ("verify", "verify/report.md"),
    "verify.predictions": ("verify", "verify/predictions"),
}
ENGINE_ROLES = ("engine", "fp32-reference")


def stage_of(kind: str) -> str:
    return KINDS[kind][0]


def rel_path(kind: str, **fields: str) -> str:
    if kind not in KINDS:
        raise KeyError(f"unknown artifact kind {kind!r}; known: {sorted(KINDS)}")
    return KINDS[kind][1].format(**fields)


def in_stage(kind: str, **fields: str) -> str:
    """The path inside the stage's own folder (what the stage writes into its work folder)."""
    stage, rel = KINDS[kind][0], rel_path(kind, **fields)
    return rel[len(stage) + 1:]


@dataclass(frozen=True)
class RunFacts:
    """What every stage after finetune needs to know about the run: written once by finetune."""
    task: str              # classification | regression
    modality: str          # text | image
    labels: list[str]

    def write(self, path: Path) -> None:
        from edgeft_runtime.fileio import write_json_atomic

        write_json_atomic(path, asdict(self))

    @classmethod
    def read(cls, path: Path) -> "RunFacts":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(task=data["task"], modality=data["modality"], labels=list(data["labels"]))
