"""Benchmark: all-MiniLM-L6-v2 fine-tuned on SST-2 through `edgeft run`, then `edgeft bench` on the run.

Trains on ../shared/data/sst2/stsa.binary.train, reports on stsa.binary.dev (the GLUE validation set).
`edgeft bench` times edgeft's INT8 engine, its FP32 reference and every peer (ORT FP32 of the export,
quantize_dynamic per tensor and per channel, quantize_static, OpenVINO where installed, PyTorch eager), each
in its own process, in interleaved rounds, and measures accuracy per batch size on the dev set. The table
below the run's numbers is bench.md; everything lands in --out.

Usage: .venv/bin/python bench/sst2_minilm.py [--epochs 2] [--seed 0] [--out bench/results/sst2] [--qat-distill 0.5]
           [--sweep batch=1 --sweep seq=128]
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

from _common import REPO, edgeft_bench, run, stage_minutes
SST2 = REPO.parent / "shared" / "data" / "sst2"


def to_csv(src: Path, dst: Path) -> Path:
    with open(src, encoding="utf-8", errors="replace") as f, open(dst, "w", newline="", encoding="utf-8") as g:
        w = csv.writer(g)
        w.writerow(["text", "label"])
        for line in f:
            label, text = line.rstrip("\n").split(" ", 1)
            w.writerow([text, label])
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", default="2")
    ap.add_argument("--seed", default="0", help="passed to edgeft run (training and validation split)")
    ap.add_argument("--out", type=Path, default=None, help="default: bench/results/sst2 (seed 0), sst2-seed<N>")
    ap.add_argument("--qat-distill", default=None, help="passed to edgeft run (QAT distillation weight)")
    ap.add_argument("--sweep", action="append", default=None, help="passed to edgeft bench [default: batch=1, seq=128]")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--engines", default=None, help="passed to edgeft bench [default: all that run here]")
    ap.add_argument("--target", action="append", default=None, help="passed to edgeft run (repeatable) [default: host]")
    a = ap.parse_args()
    a.out = a.out or REPO / ("bench/results/sst2" if a.seed == "0" else f"bench/results/sst2-seed{a.seed}")
    if not SST2.is_dir():
        sys.exit(f"SST-2 not found at {SST2}: this benchmark needs ../shared/data/sst2")
    a.out.mkdir(parents=True, exist_ok=True)
    train = to_csv(SST2 / "stsa.binary.train", a.out / "train.csv")
    dev = to_csv(SST2 / "stsa.binary.dev", a.out / "dev.csv")
    run_dir = a.out / "run"
    t0 = time.time()
    p = run([sys.executable, "-m", "edgeft", "run", "--data", train, "--eval-data", dev, "--text-column", "text",
             "--label-column", "label", "--epochs", a.epochs, "--seed", a.seed, "--out", run_dir,
             *(["--qat-distill", a.qat_distill] if a.qat_distill else []),
             *[x for t in a.target or [] for x in ("--target", t)]])
    if p.returncode not in (0, 3):
        sys.exit(p.returncode)
    run_s = time.time() - t0
    doc = edgeft_bench(run_dir, a.out / "bench", a.sweep or ["batch=1", "seq=128"], a.rounds,
                       ["--engines", a.engines] if a.engines else [])
    report = json.loads((run_dir / "report.json").read_text())
    eng = {e["role"]: e for e in report["engines"] if e["target"] == report["engines"][0]["target"]}
    metrics = json.loads((run_dir / "finetune/metrics.json").read_text())
    counts = json.loads((run_dir / "manifest.json").read_text())["data"]["report"]["counts"]
    head = (f"SST-2 (train {counts['train']} / dev {report['test_examples']}), all-MiniLM-L6-v2, {a.epochs} epochs + "
            f"1 QAT epoch, seed {a.seed}, {metrics['calibration']['method']} calibration; baseline accuracy "
            f"{report['baseline']['accuracy']:.4f}, edgeft INT8 {eng['engine']['accuracy']:.4f} (agreement "
            f"{eng['engine']['top1_agreement']:.4f}); stages took {stage_minutes(run_dir):.1f} min (this invocation "
            f"{run_s / 60:.1f} min; finished stages are reused)\n\n")
    table = head + (a.out / "bench/bench.md").read_text()
    print(table)
    (a.out / "table.md").write_text(table)
    (a.out / "results.json").write_text(json.dumps({"baseline_accuracy": report["baseline"]["accuracy"],
                                                    "engine": {k: eng["engine"][k] for k in ("accuracy", "top1_agreement")},
                                                    "bench": str(a.out / "bench/bench.json"),
                                                    "qat_fidelity_mse": metrics["qat"].get("fidelity_mse"),
                                                    "results": doc["results"], "accuracy": doc["accuracy"]}, indent=1))


if __name__ == "__main__":
    main()
