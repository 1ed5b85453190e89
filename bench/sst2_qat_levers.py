"""Benchmark: quantization levers on SST-2, one at a time, on a copy of bench/sst2_minilm.py's run.

Each lever is an `edgeft run` on the same run directory with one calibration/QAT option changed; the FP32
baseline is reused (finetune's baseline_key), so a lever costs its calibration + QAT epoch, export, compile
and verify. Reports, per lever: the fake-quant PyTorch model's validation and dev accuracy, the INT8
engine's dev accuracy, its top-1 agreement with the baseline and its p50 ratio to ORT FP32 (verify's
own interleaved rounds).

Usage: .venv/bin/python bench/sst2_minilm.py            # first: trains the baseline
       .venv/bin/python bench/sst2_qat_levers.py [--lever NAME ...]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from _common import REPO, run

SRC = REPO / "bench/results/sst2"
LEVERS = {
    "default (max, 1 QAT epoch, lr/10)": [],
    "calibration percentile 99.99": ["--calib-method", "percentile"],
    "calibration entropy": ["--calib-method", "entropy"],
    "2 QAT epochs": ["--qat-epochs", "2"],
    "distillation 0.5": ["--qat-distill", "0.5"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lever", action="append", choices=list(LEVERS), help="default: all")
    ap.add_argument("--out", type=Path, default=REPO / "bench/results/sst2-levers")
    a = ap.parse_args()
    if not (SRC / "run/finetune/baseline").is_dir():
        sys.exit("run bench/sst2_minilm.py first: the levers reuse its fine-tuned baseline")
    run_dir = a.out / "run"
    if not run_dir.is_dir():
        shutil.copytree(SRC / "run", run_dir)
    rows = []
    for name in a.lever or list(LEVERS):
        code = run([sys.executable, "-m", "edgeft", "run", "--data", SRC / "train.csv", "--eval-data", SRC / "dev.csv",
                    "--text-column", "text", "--label-column", "label", "--epochs", "2", "--out", run_dir,
                    *LEVERS[name]]).returncode
        if code not in (0, 3):
            sys.exit(code)
        report = json.loads((run_dir / "report.json").read_text())
        qat = json.loads((run_dir / "finetune/metrics.json").read_text())["qat"]
        eng = next(e for e in report["engines"] if e["role"] == "engine")
        rows.append(f"| {name} | {qat['validation_accuracy']:.4f} | {qat['test_accuracy']:.4f} | {eng['accuracy']:.4f} "
                    f"| {eng['accuracy_delta']:+.4f} | {eng['top1_agreement']:.4f} | {eng['latency_ratio_vs_fp32']:.2f} |")
        print(rows[-1], flush=True)
    base = json.loads((run_dir / "report.json").read_text())["baseline"]["accuracy"]
    table = "\n".join([f"SST-2 dev (872), all-MiniLM-L6-v2, FP32 baseline {base:.4f}; one lever at a time", "",
                       "| lever | fake-quant val | fake-quant dev | INT8 engine dev | Δ vs baseline | agreement | × FP32 p50 |",
                       "|---|---|---|---|---|---|---|", *rows])
    print(table)
    (a.out / "table.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
