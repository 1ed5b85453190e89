"""Benchmark: all-MiniLM-L6-v2 fine-tuned on SST-2 through `edgeft run`, then one table.

Trains on ../shared/data/sst2/stsa.binary.train, reports on stsa.binary.dev (the GLUE validation set).
Accuracy: the PyTorch FP32 baseline, the ORT FP32 engine and edgeft's INT8 engine (batch 1, from the
run's report), plus ORT `quantize_dynamic` (QInt8, per-channel) of the same FP32 export: the engine a
user would otherwise make by hand. Latency: batch 1, sequence 128, every engine in its own process,
ROUNDS interleaved rounds, median of the per-round p50s; ratios against ORT FP32 in the same run.

Usage: .venv/bin/python bench/sst2_minilm.py [--epochs 2] [--seed 0] [--out bench/results/sst2] [--qat-distill 0.5]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from pathlib import Path

from _common import REPO, accuracy, interleaved_p50, ort_latency_cmd, run, stage_minutes
SST2 = REPO.parent / "shared" / "data" / "sst2"
ROUNDS = 5
SHAPE = {"input_ids": [1, 128], "attention_mask": [1, 128], "token_type_ids": [1, 128]}

TORCH_LATENCY = r"""
import json, sys, time, numpy as np, torch
from transformers import AutoModelForSequenceClassification
torch.set_num_threads(2)
m = AutoModelForSequenceClassification.from_pretrained(sys.argv[1]).eval()
ids = torch.randint(1000, 2000, (1, 128)); mask = torch.ones(1, 128, dtype=torch.long)
with torch.inference_mode():
    for _ in range(20): m(input_ids=ids, attention_mask=mask)
    ts = []
    for _ in range(100):
        t = time.perf_counter(); m(input_ids=ids, attention_mask=mask); ts.append((time.perf_counter() - t) * 1000)
print(json.dumps({"p50_ms": float(np.median(ts))}))
"""


def to_csv(src: Path, dst: Path) -> Path:
    with open(src, encoding="utf-8", errors="replace") as f, open(dst, "w", newline="", encoding="utf-8") as g:
        w = csv.writer(g)
        w.writerow(["text", "label"])
        for line in f:
            label, text = line.rstrip("\n").split(" ", 1)
            w.writerow([text, label])
    return dst


def dynamic_peer(run_dir: Path, out: Path) -> Path:
    """ORT quantize_dynamic(QInt8, per-channel) of the same FP32 export, wrapped as an engine dir."""
    import shutil

    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = run_dir / "export/fp32"
    out.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(str(src / "model.onnx"), str(out / "model.onnx"), weight_type=QuantType.QInt8, per_channel=True)
    for name in ("tokenizer.json", "config.json"):
        shutil.copy2(src / name, out / name)
    ref = json.loads((run_dir / "compile/x86-avx512-int8/fp32-reference/engine.json").read_text())
    (out / "engine.json").write_text(json.dumps({**ref, "precision": "int8-dynamic", "file": "model.onnx"}))
    # engine.json says "open without optimizations": this file is not pre-optimized, so pre-optimize it.
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(out / "model.onnx")
    ort.InferenceSession(str(out / "model.onnx"), so, providers=["CPUExecutionProvider"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", default="2")
    ap.add_argument("--seed", default="0", help="passed to edgeft run (training and validation split)")
    ap.add_argument("--out", type=Path, default=None, help="default: bench/results/sst2 (seed 0), sst2-seed<N>")
    ap.add_argument("--qat-distill", default=None, help="passed to edgeft run (QAT distillation weight)")
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
             *(["--qat-distill", a.qat_distill] if a.qat_distill else [])])
    if p.returncode not in (0, 3):
        sys.exit(p.returncode)
    run_s = time.time() - t0
    report = json.loads((run_dir / "report.json").read_text())
    eng = {e["role"]: e for e in report["engines"]}
    labels = json.loads((run_dir / "finetune/data/labels.json").read_text())
    dev_rows = [json.loads(x) for x in open(run_dir / "finetune/data/test.jsonl", encoding="utf-8")]
    peer = dynamic_peer(run_dir, a.out / "peer-quantize-dynamic")
    metrics = json.loads((run_dir / "finetune/metrics.json").read_text())
    qat, calib = metrics["qat"], metrics["calibration"]["method"]
    kept = qat.get("fidelity_mse", {}).get("kept", "qat" if qat["mode"] == "qat" else "calibrated")
    mine = f"edgeft INT8 ({calib} calibration, {'QAT weights' if kept == 'qat' else 'QAT not kept' if qat['mode'] == 'qat' else 'PTQ'})"
    acc = {"PyTorch FP32 (baseline)": report["baseline"]["accuracy"], "ORT FP32": eng["fp32-reference"]["accuracy"],
           "ORT quantize_dynamic (peer)": accuracy(peer, dev_rows, labels), mine: eng["engine"]["accuracy"]}
    engines = {"PyTorch FP32 (baseline)": ("torch", run_dir / "finetune/baseline"),
               "ORT FP32": ("ort", run_dir / "compile/x86-avx512-int8/fp32-reference"),
               "ORT quantize_dynamic (peer)": ("ort", peer),
               mine: ("ort", run_dir / "compile/x86-avx512-int8/engine")}
    med = interleaved_p50({name: [sys.executable, "-c", TORCH_LATENCY, path] if kind == "torch"
                           else ort_latency_cmd(path, SHAPE) for name, (kind, path) in engines.items()}, ROUNDS)
    fp32 = med["ORT FP32"]
    cpu = report["host"]["cpu"]
    lines = [f"SST-2 (train {report_counts(run_dir)['train']} / dev {len(dev_rows)}), all-MiniLM-L6-v2, "
             f"{a.epochs} epochs + 1 QAT epoch, seed {a.seed}; {cpu}, {os.cpu_count()} cores, {platform.platform()}; "
             f"stages took {stage_minutes(run_dir):.1f} min (this invocation {run_s / 60:.1f} min; finished stages are reused)",
             "", "| engine | dev accuracy | Δ vs baseline | p50 ms (b1, s128) | × ORT FP32 |", "|---|---|---|---|---|"]
    base = acc["PyTorch FP32 (baseline)"]
    for k in engines:
        lines.append(f"| {k} | {acc[k]:.4f} | {acc[k] - base:+.4f} | {med[k]:.2f} | {med[k] / fp32:.2f} |")
    table = "\n".join(lines)
    print(table)
    (a.out / "table.md").write_text(table + "\n")
    (a.out / "results.json").write_text(json.dumps({"accuracy": acc, "median_p50_ms": med,
                                                    "engine_agreement": eng["engine"]["top1_agreement"],
                                                    "qat_fidelity_mse": qat.get("fidelity_mse")}, indent=1))


def report_counts(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())["data"]["report"]["counts"]


if __name__ == "__main__":
    main()
